// LoRA (Hu et al., 2021): a frozen Linear y = x W^T + b adapted by a trainable low-rank update
// (alpha / r) x A^T B^T, with A (r, in) and B (out, r). B starts at zero, so an adapted model starts as
// its base model; the base weight is read in place, never copied. Parameter names follow peft's
// lora_A / lora_B; merged() folds the update into a plain weight that timm loads.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <string>

namespace tessera::models {

// Which Linear layers of a ViT block get adapters.
enum LoraTarget : unsigned { kLoraQkv = 1u, kLoraProj = 2u, kLoraMlp = 4u };

struct LoraOptions {
  int64_t rank = 0;      // 0: no adapters
  double alpha = 0;      // scale = alpha / rank; 0: alpha = rank (scale 1)
  unsigned targets = kLoraQkv | kLoraProj;
  bool enabled() const { return rank > 0; }
  double scale() const { return (alpha > 0 ? alpha : static_cast<double>(rank)) / static_cast<double>(rank); }
};

// "qkv,proj,mlp" (any non-empty subset, comma-separated) -> LoraTarget bits; errors name origin.
unsigned parse_lora_targets(const std::string& text, const std::string& origin);
std::string lora_targets_name(unsigned targets);

class LoraImpl : public torch::nn::Module {
 public:
  LoraImpl(int64_t in_features, int64_t out_features, const LoraOptions& options);
  // The update (alpha / r) x A^T B^T for inputs x (..., in) -> (..., out).
  torch::Tensor delta(const torch::Tensor& x) const;
  // weight + (alpha / r) B A: the adapted layer as one plain weight (out, in), in weight's dtype.
  torch::Tensor merged(const torch::Tensor& weight) const;

  torch::Tensor lora_A, lora_B;

 private:
  double scale_;
};
TORCH_MODULE(Lora);

}  // namespace tessera::models
