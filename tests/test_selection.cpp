// Invariants of the IPS selection pass: shortcut, chunking, loading modes, padding masks, memory.
#include "helpers.h"
#include "tessera/core/memory.h"
#include "tessera/methods/ips.h"

namespace tessera {
namespace {

methods::Ips make_ips(int64_t M, int64_t I, const std::string& loading = "eager", const std::string& shuffle = "none") {
  torch::manual_seed(3);
  models::IpsNetOptions o;
  o.encoder.in_channels = 1;
  o.encoder.stages = 2;
  o.encoder.width = 8;
  o.aggregator.heads = 2;
  o.aggregator.d_k = 8;
  o.aggregator.d_inner = 32;
  o.aggregator.dropout = o.aggregator.attn_dropout = 0;
  o.tasks = {{"a", "softmax", 3}, {"b", "sigmoid", 2}};
  methods::IpsOptions io;
  io.M = M;
  io.I = I;
  io.loading = loading;
  io.shuffle = shuffle;
  io.patch = io.stride = 16;
  return methods::Ips(models::IpsNet(o), io, torch::kCPU);
}

data::Batch image_batch(int64_t B, int64_t rows, int64_t cols, uint64_t seed = 1) {
  torch::manual_seed(seed);
  data::Batch b;
  b.images = torch::rand({B, 1, rows * 16, cols * 16});
  for (int64_t i = 0; i < B; ++i) b.indices.push_back(i);
  return b;
}

TEST(Selection, KeepsEverythingWhenMAtLeastN) {
  auto ips = make_ips(8, 4);
  const auto sel = ips.select(ips.bags(image_batch(2, 2, 2)));  // N = 4 < M = 8
  EXPECT_EQ(sel.idx.sizes(), torch::IntArrayRef({2, 4}));
  EXPECT_TRUE(torch::equal(sel.idx[1], torch::arange(4)));
  EXPECT_FALSE(sel.mask.defined());
}

TEST(Selection, ChunksCoverEveryPatchOnceWhenNIsNotAMultipleOfI) {
  auto ips = make_ips(5, 7);
  const auto batch = image_batch(2, 3, 8);  // N = 24: memory 5, then chunks of 7, 7, 5
  std::vector<int64_t> sizes;
  std::set<int64_t> seen;
  torch::Tensor previous_kept;
  const auto sel = ips.select(ips.bags(batch), [&](const torch::Tensor& idx, const torch::Tensor& scores) {
    sizes.push_back(idx.size(1));
    EXPECT_EQ(scores.sizes(), idx.sizes());
    EXPECT_NEAR(scores.sum(1).mean().item<double>(), 1.0, 1e-5);  // softmax over the candidate set
    for (int64_t k = 0; k < idx.size(1); ++k) seen.insert(idx[0][k].item<int64_t>());
  });
  EXPECT_EQ(sizes, (std::vector<int64_t>{12, 12, 10}));
  EXPECT_EQ(seen.size(), 24u);
  EXPECT_EQ(sel.idx.sizes(), torch::IntArrayRef({2, 5}));
  for (int64_t b = 0; b < 2; ++b) EXPECT_EQ(std::get<0>(at::_unique(sel.idx[b])).numel(), 5);
}

TEST(Selection, SingleIterationEqualsGlobalTopMOfTheEvalModeModel) {
  auto ips = make_ips(3, 100);
  const auto batch = image_batch(2, 3, 3);  // N = 9: one candidate set holds every patch
  const auto sel = ips.select(ips.bags(batch));
  // Independent computation with the unfolded eval-mode modules.
  ips.net()->eval();
  torch::NoGradGuard no_grad;
  for (int64_t b = 0; b < 2; ++b) {
    const auto patches = ips.bags(batch)[b]->range(0, 9);
    const auto idx = torch::arange(9).unsqueeze(0);
    const auto emb = ips.net()->encode(patches).unsqueeze(0) + ips.net()->positions(idx);
    const auto top = std::get<1>(ips.net()->aggregator->scores(emb).topk(3, -1));
    EXPECT_TRUE(torch::equal(top[0], sel.idx[b])) << top << sel.idx;
  }
}

TEST(Selection, LoadingModesSelectTheSamePatches) {
  const auto batch = image_batch(3, 4, 5);
  auto eager = make_ips(4, 6, "eager");
  auto lazy = make_ips(4, 6, "lazy");
  auto sequential = make_ips(4, 6, "eager_sequential");
  const auto a = eager.select(eager.bags(batch));
  const auto b = lazy.select(lazy.bags(batch));
  const auto c = sequential.select(sequential.bags(batch));
  EXPECT_TRUE(torch::equal(a.idx, b.idx));
  EXPECT_TRUE(torch::equal(a.idx, c.idx));
  EXPECT_TRUE(torch::equal(a.patches, b.patches));
}

TEST(Selection, SelectedPatchesAreTheImagePatchesAtThoseIndices) {
  auto ips = make_ips(4, 6, "lazy");
  const auto batch = image_batch(1, 4, 5);
  const auto sel = ips.select(ips.bags(batch));
  for (int64_t k = 0; k < 4; ++k) {
    const int64_t n = sel.idx[0][k].item<int64_t>(), r = n / 5, c = n % 5;
    EXPECT_TRUE(torch::equal(sel.patches[0][k], batch.images[0].slice(1, r * 16, r * 16 + 16).slice(2, c * 16, c * 16 + 16)));
  }
}

TEST(Selection, PaddingMaskMakesShortImagesBehaveAsIfAlone) {
  auto ips = make_ips(5, 4, "eager_sequential");
  const auto small = image_batch(1, 1, 3, 7), large = image_batch(1, 2, 4, 8);  // N = 3 and 8
  std::vector<data::PatchBagPtr> bags = {ips.bags(small)[0], ips.bags(large)[0]};
  const auto sel = ips.select(bags);
  ASSERT_TRUE(sel.mask.defined());
  EXPECT_EQ(sel.mask.sizes(), torch::IntArrayRef({2, 5}));
  EXPECT_EQ(sel.mask[0].sum().item<int64_t>(), 2);  // two padded slots for the 3-patch image
  EXPECT_EQ(sel.mask[1].sum().item<int64_t>(), 0);
  ips.net()->eval();
  torch::NoGradGuard no_grad;
  const auto together = ips.forward(sel);
  const auto alone = ips.forward(ips.select({bags[0]}));
  for (const auto& [task, out] : together) {
    EXPECT_LT((out[0] - alone.at(task)[0]).abs().max().item<double>(), 1e-5) << task;
  }
  // Padded slots get exactly zero attention.
  const auto scores = ips.final_scores(sel);
  EXPECT_EQ(scores[0].slice(0, 3).abs().sum().item<double>(), 0.0);
}

TEST(Selection, EvaluationIsDeterministicEvenWithShuffling) {
  auto ips = make_ips(3, 4, "eager", "instance");
  const auto batch = image_batch(2, 3, 4);
  torch::manual_seed(1);
  const auto first = ips.predict(batch);
  torch::manual_seed(999);  // the global RNG must not matter
  const auto second = ips.predict(batch);
  for (const auto& [task, out] : first) EXPECT_TRUE(torch::equal(out, second.at(task))) << task;
}

TEST(Selection, LazyPeakTensorMemoryDoesNotGrowWithN) {
  memory::install_tracking();
  auto ips = make_ips(8, 8, "lazy");
  const auto measure = [&](int64_t rows) {
    const auto batch = image_batch(1, rows, rows);
    const auto bags = ips.bags(batch);
    ips.select(bags);  // warm-up allocations of the first call
    const int64_t before = memory::cpu_live_bytes();
    memory::reset_peaks();
    ips.select(bags);
    return memory::cpu_peak_bytes() - before;
  };
  const int64_t small = measure(8);   // N = 64
  const int64_t large = measure(32);  // N = 1024, 16x more patches
  EXPECT_GT(small, 0);
  EXPECT_LE(large, small + small / 20) << "selection peak grew from " << small << " to " << large << " bytes";
}

}  // namespace
}  // namespace tessera
