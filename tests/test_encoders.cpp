// Encoders: timm parity of the ViT on the reference fixtures (features and gradients, loaded from the
// folder as a user would), safetensors reading and its bad files, weight-file wrappers, export-encoder
// round trips, and runs with a model-folder encoder that reopen without the folder.
#include <nlohmann/json.hpp>

#include <fstream>

#include "helpers.h"
#include "tessera/app/embed.h"
#include "tessera/core/npy.h"
#include "tessera/core/precision.h"
#include "tessera/data/image_io.h"
#include "tessera/models/encoder_registry.h"
#include "tessera/models/onednn_linear.h"
#include "tessera/models/safetensors.h"
#include "tessera/models/vit.h"
#include "tessera/train/experiment.h"
#include "tessera/train/trainer.h"

namespace tessera {
namespace {
namespace fs = std::filesystem;
using testing::error_of;
using testing::read_text;
using testing::run_cli;

std::string vit_fixture(const std::string& name) { return testing::fixture("vit_reference/" + name); }

std::vector<std::string> fixture_images(const std::string& folder) {
  const auto meta = nlohmann::json::parse(read_text(folder + "/fixture.json"));
  std::vector<std::string> out;
  for (const auto& n : meta["images"]) out.push_back(folder + "/" + n.get<std::string>());
  return out;
}

// max |a - b| / max |b|: the issue's relative tolerance.
double relative_error(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>() / b.abs().max().item<double>();
}

class TimmParity : public ::testing::TestWithParam<std::string> {};

TEST_P(TimmParity, EmbedFromTheFolderGivesTimmsFeatures) {
  const auto folder = vit_fixture(GetParam());
  testing::TempDir dir;
  app::EmbedOptions o;
  o.encoder = folder;
  o.images = fixture_images(folder);
  o.out = dir.file("features.npy");
  o.batch = 1;
  o.no_resize = true;  // timm encoded every image at its own size (the dynamic-size ones are not at input_size)
  const auto result = app::embed(o);
  const auto got = read_npy(o.out);
  const auto want = read_npy(folder + "/expected_features.npy");
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_EQ(result.images, want.size(0));
  EXPECT_LT(relative_error(got, want), 1e-4) << got << want;
  // Images at the input size are not resampled: the default (resizing) path gives the same rows.
  if (GetParam() == "hoptimus_like") {
    o.no_resize = false;
    app::embed(o);
    EXPECT_TRUE(torch::equal(read_npy(o.out), got));
  }
}

class TimmGradients : public ::testing::TestWithParam<std::string> {};

TEST_P(TimmGradients, GradientsOfTheProbedFeaturesMatchTimm) {
  const auto folder = vit_fixture(GetParam());
  const auto spec = models::resolve_encoder(folder);
  auto net = app::load_encoder(spec, "");
  const auto grads = read_npz(folder + "/grads.npz");
  const auto image = data::conform_image(data::read_image(fixture_images(folder)[0]), 3, 0, 0, "img0");
  const auto x = app::preprocess_for_encoder(image, spec.preprocessing, false).unsqueeze(0);
  net->zero_grad();
  (net->forward(x)[0] * grads.at("probe")).sum().backward();
  std::map<std::string, torch::Tensor> params;
  for (const auto& p : net->named_parameters()) params[p.key()] = p.value();
  int checked = 0;
  for (const auto& [name, want] : grads) {
    if (name == "probe") continue;
    ASSERT_TRUE(params.count(name)) << name;
    ASSERT_TRUE(params[name].grad().defined()) << name;
    EXPECT_LT(relative_error(params[name].grad(), want), 1e-3) << name;
    ++checked;
  }
  EXPECT_GE(checked, 5);
}

class TimmParityCli : public ::testing::TestWithParam<std::string> {};

TEST_P(TimmParityCli, TheCommandLineWritesTheSameFeatures) {
  const auto folder = vit_fixture(GetParam());
  testing::TempDir dir;
  std::string images;
  for (const auto& p : fixture_images(folder)) images += " " + p;
  const auto log = dir.file("log.txt");
  ASSERT_EQ(run_cli("embed --threads 1 --encoder " + folder + " --images" + images + " --out " + dir.file("f.npy") +
                        (GetParam() == "uni_like" ? " --no-resize --batch 1" : ""),
                    log),
            0)
      << read_text(log);
  EXPECT_LT(relative_error(read_npy(dir.file("f.npy")), read_npy(folder + "/expected_features.npy")), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TimmParity,
                         ::testing::Values("uni_like", "hoptimus_like", "uni2h_like", "virchow2_like", "gigapath_like",
                                           "avg_swiglu_like"));
// The fixtures with reference gradients (grads.npz), and the CLI once per weight format.
INSTANTIATE_TEST_SUITE_P(Fixtures, TimmGradients,
                         ::testing::Values("uni_like", "hoptimus_like", "uni2h_like", "gigapath_like"));
INSTANTIATE_TEST_SUITE_P(Fixtures, TimmParityCli, ::testing::Values("uni_like", "hoptimus_like"));

TEST(TimmParity, RecomputedBlocksAndBf16KeepTheFeaturesAndGradients) {
  const auto folder = vit_fixture("hoptimus_like");
  auto spec = models::resolve_encoder(folder);
  auto plain = app::load_encoder(spec, "");
  spec.args["grad_checkpointing"] = true;
  auto recomputed = app::load_encoder(spec, "");
  const auto x = torch::randn({2, 3, 56, 56});
  for (auto* net : {&plain, &recomputed}) {
    (*net)->train();
    (*net)->zero_grad();
    (*net)->forward(x).square().sum().backward();
  }
  auto a = plain->named_parameters(), b = recomputed->named_parameters();
  for (const auto& p : a) EXPECT_LT(relative_error(b[p.key()].grad(), p.value().grad()), 1e-5) << p.key();
  // bf16 autocast stays within bf16's precision of the fp32 features.
  plain->eval();
  c10::InferenceMode inference;
  const auto fp32 = plain->forward(x);
  AutocastGuard bf16(Precision::bf16);
  EXPECT_LT(relative_error(plain->forward(x).to(torch::kFloat), fp32), 5e-2);
}

TEST(Encoders, LastBlocksOnlyTrainWhenAsked) {
  auto spec = models::resolve_encoder("vit_small_patch16_224", R"({"depth": 3, "embed_dim": 16, "num_heads": 2,
                                                                   "img_size": 16, "trainable_blocks": 1})");
  auto net = models::make_encoder(spec, {});
  for (const auto& p : net->named_parameters()) {
    const bool trains = p.key().rfind("blocks.2.", 0) == 0 || p.key().rfind("norm.", 0) == 0;
    EXPECT_EQ(p.value().requires_grad(), trains) << p.key();
  }
}

TEST(Encoders, NamedModelsHaveTheirPublishedShapes) {
  struct Want {
    std::string name;
    int64_t dim, patch, prefix;
  };
  // Built on the meta device would need LibTorch 2; the options alone carry the shapes.
  for (const auto& w : std::vector<Want>{{"uni", 1024, 16, 1}, {"uni2-h", 1536, 14, 9}, {"virchow2", 2560, 14, 5},
                                         {"h-optimus-0", 1536, 14, 5}, {"h-optimus-1", 1536, 14, 5},
                                         {"prov-gigapath", 1536, 16, 1}}) {
    const auto spec = models::resolve_encoder(w.name, R"({"depth": 1})");  // one block keeps the test small
    auto net = models::make_encoder(spec, {});
    auto* vit = dynamic_cast<models::VisionTransformerImpl*>(net.get());
    ASSERT_TRUE(vit) << w.name;
    EXPECT_EQ(net->out_features(), w.dim) << w.name;
    EXPECT_EQ(vit->options().patch_size, w.patch) << w.name;
    EXPECT_EQ(vit->options().num_prefix_tokens(), w.prefix) << w.name;
    EXPECT_EQ(spec.preprocessing.height, 224) << w.name;
    torch::NoGradGuard no_grad;
    net->eval();
    EXPECT_EQ(net->forward(torch::zeros({1, 3, 224, 224})).sizes(), torch::IntArrayRef({1, w.dim})) << w.name;
  }
  // UNI2-h's SwiGLU: fc1 1536 -> 8192, fc2 4096 -> 1536, as in its published state dict.
  auto uni2 = models::make_encoder(models::resolve_encoder("uni2-h", R"({"depth": 1})"), {});
  auto params = uni2->named_parameters();
  EXPECT_EQ(params["blocks.0.mlp.fc1.weight"].sizes(), torch::IntArrayRef({8192, 1536}));
  EXPECT_EQ(params["blocks.0.mlp.fc2.weight"].sizes(), torch::IntArrayRef({1536, 4096}));
  EXPECT_EQ(params["reg_token"].sizes(), torch::IntArrayRef({1, 8, 1536}));
  EXPECT_EQ(params["pos_embed"].sizes(), torch::IntArrayRef({1, 256, 1536}));  // no_embed_class
}

TEST(Encoders, UnknownNamesArgumentsAndSizesGiveOneClearError) {
  EXPECT_NE(error_of([] { models::resolve_encoder("vit_tiny_nonsense"); }).find("neither a registered encoder"), std::string::npos);
  EXPECT_NE(error_of([] { models::resolve_encoder("uni", R"({"dept": 2})"); }).find("no argument 'dept'"), std::string::npos);
  EXPECT_NE(error_of([] { models::resolve_encoder("uni", "{depth: 2"); }).find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of([] { models::resolve_encoder("uni", R"({"embed_dim": 30})"); }).find("divisible"), std::string::npos);
  EXPECT_NE(error_of([] { models::resolve_encoder("resnet18", R"({"depth": 2})"); }).find("takes no encoder arguments"),
            std::string::npos);
  auto net = models::make_encoder(models::resolve_encoder("vit_small_patch16_224", R"({"depth": 1, "img_size": 32})"), {});
  EXPECT_NE(error_of([&] { net->forward(torch::zeros({1, 3, 48, 48})); }).find("dynamic_img_size"), std::string::npos);
  auto dyn = models::make_encoder(
      models::resolve_encoder("vit_small_patch16_224", R"({"depth": 1, "img_size": 32, "dynamic_img_size": true})"), {});
  EXPECT_NE(error_of([&] { dyn->forward(torch::zeros({1, 3, 40, 48})); }).find("multiples of its patch size"),
            std::string::npos);
}

TEST(Safetensors, EveryDtypeRoundTrips) {
  testing::TempDir dir;
  models::StateDict in{{"a.f32", torch::randn({3, 4})},
                       {"b.f16", torch::randn({5}).to(torch::kHalf)},
                       {"c.bf16", torch::randn({2, 2, 2}).to(torch::kBFloat16)},
                       {"d.i64", torch::arange(7)},
                       {"e.u8", torch::randint(0, 255, {4}, torch::kUInt8)},
                       {"f.empty", torch::zeros({0, 3})}};
  models::write_safetensors(dir.file("t.safetensors"), in);
  const auto out = models::read_safetensors(dir.file("t.safetensors"));
  ASSERT_EQ(out.size(), in.size());
  for (const auto& [k, v] : in) {
    EXPECT_EQ(out.at(k).scalar_type(), v.scalar_type()) << k;
    EXPECT_TRUE(torch::equal(out.at(k), v)) << k;
  }
}

// A safetensors file from a header and a data size, for the bad-file cases.
void write_raw(const std::string& path, const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
  std::ofstream f(path, std::ios::binary);
  const uint64_t n = claimed_len < 0 ? header.size() : static_cast<uint64_t>(claimed_len);
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>((n >> (8 * i)) & 0xff));
  f << header << std::string(data_bytes, '\0');
}

TEST(Safetensors, BadFilesGiveOneClearErrorNamingTheFile) {
  testing::TempDir dir;
  struct Case {
    std::string name, header;
    size_t data;
    int64_t claimed;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {"truncated", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8, -1, "outside"},
      {"overlap", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       12, -1, "overlap"},
      {"out_of_range", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[100,104]}})", 16, -1, "outside"},
      {"wrong_size", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 16, -1, "needs 12"},
      {"absurd_shape", R"({"w":{"dtype":"F32","shape":[4000000000,4000000000,4000000000],"data_offsets":[0,8]}})", 8, -1,
       "larger than the file"},
      {"negative_shape", R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8, -1, "non-negative"},
      {"bad_dtype", R"({"w":{"dtype":"Q7","shape":[2],"data_offsets":[0,8]}})", 8, -1, "dtype"},
      {"not_json", "{this is not json", 8, -1, "not JSON"},
      {"huge_header", "{}", 8, 1LL << 40, "header claims"},
      {"header_past_end", "{}", 0, 4096, "header claims"},
  };
  for (const auto& c : cases) {
    const auto path = dir.file(c.name + ".safetensors");
    write_raw(path, c.header, c.data, c.claimed);
    const auto message = error_of([&] { models::read_safetensors(path); });
    EXPECT_NE(message.find(c.expect), std::string::npos) << c.name << ": " << message;
    EXPECT_NE(message.find(path), std::string::npos) << c.name << ": " << message;
  }
  std::ofstream(dir.file("short.safetensors")) << "abc";
  EXPECT_NE(error_of([&] { models::read_safetensors(dir.file("short.safetensors")); }).find("fewer than"), std::string::npos);
}

TEST(Encoders, TorchSaveWrappersAndPrefixesAreUnwrappedAndLoadingIsStrict) {
  testing::TempDir dir;
  const auto spec = models::resolve_encoder("vit_small_patch16_224", R"({"depth": 1, "embed_dim": 16, "num_heads": 2, "img_size": 16})");
  auto net = models::make_encoder(spec, {});
  c10::impl::GenericDict inner(c10::StringType::get(), c10::AnyType::get());
  for (const auto& p : net->named_parameters()) inner.insert("module.backbone." + p.key(), p.value().detach().clone() + 1);
  c10::impl::GenericDict outer(c10::StringType::get(), c10::AnyType::get());
  outer.insert("teacher", inner);
  outer.insert("epoch", 3);
  const auto bytes = torch::pickle_save(outer);
  std::ofstream(dir.file("ckpt.pth"), std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  auto fresh = models::make_encoder(spec, {});
  EXPECT_EQ(models::load_encoder_weights(*fresh, dir.file("ckpt.pth"), true), static_cast<int64_t>(net->parameters().size()));
  auto loaded = fresh->named_parameters();
  for (const auto& p : net->named_parameters()) EXPECT_TRUE(torch::equal(loaded[p.key()], p.value() + 1)) << p.key();

  // Strict: a missing tensor and a mis-shaped one are errors naming them.
  models::StateDict partial;
  for (const auto& p : net->named_parameters()) partial[p.key()] = p.value().detach();
  partial.erase("blocks.0.attn.qkv.weight");
  models::write_safetensors(dir.file("missing.safetensors"), partial);
  EXPECT_NE(error_of([&] { models::load_encoder_weights(*fresh, dir.file("missing.safetensors"), true); })
                .find("blocks.0.attn.qkv.weight"),
            std::string::npos);
  partial["blocks.0.attn.qkv.weight"] = torch::zeros({3, 3});
  models::write_safetensors(dir.file("misshaped.safetensors"), partial);
  EXPECT_NE(error_of([&] { models::load_encoder_weights(*fresh, dir.file("misshaped.safetensors"), true); })
                .find("blocks.0.attn.qkv.weight"),
            std::string::npos);
}

TEST(Encoders, ExportedFoldersEmbedIdentically) {
  testing::TempDir dir;
  for (const std::string name : {"uni_like", "hoptimus_like"}) {
    const auto folder = vit_fixture(name);
    const auto out = dir.file("exported_" + name);
    app::ExportEncoderOptions e;
    e.encoder = folder;
    e.out = out;
    app::export_encoder(e);
    const auto config = nlohmann::json::parse(read_text(out + "/config.json"));
    const auto original = nlohmann::json::parse(read_text(folder + "/config.json"));
    EXPECT_EQ(config["architecture"], original["architecture"]);
    for (const auto& [key, value] : original["model_args"].items()) EXPECT_EQ(config["model_args"][key], value) << key;
    EXPECT_EQ(config["pretrained_cfg"]["input_size"], original["pretrained_cfg"]["input_size"]);
    app::EmbedOptions a;
    a.encoder = folder;
    a.images = fixture_images(folder);
    a.out = dir.file(name + "_a.npy");
    a.no_resize = true;
    a.batch = 1;
    app::embed(a);
    auto b = a;
    b.encoder = out;
    b.out = dir.file(name + "_b.npy");
    app::embed(b);
    EXPECT_TRUE(torch::equal(read_npy(a.out), read_npy(b.out))) << name;
  }
}

TEST(Encoders, IpsWithAFolderEncoderReopensWithoutTheFolder) {
  testing::TempDir dir;
  // A model folder as a hub would hold it: a small ViT exported by tessera.
  app::ExportEncoderOptions e;
  e.encoder = "vit_small_patch16_224";
  e.encoder_args = R"({"img_size": 28, "patch_size": 7, "embed_dim": 16, "depth": 1, "num_heads": 2, "in_chans": 1,
                        "grad_checkpointing": true})";
  e.out = dir.file("folder");
  app::export_encoder(e);
  // timm's model_args: no tessera-only option, and no classifier (timm's architectures default to 1000 classes).
  const auto folder_config = nlohmann::json::parse(read_text(dir.file("folder/config.json")));
  EXPECT_FALSE(folder_config["model_args"].contains("grad_checkpointing"));
  EXPECT_EQ(folder_config["model_args"]["num_classes"], 0);
  const auto mnist = testing::fake_mnist_dir(dir);
  auto c = testing::tiny_config(mnist, dir.file("run"));
  c.model.encoder = dir.file("folder");
  c.train.epochs = 1;
  c.data.workers = 0;
  train::apply_runtime(c);
  auto [train_set, test_set] = train::make_datasets(c);
  auto method = train::make_method(c, train_set->tasks());
  // The folder's weights were loaded before training.
  const auto folder_weights = models::read_safetensors(dir.file("folder/model.safetensors"));
  auto params = method->encoder().named_parameters();
  EXPECT_TRUE(torch::equal(params["blocks.0.attn.qkv.weight"], folder_weights.at("blocks.0.attn.qkv.weight")));
  train::Trainer(c, *method, train_set, test_set).fit(false);
  const auto batch = data::collate({test_set->get(0)}, {0});
  const auto expected = method->predict(batch);
  fs::remove_all(dir.file("folder"));
  auto run = train::open_run(dir.file("run"));
  const auto got = run.method->predict(batch);
  for (const auto& [task, t] : expected) EXPECT_TRUE(torch::allclose(got.at(task), t, 1e-5, 1e-6)) << task;
  // The encoder's trained weights leave tessera as a timm folder.
  app::ExportEncoderOptions from_run;
  from_run.run = dir.file("run");
  from_run.out = dir.file("trained");
  app::export_encoder(from_run);
  const auto exported = models::read_safetensors(dir.file("trained/model.safetensors"));
  auto trained = run.method->encoder().named_parameters();
  EXPECT_TRUE(torch::equal(exported.at("blocks.0.attn.qkv.weight"), trained["blocks.0.attn.qkv.weight"]));
  const auto exported_config = nlohmann::json::parse(read_text(dir.file("trained/config.json")));
  EXPECT_EQ(exported_config["model_args"]["in_chans"], 1);
  EXPECT_EQ(exported_config["model_args"]["num_classes"], 0);
}

TEST(OneDnnLinear, EqualsTorchLinearAndItsGradients) {
  torch::manual_seed(5);
  const auto x = torch::randn({3, 7, 48}, torch::requires_grad());
  const auto w = torch::randn({40, 48}, torch::requires_grad());
  const auto b = torch::randn({40}, torch::requires_grad());
  ASSERT_TRUE(models::onednn_linear_applies(x, w));  // this machine's LibTorch has oneDNN: the fast path is the one tested
  const auto probe = torch::randn({3, 7, 40});
  const auto fast = models::fast_linear(x, w, b);
  const auto grads_fast = torch::autograd::grad({(fast * probe).sum()}, {x, w, b});
  const auto ref = torch::linear(x, w, b);
  const auto grads_ref = torch::autograd::grad({(ref * probe).sum()}, {x, w, b});
  EXPECT_EQ(fast.sizes(), ref.sizes());
  EXPECT_LT(relative_error(fast, ref), 1e-6);
  for (int i = 0; i < 3; ++i) EXPECT_LT(relative_error(grads_fast[i], grads_ref[i]), 1e-6) << i;
  // Without gradients, and under bf16 autocast (torch::linear's path), the same function.
  {
    c10::InferenceMode inference;
    EXPECT_LT(relative_error(models::fast_linear(x, w, {}), torch::linear(x, w, {})), 1e-6);
  }
  AutocastGuard bf16(Precision::bf16);
  EXPECT_FALSE(models::onednn_linear_applies(x, w));
}

TEST(Npy, RoundTripsAndRejectsDamagedFiles) {
  testing::TempDir dir;
  const auto t = torch::randn({3, 5});
  write_npy(dir.file("a.npy"), t);
  EXPECT_TRUE(torch::equal(read_npy(dir.file("a.npy")), t));
  auto bytes = read_text(dir.file("a.npy"));
  std::ofstream(dir.file("cut.npy"), std::ios::binary) << bytes.substr(0, bytes.size() - 4);
  EXPECT_NE(error_of([&] { read_npy(dir.file("cut.npy")); }).find("data bytes"), std::string::npos);
  // A shape whose element count overflows 64 bits (2^40 x 2^24) over no data: refused dimension by
  // dimension, before the product wraps to 0 and matches the empty data.
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 16777216), }";
  header += std::string(63 - (header.size() + 10) % 64, ' ') + "\n";
  std::ofstream(dir.file("wrap.npy"), std::ios::binary)
      << std::string("\x93NUMPY\x01\x00", 8) << char(header.size()) << char(0) << header;
  EXPECT_NE(error_of([&] { read_npy(dir.file("wrap.npy")); }).find("needs more than the file's 0 data bytes"),
            std::string::npos) << error_of([&] { read_npy(dir.file("wrap.npy")); });
}

}  // namespace
}  // namespace tessera
