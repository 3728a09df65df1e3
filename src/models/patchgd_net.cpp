#include "tessera/models/patchgd_net.h"

#include <torch/torch.h>

#include "tessera/core/error.h"
#include "tessera/models/chain.h"

namespace tessera::models {

PatchGdHeadImpl::PatchGdHeadImpl(const PatchGdHeadOptions& o) : options_(o) {
  TESSERA_CHECK(o.latent > 0 && o.rows > 0 && o.cols > 0 && o.classes > 0 &&
                    (o.pool != HeadPool::none || (o.width > 0 && o.same_blocks >= 0 && o.reductions >= 0 && o.same_blocks + o.reductions > 0)),
                "PatchGD head needs positive latent size, grid and classes, got s=", o.latent, " grid ", o.rows, "x",
                o.cols, " classes ", o.classes);
  TESSERA_CHECK(o.norm == "batch" || o.norm == "none", "unknown PatchGD head norm '", o.norm, "'; use batch or none");
  TESSERA_CHECK(o.dropout >= 0 && o.dropout < 1, "PatchGD head dropout must be in [0, 1), got ", o.dropout);
  torch::nn::Sequential seq;
  const auto block = [&](int64_t in, int64_t stride) {
    const torch::nn::Conv2d conv(torch::nn::Conv2dOptions(in, o.width, 3).stride(stride).padding(1));
    if (o.norm == "batch") {
      seq->push_back(Chain(conv, torch::nn::ReLU(), torch::nn::BatchNorm2d(o.width), torch::nn::Dropout2d(o.dropout)));
    } else {
      seq->push_back(Chain(conv, torch::nn::ReLU(), torch::nn::Dropout2d(o.dropout)));
    }
  };
  if (o.pool != HeadPool::none) {
    blocks = register_module("blocks", seq);
    fc = register_module("fc", torch::nn::Linear(o.latent, o.classes));
    return;
  }
  int64_t channels = o.latent;
  for (int64_t i = 0; i < o.same_blocks; ++i, channels = o.width) block(channels, 1);
  int64_t rows = o.rows, cols = o.cols;
  for (int64_t i = 0; i < o.reductions; ++i, channels = o.width) {
    block(channels, 2);
    rows = (rows + 1) / 2;  // a 3x3 stride-2 padding-1 convolution gives ceil(n / 2)
    cols = (cols + 1) / 2;
  }
  blocks = register_module("blocks", seq);
  fc = register_module("fc", torch::nn::Linear(o.width * rows * cols, o.classes));
}

torch::Tensor PatchGdHeadImpl::forward(const torch::Tensor& z) {
  TESSERA_CHECK(z.dim() == 4 && z.size(1) == options_.latent && z.size(2) == options_.rows && z.size(3) == options_.cols,
                "PatchGD head expects Z of shape (B, ", options_.latent, ", ", options_.rows, ", ", options_.cols,
                "), got ", z.sizes(), "; the head's grid comes from the training image and patch size");
  if (options_.pool == HeadPool::mean) return fc(z.mean({2, 3}));
  if (options_.pool == HeadPool::max) return fc(z.amax({2, 3}));
  return fc(blocks->forward(z).flatten(1));
}

void apply_head_variant(PatchGdHeadOptions& o, const std::string& variant) {
  struct Variant {
    const char* name;
    int64_t same, reductions, width;
  };
  static const Variant variants[] = {{"original", 1, 3, 256},     {"smaller", 0, 3, 256},    {"larger", 1, 4, 256},
                                     {"smaller_feat", 1, 3, 128}, {"larger_feat", 1, 3, 512}};
  if (variant == "pool" || variant == "max") {
    o.pool = variant == "pool" ? HeadPool::mean : HeadPool::max;
    return;
  }
  for (const auto& v : variants) {
    if (variant == v.name) {
      o.pool = HeadPool::none;
      o.same_blocks = v.same;
      o.reductions = v.reductions;
      o.width = v.width;
      return;
    }
  }
  fail("unknown PatchGD head '", variant, "'; use pool, max, original, smaller, larger, smaller_feat or larger_feat");
}

PatchGdNetImpl::PatchGdNetImpl(BackbonePtr b, PatchGdHead h) : backbone(std::move(b)), head(std::move(h)) {
  register_module("backbone", backbone);
  if (head) register_module("head", head);
}

}  // namespace tessera::models
