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

enum class HeadPool { none, mean, max };  // none: the blocks; mean / max: Z pooled over the grid

struct PatchGdHeadOptions {
  int64_t latent = 256;  // s, channels of Z
  int64_t rows = 16, cols = 16;  // grid of Z, derived from image and patch size
  int64_t classes = 6;           // derived from the data
  int64_t width = 256;           // channels of every block
  int64_t same_blocks = 1;       // stride-1 blocks first ...
  int64_t reductions = 3;        // ... then stride-2 blocks
  double dropout = 0.2;
  std::string norm = "batch";    // batch (the reference's BatchNorm2d) | none
  HeadPool pool = HeadPool::none;  // mean | max: no blocks, Linear(s, classes) on Z pooled over the grid
  bool has_batch_norm() const { return pool == HeadPool::none && norm == "batch"; }
};

// The reference's head variants (same blocks, reductions, width): original (1, 3, 256), smaller
// (0, 3, 256), larger (1, 4, 256), smaller_feat (1, 3, 128), larger_feat (1, 3, 512); and ours, pool:
// the mean of Z over the grid, then Linear(s, classes), which makes PatchGD's model the plain GD
// model with a patch-sized receptive field (docs/results.md: it generalises where the others do not);
// and max: the largest value of each channel over the grid, for a small object on a large empty image
// (one patch decides; a mean would dilute it by the patch count).
void apply_head_variant(PatchGdHeadOptions& options, const std::string& variant);

// Blocks of Conv2d(3x3) -> ReLU -> BatchNorm2d -> Dropout2d (BatchNorm after the activation, as in the
// reference; norm none leaves it out), then flatten and Linear(width * rows' * cols', classes). No pooling. Z[b, :, row, col]
// holds the patch at (row, col); the reference's head reads Z transposed (see import_patchgd).
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


// backbone (+ head). Without a head (plain GD) the backbone's outputs are the logits.
class PatchGdNetImpl : public torch::nn::Module {
 public:
  PatchGdNetImpl(BackbonePtr backbone, PatchGdHead head);
  BackbonePtr backbone;
  PatchGdHead head{nullptr};
};
TORCH_MODULE(PatchGdNet);

}  // namespace tessera::models
