// Precise BatchNorm: the running statistics become the plain average of the batch statistics the
// method's training-mode passes produce (whole images for GD, chunks of k patches for PatchGD), frozen
// layers keep theirs, and nothing else about the layers changes.
#include <torch/torch.h>

#include "helpers.h"
#include "tessera/data/patches.h"
#include "tessera/methods/full_image.h"
#include "tessera/methods/patchgd.h"
#include "tessera/train/precise_bn.h"

namespace tessera {
namespace {

constexpr int64_t kSide = 64, kPatch = 32;
const std::vector<Task> kTasks{{"label", "softmax", 3}};

// Random images in memory, the same for an index every time.
class RandomImages final : public data::Dataset {
 public:
  explicit RandomImages(int64_t n) : n_(n) {}
  int64_t size() const override { return n_; }
  data::Sample get(int64_t index) const override {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(index) + 1);
    data::Sample s;
    s.image = torch::rand({1, kSide, kSide}, gen) * (1 + index % 3);  // images differ in scale
    s.labels["label"] = torch::tensor(index % 3);
    return s;
  }
  std::vector<Task> tasks() const override { return kTasks; }

 private:
  int64_t n_;
};

Config small_config(const std::string& method) {
  Config c = testing::small_patch_config(method, kSide, kPatch, 16);
  c.patchgd.q = 0.5;  // k = 2 of the 2x2 grid's 4 patches
  return c;
}

torch::nn::BatchNorm2dImpl& stem_bn(torch::nn::Module& net) {
  return *net.named_modules()["backbone.bn1"]->as<torch::nn::BatchNorm2dImpl>();
}

torch::nn::Conv2dImpl& stem_conv(torch::nn::Module& net) {
  return *net.named_modules()["backbone.conv1"]->as<torch::nn::Conv2dImpl>();
}

// The stem BatchNorm's statistics over each of `inputs` (what its layer sees in one training pass), averaged.
std::pair<torch::Tensor, torch::Tensor> averaged_stem_statistics(torch::nn::Module& net,
                                                                 const std::vector<torch::Tensor>& inputs) {
  torch::NoGradGuard no_grad;
  auto mean = torch::zeros({8}), var = torch::zeros({8});
  for (const auto& x : inputs) {
    const auto y = stem_conv(net).forward(x);
    mean += y.mean({0, 2, 3});
    var += y.var({0, 2, 3}, /*unbiased=*/true);
  }
  return {mean / static_cast<double>(inputs.size()), var / static_cast<double>(inputs.size())};
}

std::vector<torch::Tensor> image_batches(const data::Dataset& d, int64_t n, int64_t batch) {
  std::vector<torch::Tensor> out;
  for (int64_t begin = 0; begin < n; begin += batch) {
    std::vector<torch::Tensor> images;
    for (int64_t i = begin; i < std::min(n, begin + batch); ++i) images.push_back(d.get(i).image);
    out.push_back(torch::stack(images));
  }
  return out;
}

std::vector<int64_t> first(int64_t n) {
  std::vector<int64_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

TEST(PreciseBn, GdStatisticsAreTheAverageOverWholeImageBatches) {
  torch::manual_seed(0);
  const auto gd = methods::FullImage::from_config(small_config("gd"), kTasks);
  auto& bn = stem_bn(gd->module());
  bn.running_mean.fill_(7);  // stale values that must not survive
  bn.running_var.fill_(7);
  bn.num_batches_tracked.fill_(5);
  const auto dataset = std::make_shared<RandomImages>(10);
  // 10 images in batches of 4: three passes (4, 4, 2), each weighing the same.
  EXPECT_EQ(train::recompute_batch_norm_statistics(*gd, dataset, first(10), 4, 0, 1), 3);
  const auto [mean, var] = averaged_stem_statistics(gd->module(), image_batches(*dataset, 10, 4));
  EXPECT_TRUE(torch::allclose(bn.running_mean, mean, 1e-4, 1e-5)) << bn.running_mean << mean;
  EXPECT_TRUE(torch::allclose(bn.running_var, var, 1e-4, 1e-5)) << bn.running_var << var;
  // The layer's settings are as they were.
  ASSERT_TRUE(bn.options.momentum().has_value());
  EXPECT_DOUBLE_EQ(*bn.options.momentum(), 0.1);
  EXPECT_EQ(bn.num_batches_tracked.item<int64_t>(), 5);
}

TEST(PreciseBn, PatchGdStatisticsAreTheAverageOverChunksOfKPatches) {
  torch::manual_seed(0);
  const auto patchgd = methods::PatchGd::from_config(small_config("patchgd"), kTasks);
  const auto dataset = std::make_shared<RandomImages>(6);
  EXPECT_EQ(train::recompute_batch_norm_statistics(*patchgd, dataset, first(6), 3, 0, 1), 2);
  // Per batch of 3 images, the backbone sees positions {0, 1} of every image, then {2, 3}.
  const auto grid = data::PatchGrid::fit(kSide, kSide, kPatch, kPatch);
  std::vector<torch::Tensor> chunks;
  for (const auto& images : image_batches(*dataset, 6, 3)) {
    for (int64_t begin = 0; begin < 4; begin += 2) {
      chunks.push_back(data::extract_patches_batch(images, grid, torch::arange(begin, begin + 2)).flatten(0, 1));
    }
  }
  const auto [mean, var] = averaged_stem_statistics(patchgd->module(), chunks);
  auto& bn = stem_bn(patchgd->module());
  EXPECT_TRUE(torch::allclose(bn.running_mean, mean, 1e-4, 1e-5)) << bn.running_mean << mean;
  EXPECT_TRUE(torch::allclose(bn.running_var, var, 1e-4, 1e-5)) << bn.running_var << var;
}

TEST(PreciseBn, FrozenLayersKeepTheirStatistics) {
  auto config = small_config("gd");
  config.model.freeze_bn = true;
  const auto gd = methods::FullImage::from_config(config, kTasks);
  std::map<std::string, torch::Tensor> before;
  for (const auto& b : gd->module().named_buffers()) before[b.key()] = b.value().clone();
  train::recompute_batch_norm_statistics(*gd, std::make_shared<RandomImages>(8), first(8), 4, 0, 1);
  for (const auto& b : gd->module().named_buffers()) EXPECT_TRUE(torch::equal(b.value(), before[b.key()])) << b.key();
}

}  // namespace
}  // namespace tessera
