// PatchGD's network: a backbone whose final Linear gives an s-dim vector per patch, and the head g
// that classifies the latent grid Z (B, s, rows, cols). GD-extended uses the same two modules on the
// whole image; plain GD uses the backbone alone with Linear(F, classes).
#pragma once
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "tessera/models/backbone.h"

namespace tessera {
struct ModelConfig;
}

namespace tessera::models {

struct PatchGdHeadOptions {
  int64_t latent = 256;  // s, channels of Z
  int64_t rows = 16, cols = 16;  // grid of Z, derived from image and patch size
  int64_t classes = 6;           // derived from the data
  int64_t width = 256;
  // Stride-2 blocks after the first (stride-1) block: 3 in the paper; "small" 1, "large" 5.
  int64_t downsamples = 3;
  double dropout = 0.2;
};

// Blocks of Conv2d(3x3) -> ReLU -> BatchNorm2d -> Dropout2d (BatchNorm after the activation, as in the
// reference), then flatten and Linear(width * rows' * cols', classes). No pooling.
class PatchGdHeadImpl : public torch::nn::Module {
 public:
  explicit PatchGdHeadImpl(const PatchGdHeadOptions& options);
  torch::Tensor forward(const torch::Tensor& z);  // (B, s, rows, cols) -> logits (B, classes)
  const PatchGdHeadOptions& options() const { return options_; }

  torch::nn::Sequential blocks{nullptr};
  torch::nn::Linear fc{nullptr};

 private:
  PatchGdHeadOptions options_;
};
TORCH_MODULE(PatchGdHead);

// "small" | "default" | "large" -> stride-2 block count.
int64_t head_downsamples(const std::string& variant);

// backbone (+ head). Without a head (plain GD) the backbone's outputs are the logits.
class PatchGdNetImpl : public torch::nn::Module {
 public:
  PatchGdNetImpl(BackbonePtr backbone, PatchGdHead head);
  BackbonePtr backbone;
  PatchGdHead head{nullptr};
};
TORCH_MODULE(PatchGdNet);

}  // namespace tessera::models
