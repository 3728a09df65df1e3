// PatchGD against its mathematics: with every patch in one chunk it is end-to-end gradient descent;
// with a partial chunk the backbone's gradients come only through the re-encoded patches; the final
// step guard; GD-extended shares PatchGD's parameters.
#include <torch/torch.h>

#include "helpers.h"
#include "tessera/methods/full_image.h"
#include "tessera/methods/patchgd.h"
#include "tessera/train/registry.h"

namespace tessera {
namespace {

constexpr int64_t kSide = 64, kPatch = 32, kLatent = 16, kClasses = 3;
const std::vector<Task> kTasks{{"label", "softmax", kClasses}};

models::PatchGdNet tiny_net(uint64_t seed, int64_t latent = kLatent, models::HeadPool pool = models::HeadPool::none) {
  torch::manual_seed(seed);
  models::BackboneOptions b;
  b.arch = "resnet18";
  b.in_channels = 1;
  b.width = 8;
  b.out_features = latent;
  models::PatchGdHeadOptions h;
  h.latent = latent;
  h.rows = h.cols = kSide / kPatch;
  h.classes = kClasses;
  h.width = 8;
  h.reductions = 1;
  h.dropout = 0;  // dropout masks would differ between the two computations compared
  h.pool = pool;
  return models::PatchGdNet(models::make_backbone(b), models::PatchGdHead(h));
}

data::Batch tiny_batch(int64_t B = 3) {
  torch::manual_seed(7);
  data::Batch batch;
  batch.images = torch::randn({B, 1, kSide, kSide});
  batch.labels["label"] = torch::randint(kClasses, {B}, torch::kLong);
  return batch;
}

std::map<std::string, torch::Tensor> grads(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) {
    if (p.value().grad().defined()) out[p.key()] = p.value().grad().clone();
  }
  return out;
}

void expect_close(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b,
                  double tolerance) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, g] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    const double scale = 1 + g.abs().max().item<double>();
    EXPECT_LT((g - b.at(name)).abs().max().item<double>(), tolerance * scale) << name;
  }
}

methods::PatchGd make_patchgd(models::PatchGdNet net, double q, int64_t zeta = 0, int64_t eps = 0) {
  methods::PatchGdOptions o;
  o.patch = kPatch;
  o.q = q;
  o.zeta = zeta;
  o.eps = eps;
  return methods::PatchGd(net, kTasks, o, torch::kCPU);
}

TEST(PatchGd, FullSamplingEqualsEndToEndGradientDescent) {
  auto method = make_patchgd(tiny_net(1), /*q=*/1.0);
  const auto batch = tiny_batch();
  torch::optim::SGD frozen(method.module().parameters(), torch::optim::SGDOptions(0.0));  // keeps grads, moves nothing
  method.train_step(batch, frozen);
  const auto patchgd_grads = grads(method.module());

  // head(backbone(all patches)) end to end, same weights, train mode: identical BatchNorm statistics.
  auto reference = tiny_net(1);
  reference->train();
  const auto grid = data::PatchGrid::fit(kSide, kSide, kPatch, kPatch);
  const auto patches = data::extract_patches_batch(batch.images, grid, torch::arange(grid.count()));
  const int64_t B = batch.size();
  const auto z = reference->backbone->forward(patches.flatten(0, 1)).view({B, grid.count(), kLatent}).transpose(1, 2);
  const auto logits = reference->head->forward(z.reshape({B, kLatent, grid.rows, grid.cols}));
  torch::cross_entropy_loss(logits, batch.labels.at("label")).backward();
  const auto reference_grads = grads(*reference);
  EXPECT_FALSE(reference_grads.empty());
  expect_close(patchgd_grads, reference_grads, 1e-4);
}

TEST(PatchGd, AccumulatingEpsIterationsAveragesTheirGradients) {
  // Every patch of an image is the same tile and the mean head treats every grid position alike, so
  // every inner iteration has the same loss and gradients: accumulating eps = 2 iterations, each loss
  // divided by eps, must give one iteration's gradients (without the division: twice them; AdamW would
  // hide that from the weights, the gradients do not).
  torch::manual_seed(11);
  data::Batch batch;
  batch.images = torch::randn({3, 1, kPatch, kPatch}).repeat({1, 1, kSide / kPatch, kSide / kPatch});
  batch.labels["label"] = torch::randint(kClasses, {3}, torch::kLong);
  const auto step_grads = [&](int64_t eps) {
    auto method = make_patchgd(tiny_net(5, kLatent, models::HeadPool::mean), /*q=*/0.5, /*zeta=*/0, eps);
    EXPECT_EQ(method.plan(data::PatchGrid::fit(kSide, kSide, kPatch, kPatch)).iterations, 2);
    torch::optim::SGD frozen(method.module().parameters(), torch::optim::SGDOptions(0.0));  // keeps grads, moves nothing
    method.train_step(batch, frozen);
    return grads(method.module());
  };
  const auto one = step_grads(1), accumulated = step_grads(2);
  ASSERT_FALSE(one.empty());
  double largest = 0;
  for (const auto& [name, g] : one) largest = std::max(largest, g.abs().max().item<double>());
  EXPECT_GT(largest, 1e-4);
  expect_close(accumulated, one, 1e-5);
}

TEST(PatchGd, PartialChunkGradientsComeOnlyThroughTheReencodedPatches) {
  auto method = make_patchgd(tiny_net(2), /*q=*/0.5);
  const auto batch = tiny_batch();
  const auto grid = method.grid(batch.images);
  method.module().train();
  auto z = method.fill(batch.images, grid, torch::arange(grid.count()), 2);
  const auto before = z.clone();
  EXPECT_FALSE(z.requires_grad());

  const auto idx = torch::tensor({3, 0}, torch::kLong);
  const auto with_chunk = method.reencode(z, batch.images, grid, idx);
  const auto loss = torch::cross_entropy_loss(method.net()->head->forward(with_chunk), batch.labels.at("label"));
  method.module().zero_grad();
  loss.backward();
  const auto backbone_grads = grads(*method.net()->backbone);

  // The persistent grid took the new vectors at the chunk, kept the others, and stays a constant.
  EXPECT_FALSE(z.requires_grad());
  const auto flat = z.view({z.size(0), z.size(1), -1}), old = before.view_as(flat);
  EXPECT_TRUE(torch::equal(flat.index_select(2, torch::tensor({1, 2})), old.index_select(2, torch::tensor({1, 2}))));
  EXPECT_FALSE(torch::equal(flat.index_select(2, idx), old.index_select(2, idx)));

  // Manual: dLoss/dZ at the chunk's positions, pulled back through the chunk's patches alone.
  auto z_leaf = with_chunk.detach().requires_grad_();
  torch::cross_entropy_loss(method.net()->head->forward(z_leaf), batch.labels.at("label")).backward();
  const int64_t B = batch.size();
  const auto dz = z_leaf.grad().view({B, kLatent, -1}).index_select(2, idx);
  method.module().zero_grad();
  const auto patches = data::extract_patches_batch(batch.images, grid, idx).flatten(0, 1);
  const auto feats = method.net()->backbone->forward(patches).view({B, idx.size(0), kLatent}).transpose(1, 2);
  feats.backward(dz);
  expect_close(backbone_grads, grads(*method.net()->backbone), 1e-5);
}

TEST(PatchGd, StepsEvenWhenChunksRunOutBeforeEps) {
  // n = 4 patches, q = 0.3: k = 2, two chunks, but zeta = eps = ceil(1/0.3) = 4. The reference never steps.
  auto method = make_patchgd(tiny_net(3), /*q=*/0.3);
  const auto plan = method.plan(data::PatchGrid::fit(kSide, kSide, kPatch, kPatch));
  EXPECT_EQ(plan.k, 2);
  EXPECT_EQ(plan.zeta, 4);
  EXPECT_EQ(plan.eps, 4);
  EXPECT_EQ(plan.iterations, 2);
  torch::optim::SGD sgd(method.module().parameters(), torch::optim::SGDOptions(0.1));
  const auto weight_before = method.net()->backbone->named_parameters()["conv1.weight"].clone();
  const auto head_before = method.net()->head->fc->weight.clone();
  const auto result = method.train_step(tiny_batch(), sgd);
  EXPECT_TRUE(std::isfinite(result.loss));
  EXPECT_FALSE(torch::equal(weight_before, method.net()->backbone->named_parameters()["conv1.weight"]));
  EXPECT_FALSE(torch::equal(head_before, method.net()->head->fc->weight));
}

TEST(PatchGd, AccumulationOfOneStepsEveryIteration) {
  auto method = make_patchgd(tiny_net(4), /*q=*/0.25, /*zeta=*/0, /*eps=*/1);
  EXPECT_EQ(method.plan(data::PatchGrid::fit(kSide, kSide, kPatch, kPatch)).iterations, 4);
  int64_t steps = 0;
  struct CountingSgd : torch::optim::SGD {
    int64_t* counter;
    CountingSgd(std::vector<torch::Tensor> p, int64_t* c) : SGD(std::move(p), torch::optim::SGDOptions(0.01)), counter(c) {}
    torch::Tensor step(LossClosure closure = nullptr) override {
      ++*counter;
      return SGD::step(closure);
    }
  } sgd(method.module().parameters(), &steps);
  method.train_step(tiny_batch(), sgd);
  EXPECT_EQ(steps, 4);
}

// Prediction is deterministic and per image: the same image gets the same outputs alone or in a batch
// (eval-mode BatchNorm; a train-mode fill would mix the images' statistics).
TEST(PatchGd, PredictIsDeterministicAndPerImage) {
  auto method = make_patchgd(tiny_net(5), 0.5);
  const auto batch = tiny_batch(3);
  torch::optim::SGD sgd(method.module().parameters(), torch::optim::SGDOptions(0.05));
  method.train_step(batch, sgd);  // running statistics away from their initial values
  const auto a = method.predict(batch).at("label"), b = method.predict(batch).at("label");
  EXPECT_TRUE(torch::equal(a, b));
  data::Batch one;
  one.images = batch.images.slice(0, 1, 2);
  EXPECT_LT((method.predict(one).at("label")[0] - a[1]).abs().max().item<double>(), 1e-5);
}

TEST(PatchGd, PredictIsTheHeadOnTheEvalModeGridOfAllPatches) {
  auto method = make_patchgd(tiny_net(8), 0.25);
  const auto batch = tiny_batch(2);
  torch::optim::SGD sgd(method.module().parameters(), torch::optim::SGDOptions(0.05));
  method.train_step(batch, sgd);  // non-trivial running statistics
  const auto predicted = method.predict(batch).at("label");
  auto net = method.net();
  net->eval();
  torch::NoGradGuard no_grad;
  const auto grid = data::PatchGrid::fit(kSide, kSide, kPatch, kPatch);
  const auto patches = data::extract_patches_batch(batch.images, grid, torch::arange(grid.count()));
  const auto z = net->backbone->forward(patches.flatten(0, 1)).view({2, grid.count(), kLatent}).transpose(1, 2);
  const auto expected = torch::softmax(net->head->forward(z.reshape({2, kLatent, grid.rows, grid.cols})), 1);
  EXPECT_LT((predicted - expected).abs().max().item<double>(), 1e-5);
}

models::PatchGdHeadOptions head_options(const std::string& variant, int64_t rows, int64_t cols) {
  models::PatchGdHeadOptions h;
  h.latent = kLatent;
  h.rows = rows;
  h.cols = cols;
  h.classes = kClasses;
  models::apply_head_variant(h, variant);
  return h;
}

TEST(PatchGdHead, PoolIsALinearMapOfTheGridMean) {
  auto h = head_options("pool", 3, 2);
  models::PatchGdHead head(h);
  EXPECT_TRUE(head->blocks->is_empty());
  const auto z = torch::randn({4, kLatent, 3, 2});
  const auto expected = torch::linear(z.mean({2, 3}), head->fc->weight, head->fc->bias);
  EXPECT_TRUE(torch::allclose(head->forward(z), expected, 1e-5, 1e-6));
  // The grid order does not matter: permuting the patches leaves the logits unchanged.
  const auto shuffled = z.flatten(2).index_select(2, torch::randperm(6)).view_as(z);
  EXPECT_TRUE(torch::allclose(head->forward(shuffled), expected, 1e-5, 1e-6));
  // A reference variant after pool is a block head again.
  models::apply_head_variant(h, "smaller");
  EXPECT_EQ(h.pool, models::HeadPool::none);
  EXPECT_FALSE(models::PatchGdHead(h)->blocks->is_empty());
}

// The max head: each channel's largest value over the grid, so one patch decides and the rest of the
// grid gets no gradient; a mean head would scale that patch down by the patch count.
TEST(PatchGdHead, MaxReadsTheLargestCellOfEachChannel) {
  const auto h = head_options("max", 4, 4);
  models::PatchGdHead head(h);
  EXPECT_TRUE(head->blocks->is_empty());
  EXPECT_FALSE(h.has_batch_norm());
  auto z = torch::randn({2, kLatent, 4, 4});
  z.index_put_({0, torch::indexing::Slice(), 2, 1}, 100.0);  // one "object" patch in image 0
  z.requires_grad_(true);
  const auto logits = head->forward(z);
  EXPECT_TRUE(torch::allclose(logits, torch::linear(std::get<0>(z.flatten(2).max(2)), head->fc->weight, head->fc->bias),
                              1e-5, 1e-6));
  logits[0].sum().backward();
  const auto g = z.grad()[0].abs().sum(0);  // (4, 4): gradient reaching each patch of image 0
  EXPECT_GT(g[2][1].item<double>(), 0);
  EXPECT_EQ((g > 0).sum().item<int64_t>(), 1) << "only the patch holding every channel's maximum gets gradient";
}

TEST(PatchGd, SmallestBatchIsOneWithoutHeadBatchNorm) {
  const auto& method = train::find_method("patchgd");
  Config c;
  c.patchgd.head = "original";
  EXPECT_EQ(method.min_batch_size(c), 2) << "the reference's head has BatchNorm on 1x1 maps";
  c.patchgd.head_norm = "none";
  EXPECT_EQ(method.min_batch_size(c), 1);
  for (const char* head : {"pool", "max"}) {
    c.patchgd.head = head;
    c.patchgd.head_norm = "batch";
    EXPECT_EQ(method.min_batch_size(c), 1) << head;
  }
  // GD-extended carries the same head, so the same rule; plain GD has no head.
  const auto& extended = train::find_method("gd_extended");
  EXPECT_EQ(extended.min_batch_size(c), 1) << "max head";
  c.patchgd.head = "original";
  EXPECT_EQ(extended.min_batch_size(c), 2) << "the reference's head has BatchNorm on 1x1 maps";
  EXPECT_EQ(train::find_method("gd").min_batch_size(c), 1);
}

TEST(PatchGdHead, NormNoneHasNoBatchNormAndIsPerSample) {
  models::PatchGdHeadOptions h;
  h.latent = kLatent;
  h.rows = h.cols = 4;
  h.classes = kClasses;
  h.width = 8;
  h.dropout = 0;
  h.norm = "none";
  models::PatchGdHead head(h);
  for (const auto& m : head->modules()) EXPECT_FALSE(m->as<torch::nn::BatchNorm2d>());
  head->train();
  const auto z = torch::randn({3, kLatent, 4, 4});
  // Without batch statistics a sample's logits do not depend on the rest of the batch, even in train mode.
  EXPECT_TRUE(torch::allclose(head->forward(z).slice(0, 0, 1), head->forward(z.slice(0, 0, 1)), 1e-5, 1e-6));
  h.norm = "group";
  EXPECT_THROW(models::PatchGdHead{h}, Error);
}

TEST(Backbone, FrozenBatchNormIgnoresTrainModeAndTheBatch) {
  torch::manual_seed(3);
  models::BackboneOptions b;
  b.arch = "resnet18";
  b.in_channels = 1;
  b.width = 8;
  b.out_features = 5;
  b.freeze_bn = true;
  auto frozen = models::make_backbone(b);
  // Running statistics that differ from the identity, so eval mode is visible in the outputs.
  for (const auto& m : frozen->modules()) {
    if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      bn->running_mean.uniform_(-0.1, 0.1);
      bn->running_var.uniform_(0.5, 2.0);
    }
  }
  const auto before = frozen->named_buffers().find("bn1.running_mean")->clone();
  frozen->train();
  EXPECT_TRUE(frozen->is_training());
  const auto x = torch::randn({4, 1, 64, 64});
  const auto y = frozen->forward(x);
  EXPECT_TRUE(torch::allclose(y.slice(0, 0, 1), frozen->forward(x.slice(0, 0, 1)), 1e-4, 1e-5));
  EXPECT_TRUE(torch::equal(*frozen->named_buffers().find("bn1.running_mean"), before)) << "statistics must not move";
  y.sum().backward();
  EXPECT_TRUE(frozen->named_parameters().find("bn1.weight")->grad().defined()) << "the affine part still trains";

  frozen->freeze_batchnorm(false);  // back to ordinary BatchNorm: batch statistics in train mode
  EXPECT_FALSE(torch::allclose(frozen->forward(x).slice(0, 0, 1), frozen->forward(x.slice(0, 0, 1)), 1e-4, 1e-5));
}

// GD-extended as the registry builds it from a config: PatchGD's parameters exactly (the same names
// and shapes as the PatchGD network of the same config), and its logits are the head on the whole-image
// feature map pooled to the patch grid and projected per cell.
TEST(FullImage, GdExtendedIsPatchGdsNetworkOnThePooledWholeImageFeatureMap) {
  Config c = testing::small_patch_config("patchgd", kSide, kPatch, kLatent);
  const auto patchgd = methods::PatchGd::from_config(c, kTasks);
  c.train.method = "gd_extended";
  const auto extended = methods::FullImage::from_config(c, kTasks);
  c.train.method = "gd";
  const auto gd = methods::FullImage::from_config(c, kTasks);
  const auto a = patchgd->module().named_parameters(), b = extended->module().named_parameters();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& p : a) EXPECT_EQ(p.value().sizes(), b[p.key()].sizes()) << p.key();
  EXPECT_LT(gd->module().named_parameters().size(), a.size());  // plain GD has no head

  auto net = extended->net();
  net->eval();
  torch::NoGradGuard no_grad;
  const auto x = tiny_batch(2).images;
  const auto grid = data::PatchGrid::fit(kSide, kSide, kPatch, kPatch);
  const auto cells = torch::adaptive_avg_pool2d(net->backbone->features(x), {grid.rows, grid.cols});
  const auto z = net->backbone->project(cells.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});
  EXPECT_TRUE(torch::allclose(extended->logits(x), net->head->forward(z), 1e-5, 1e-6));
  // Not the backbone's plain pooled output: the grid keeps where things are.
  EXPECT_EQ(z.sizes(), (std::vector<int64_t>{2, kLatent, grid.rows, grid.cols}));
}

TEST(FullImage, GdDownscalesBeforeTheBackbone) {
  torch::manual_seed(0);
  models::BackboneOptions b;
  b.arch = "resnet18";
  b.in_channels = 1;
  b.width = 8;
  b.out_features = kClasses;
  auto backbone = models::make_backbone(b);
  methods::FullImage gd(models::PatchGdNet(backbone, nullptr), kTasks, {/*image_size=*/32}, torch::kCPU);
  EXPECT_EQ(gd.name(), "gd");
  const auto batch = tiny_batch(2);
  gd.module().eval();
  torch::NoGradGuard no_grad;
  const auto expected = backbone->forward(torch::adaptive_avg_pool2d(batch.images, {32, 32}));
  EXPECT_TRUE(torch::allclose(gd.logits(batch.images), expected));
}

}  // namespace
}  // namespace tessera
