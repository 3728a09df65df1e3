// Fine-tuning an encoder under a memory budget: IPS's gradient pass in chunks gives the unchunked
// pass's gradients with one chunk's activations, and LoRA adapters start as no-ops, train alone and
// merge into plain weights that load as the base architecture.
#include <nlohmann/json.hpp>

#include "helpers.h"
#include "tessera/core/memory.h"
#include "tessera/core/precision.h"
#include "tessera/methods/ips.h"
#include "tessera/models/encoder_registry.h"
#include "tessera/models/state_dict.h"
#include "tessera/models/vit.h"

namespace tessera {
namespace {

// A ViT small enough for the CPU: 16 px patches of one channel, 4 x 4 tokens.
std::string tiny_vit_args(int64_t depth = 2, const nlohmann::json& extra = nlohmann::json::object()) {
  nlohmann::json a = {{"img_size", 16}, {"patch_size", 4}, {"embed_dim", 32}, {"depth", depth}, {"num_heads", 2},
                      {"in_chans", 1}, {"global_pool", "avg"}};
  if (!extra.is_null()) a.update(extra);
  return a.dump();
}

methods::Ips make_ips(const std::string& arch, const std::string& args, int64_t M, int64_t chunk, bool freeze_bn = true,
                      bool head = false) {
  torch::manual_seed(3);
  models::IpsNetOptions o;
  o.encoder.arch = arch;
  o.encoder.args = args;
  o.encoder.in_channels = 1;
  o.encoder.stages = 2;
  o.encoder.width = 8;
  o.freeze_bn = freeze_bn;
  o.projection_head = head;
  o.projector.dim = 24;
  o.aggregator.heads = 2;
  o.aggregator.d_k = 8;
  o.aggregator.d_inner = 32;
  o.aggregator.dropout = o.aggregator.attn_dropout = 0;
  o.tasks = {{"a", "softmax", 3}};
  methods::IpsOptions io;
  io.M = M;
  io.I = 4;
  io.grad_chunk = chunk;
  io.patch = io.stride = 16;
  return methods::Ips(models::IpsNet(o), io, torch::kCPU);
}

// Images of rows x cols patches each (different sizes: padded selections), as bags.
data::Batch bag_batch(const methods::Ips& ips, const std::vector<std::pair<int64_t, int64_t>>& grids) {
  data::Batch b;
  std::vector<int64_t> labels;
  for (size_t i = 0; i < grids.size(); ++i) {
    torch::manual_seed(100 + static_cast<int64_t>(i));
    data::Batch one;
    one.images = torch::rand({1, 1, grids[i].first * 16, grids[i].second * 16});
    b.bags.push_back(ips.bags(one)[0]);
    b.indices.push_back(static_cast<int64_t>(i));
    labels.push_back(static_cast<int64_t>(i % 3));
  }
  b.labels["a"] = torch::tensor(labels);
  return b;
}

// Parameter gradients of one training step (the optimiser's LR is zero: weights stay as they are).
std::vector<torch::Tensor> step_grads(methods::Ips& ips, const data::Batch& batch, Precision precision = Precision::fp32) {
  ips.set_precision(precision);
  torch::optim::SGD sgd(ips.module().parameters(), torch::optim::SGDOptions(0.0));
  ips.train_step(batch, sgd);
  std::vector<torch::Tensor> grads;
  for (const auto& p : ips.module().parameters()) {
    grads.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
  }
  return grads;
}

void expect_same_gradients(const std::vector<torch::Tensor>& want, const std::vector<torch::Tensor>& got, double tol,
                           const std::string& what) {
  ASSERT_EQ(want.size(), got.size());
  int compared = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_EQ(want[i].defined(), got[i].defined()) << what << " parameter " << i;
    if (!want[i].defined()) continue;
    const double scale = std::max(1.0, want[i].abs().max().item<double>());
    EXPECT_LE((want[i] - got[i]).abs().max().item<double>(), tol * scale) << what << " parameter " << i;
    compared += want[i].abs().max().item<double>() > 0 ? 1 : 0;
  }
  EXPECT_GT(compared, 10) << what << ": too few non-zero gradients compared";
}

struct ChunkCase {
  std::string name, arch, args;
  bool head = false;  // a projection head, whose BatchNorm sees all winners in both passes
};

class ChunkedGradientPass : public ::testing::TestWithParam<ChunkCase> {};

// M = 7 winners per image in chunks of 3 (not a multiple), two images of 12 patches.
TEST_P(ChunkedGradientPass, EqualsTheUnchunkedPass) {
  const auto& c = GetParam();
  auto whole = make_ips(c.arch, c.args, 7, 0, true, c.head), chunked = make_ips(c.arch, c.args, 7, 3, true, c.head);
  const auto batch = bag_batch(whole, {{3, 4}, {4, 3}});
  expect_same_gradients(step_grads(whole, batch), step_grads(chunked, batch), 1e-5, c.name);
}

// One image of 4 patches beside one of 12 with M = 7: the short one's winners are padded.
TEST_P(ChunkedGradientPass, EqualsTheUnchunkedPassWithAPaddingMask) {
  const auto& c = GetParam();
  auto whole = make_ips(c.arch, c.args, 7, 0, true, c.head), chunked = make_ips(c.arch, c.args, 7, 2, true, c.head);
  const auto batch = bag_batch(whole, {{2, 2}, {3, 4}});
  ASSERT_TRUE(whole.select(batch.bags).mask.defined()) << "the batch must need padding";
  expect_same_gradients(step_grads(whole, batch), step_grads(chunked, batch), 1e-5, c.name + " padded");
}

// bf16 autocast: the chunked pass against the unchunked one in the same precision, to the bf16
// tolerance of test_precision.cpp (every gradient's cosine > 0.98).
TEST_P(ChunkedGradientPass, MatchesTheUnchunkedPassInBf16) {
  const auto& c = GetParam();
  auto whole = make_ips(c.arch, c.args, 7, 0, true, c.head), chunked = make_ips(c.arch, c.args, 7, 3, true, c.head);
  const auto batch = bag_batch(whole, {{3, 4}, {4, 3}});
  const auto want = step_grads(whole, batch, Precision::bf16), got = step_grads(chunked, batch, Precision::bf16);
  ASSERT_EQ(want.size(), got.size());
  int compared = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!want[i].defined() || want[i].abs().max().item<double>() < 1e-6) continue;
    EXPECT_EQ(got[i].scalar_type(), torch::kFloat);
    const double cos = torch::cosine_similarity(want[i].flatten(), got[i].flatten(), 0).item<double>();
    EXPECT_GT(cos, 0.98) << c.name << " parameter " << i;
    ++compared;
  }
  EXPECT_GT(compared, 10);
}

INSTANTIATE_TEST_SUITE_P(
    Encoders, ChunkedGradientPass,
    ::testing::Values(ChunkCase{"vit", "vit_small_patch16_224", tiny_vit_args()},
                      ChunkCase{"vit_lora", "vit_small_patch16_224",
                                tiny_vit_args(2, {{"lora_rank", 4}, {"lora_targets", "qkv,proj,mlp"}})},
                      ChunkCase{"vit_projection_head", "vit_small_patch16_224", tiny_vit_args(), true},
                      ChunkCase{"resnet_frozen_bn", "resnet18", ""}),
    [](const auto& info) { return info.param.name; });

// With trained BatchNorm, each chunk normalises with its own statistics, and the running statistics
// move once per chunk of the gradient pass: the no-gradient encoding before it leaves them alone.
TEST(ChunkedBatchNorm, RunningStatisticsMoveOncePerChunk) {
  auto chunked = make_ips("resnet18", "", 6, 4, /*freeze_bn=*/false);
  const auto batch = bag_batch(chunked, {{3, 4}});  // 6 winners: chunks of 4 and 2
  step_grads(chunked, batch);
  int checked = 0;
  for (const auto& b : chunked.module().named_buffers()) {
    if (b.key().find("num_batches_tracked") == std::string::npos) continue;
    EXPECT_EQ(b.value().item<int64_t>(), 2) << b.key();
    ++checked;
  }
  EXPECT_GT(checked, 3);
}

// Peak tensor bytes of a training step: flat in M with chunks of 8, growing with M without chunks.
TEST(ChunkedMemory, PeakIsFlatInMWithChunks) {
  memory::install_tracking();
  const auto peak = [](int64_t M, int64_t chunk) {
    auto ips = make_ips("vit_small_patch16_224", tiny_vit_args(4), M, chunk);
    const auto batch = bag_batch(ips, {{9, 9}});  // N = 81 patches
    torch::optim::SGD sgd(ips.module().parameters(), torch::optim::SGDOptions(0.0));
    ips.train_step(batch, sgd);  // warm-up: gradients and lazily created state exist from here on
    const int64_t before = memory::cpu_live_bytes();
    memory::reset_peaks();
    ips.train_step(batch, sgd);
    return memory::cpu_peak_bytes() - before;
  };
  const int64_t c16 = peak(16, 8), c32 = peak(32, 8), c64 = peak(64, 8);
  EXPECT_LE(std::max({c16, c32, c64}), std::min({c16, c32, c64}) * 11 / 10)
      << "chunked peaks " << c16 << " / " << c32 << " / " << c64 << " bytes at M 16 / 32 / 64";
  const int64_t u16 = peak(16, 0), u64 = peak(64, 0);
  EXPECT_GT(u64, u16 * 2) << "unchunked peaks " << u16 << " -> " << u64;
  EXPECT_GT(u64, c64 * 2) << "chunks must save memory at M 64";
}

models::VisionTransformer tiny_vit(const nlohmann::json& extra) {
  const auto spec = models::resolve_encoder("vit_small_patch16_224", tiny_vit_args(2, extra));
  models::BackboneOptions common;
  common.in_channels = 1;
  auto backbone = models::make_encoder(spec, common);
  return models::VisionTransformer(std::dynamic_pointer_cast<models::VisionTransformerImpl>(backbone));
}

TEST(Lora, AnAdapterStartsAsTheBaseModel) {
  torch::manual_seed(5);
  auto adapted = tiny_vit({{"lora_rank", 4}, {"lora_targets", "qkv,proj,mlp"}});
  auto base = tiny_vit({});
  models::StateDict dict;
  for (const auto& [name, value] : adapted->merged_state()) dict[name] = value;
  models::load_state_dict(*base, dict, /*strict=*/true);
  const auto x = torch::randn({3, 1, 16, 16});
  EXPECT_TRUE(torch::equal(adapted->forward(x), base->forward(x)));
  int adapters = 0;
  for (const auto& p : adapted->named_parameters()) adapters += p.key().find("_lora.lora_") != std::string::npos;
  EXPECT_EQ(adapters, 2 * 2 * 4) << "qkv, proj, fc1, fc2 in each of 2 blocks, A and B each";
}

TEST(Lora, OnlyAdaptersReceiveGradients) {
  auto adapted = tiny_vit({{"lora_rank", 2}});
  adapted->forward(torch::randn({2, 1, 16, 16})).pow(2).sum().backward();
  int trained = 0;
  for (const auto& p : adapted->named_parameters()) {
    const bool adapter = p.key().find("_lora.") != std::string::npos;
    EXPECT_EQ(p.value().grad().defined(), adapter) << p.key();
    EXPECT_EQ(p.value().requires_grad(), adapter) << p.key();
    trained += adapter;
  }
  EXPECT_EQ(trained, 2 * 2 * 2);  // qkv and proj (the default targets) of 2 blocks
  // B starts at zero, so the first gradient reaches B (A's is zero through B).
  const auto b = adapted->named_parameters()["blocks.1.attn.qkv_lora.lora_B"];  // a copy: the dict is a temporary
  EXPECT_GT(b.grad().abs().max().item<double>(), 0.0);
}

TEST(Lora, TheMergedExportGivesTheAdaptedOutputs) {
  testing::TempDir dir;
  const nlohmann::json lora = {{"lora_rank", 4}, {"lora_alpha", 8.0}, {"lora_targets", "qkv,proj,mlp"}};
  auto adapted = tiny_vit(lora);
  {
    torch::NoGradGuard no_grad;  // a trained adapter: B no longer zero
    for (auto& p : adapted->named_parameters()) {
      if (p.key().find("lora_B") != std::string::npos) p.value().normal_(0, 0.05);
    }
  }
  const auto spec = models::resolve_encoder("vit_small_patch16_224", tiny_vit_args(2, lora));
  models::export_encoder_folder(spec, *adapted, dir.file("exported"));
  const auto config = nlohmann::json::parse(testing::read_text(dir.file("exported/config.json")));
  EXPECT_FALSE(config["model_args"].contains("lora_rank")) << "timm does not know tessera's LoRA arguments";
  const auto reloaded_spec = models::resolve_encoder(dir.file("exported"));
  models::BackboneOptions common;
  common.in_channels = 1;
  auto reloaded = models::make_encoder(reloaded_spec, common);
  models::load_encoder_weights(*reloaded, dir.file("exported/model.safetensors"), /*strict=*/true);
  int adapters = 0;
  for (const auto& p : reloaded->named_parameters()) adapters += p.key().find("_lora") != std::string::npos;
  EXPECT_EQ(adapters, 0);
  adapted->eval();
  reloaded->eval();
  const auto x = torch::randn({4, 1, 16, 16});
  const auto want = adapted->forward(x), got = reloaded->forward(x);
  EXPECT_LE((want - got).abs().max().item<double>(), 1e-5);
  EXPECT_GT((want - tiny_vit({})->forward(x)).abs().max().item<double>(), 1e-3) << "the adapters must matter";
}

TEST(Lora, FineTuningKeysAreCheckedAgainstTheEncoder) {
  ModelConfig m;
  m.encoder = "resnet18";
  m.lora_rank = 8;
  EXPECT_NE(testing::error_of([&] { models::model_encoder_args(m); }).find("model.lora_rank applies to ViT encoders"),
            std::string::npos);
  m.encoder = "vit_small_patch16_224";
  const auto args = nlohmann::json::parse(models::model_encoder_args(m));
  EXPECT_EQ(args.at("lora_rank"), 8);
  EXPECT_EQ(args.at("lora_targets"), "qkv,proj");
  const auto bad = testing::error_of([] { tiny_vit({{"lora_rank", 2}, {"lora_targets", "qkv,ffn"}}); });
  EXPECT_NE(bad.find("LoRA target 'ffn'"), std::string::npos) << bad;
  const auto both = testing::error_of([] { tiny_vit({{"lora_rank", 2}, {"trainable_blocks", 1}}); });
  EXPECT_NE(both.find("drop trainable_blocks"), std::string::npos) << both;
}

}  // namespace
}  // namespace tessera
