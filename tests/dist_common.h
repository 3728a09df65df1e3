// The gradient-equivalence setting shared by the data-parallel worker (tests/dist_worker.cpp) and the
// single-process reference in test_distributed.cpp: a tiny model with every batch-coupled and random
// layer made per-sample (frozen BatchNorm, no dropout, no head BatchNorm), and a batch of 4 images of
// which rank r of 2 gets images 2r and 2r + 1.
#pragma once
#include <torch/torch.h>

#include "helpers.h"
#include "tessera/core/distributed.h"
#include "tessera/core/runtime.h"
#include "tessera/data/loader.h"
#include "tessera/methods/gradient_reducer.h"
#include "tessera/methods/step_context.h"
#include "tessera/train/experiment.h"
#include "tessera/train/precise_bn.h"

// Data-parallel tests need c10d's Gloo (libgloo-dev at build time); builds without it skip them.
#define REQUIRE_DISTRIBUTED() \
  if (!::tessera::dist::available()) GTEST_SKIP() << "built without c10d Gloo (install libgloo-dev)"

namespace tessera::testing {

inline Config equivalence_config(const std::string& method, const std::string& mnist_dir) {
  Config c = tiny_config(mnist_dir, "unused");
  c.train.method = method == "ips_chunked" ? "ips" : method;
  if (method == "ips_chunked") c.ips.grad_chunk = 3;  // M 4 per image, 4 winners per rank: chunks 3 + 1
  c.data.dataset = c.train.method == "ips" ? "megapixel_mnist" : "ultramnist";
  if (c.data.dataset == "ultramnist") {
    c.data.height = c.data.width = 140;
    c.data.max_scale = 2;
  }
  c.data.train_size = 4;
  c.data.workers = 0;
  c.model.freeze_bn = true;
  c.model.dropout = c.model.attn_dropout = 0;
  c.patchgd.latent = 8;
  c.patchgd.q = 0.5;
  c.patchgd.eps = 1;  // two optimiser steps per batch: two reductions
  c.patchgd.head_norm = "none";
  c.patchgd.head_dropout = 0;
  return c;
}

// Gradients after one training step on images [first, first + count) of the batch; with a reducer,
// averaged over the ranks. The optimiser's LR is tiny but not zero so PatchGD's second step sees
// changed weights, as it would in training.
inline std::vector<torch::Tensor> step_gradients(const Config& c, int64_t first, int64_t count, bool reduce) {
  runtime::seed_everything(7);
  auto [train_set, test_set] = train::make_datasets(c);
  auto method = train::make_method(c, train_set->tasks());
  torch::optim::AdamW optimizer(method->module().parameters(), torch::optim::AdamWOptions(1e-3));
  std::unique_ptr<methods::GradientReducer> reducer;
  if (reduce) reducer = std::make_unique<methods::GradientReducer>(method->module().parameters(), /*bucket_bytes=*/4096);
  std::vector<data::Sample> samples;
  std::vector<int64_t> indices;
  for (int64_t i = first; i < first + count; ++i) {
    samples.push_back(train_set->get(i));
    indices.push_back(i);
  }
  methods::StepContext context(optimizer, nullptr, reducer.get());
  method->train_step(data::collate(std::move(samples), indices), context);
  std::vector<torch::Tensor> grads;
  for (const auto& p : method->module().parameters()) {
    grads.push_back(p.grad().defined() ? p.grad().clone() : torch::full({1}, std::nan("")));
  }
  return grads;
}

// Every BatchNorm buffer of the GD model of the equivalence setting (BatchNorm not frozen) after
// recomputing its statistics from images [first, first + count) in batches of 2.
inline std::vector<torch::Tensor> precise_bn_buffers(const std::string& mnist_dir, int64_t first, int64_t count) {
  auto c = equivalence_config("gd", mnist_dir);
  c.model.freeze_bn = false;
  c.data.train_size = 8;
  runtime::seed_everything(7);
  auto [train_set, test_set] = train::make_datasets(c);
  auto method = train::make_method(c, train_set->tasks());
  std::vector<int64_t> indices;
  for (int64_t i = first; i < first + count; ++i) indices.push_back(i);
  train::recompute_batch_norm_statistics(*method, train_set, indices, 2, 0, 1);
  std::vector<torch::Tensor> buffers;
  for (const auto& b : method->module().buffers()) buffers.push_back(b.clone());
  return buffers;
}

}  // namespace tessera::testing
