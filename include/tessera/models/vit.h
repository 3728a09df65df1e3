// timm's VisionTransformer with timm's parameter names and behaviour, so a timm state dict (a model
// folder from a hub: UNI, UNI2-h, Virchow2, H-optimus, Prov-GigaPath) loads with strict names and gives
// timm's features. One class with arguments, as timm has; the registry (encoder_registry.h) names the
// configurations.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <string>

#include "tessera/models/backbone.h"
#include "tessera/models/lora.h"

namespace tessera::models {

// timm's Mlp (fc1, act, fc2) | SwiGLUPacked (GluMlp: fc1 packed, act(first half) * second half) |
// SwiGLU (fc1_g, fc1_x: act(gate) * x, fc2)
enum class VitMlp { kMlp, kSwiGluPacked, kSwiGlu };
enum class VitAct { kGelu, kSilu };
// timm's global_pool: token (class token after `norm`), avg (mean of the patch tokens, then `fc_norm`),
// none ('': every token); cls_mean is Virchow2's embedding: class token (+) mean of the patch tokens.
enum class VitPool { kToken, kAvg, kNone, kClsMean };

// The subset of timm.models.vision_transformer.VisionTransformer's arguments these models use, with
// timm's defaults.
struct VitOptions {
  int64_t img_size = 224;
  int64_t patch_size = 16;
  int64_t in_chans = 3;
  int64_t num_classes = 0;  // > 0: a `head` Linear (timm's default 1000; encoders use 0)
  VitPool global_pool = VitPool::kToken;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  double init_values = 0;  // > 0: LayerScale ls1/ls2 with gamma initialised to it
  bool class_token = true;
  bool no_embed_class = false;  // pos_embed covers the patch tokens only
  int64_t reg_tokens = 0;
  bool pre_norm = false;  // norm_pre after the position embedding (CLIP)
  bool final_norm = true;
  int fc_norm = -1;  // -1: timm's None (fc_norm exactly when global_pool is avg), 0 / 1: forced
  bool dynamic_img_size = false;  // any input size whose sides are multiples of patch_size; pos_embed resampled
  VitMlp mlp_layer = VitMlp::kMlp;
  VitAct act_layer = VitAct::kGelu;
  // tessera's training options (not timm's): recompute each block in the backward pass instead of
  // keeping its activations; train only the last K blocks (and the final norms and head); -1: all;
  // LoRA adapters on the blocks' Linear layers, everything else frozen.
  bool checkpoint_blocks = false;
  int64_t trainable_blocks = -1;
  LoraOptions lora;

  int64_t num_prefix_tokens() const { return (class_token ? 1 : 0) + reg_tokens; }
  bool use_fc_norm() const { return fc_norm < 0 ? global_pool == VitPool::kAvg : fc_norm == 1; }
  int64_t mlp_hidden() const { return static_cast<int64_t>(static_cast<double>(embed_dim) * mlp_ratio); }
  // Width of forward()'s output without a head (cls_mean: twice embed_dim).
  int64_t pooled_dim() const { return global_pool == VitPool::kClsMean ? 2 * embed_dim : embed_dim; }
  void check() const;  // argument combinations timm refuses or tessera does not build: errors with the fix
};

class VitAttentionImpl : public torch::nn::Module {
 public:
  VitAttentionImpl(int64_t dim, int64_t heads, bool qkv_bias, const LoraOptions& lora);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
  Lora qkv_lora{nullptr}, proj_lora{nullptr};  // adapters (registered as qkv_lora / proj_lora) when asked

 private:
  int64_t heads_;
};
TORCH_MODULE(VitAttention);

class VitMlpBlockImpl : public torch::nn::Module {
 public:
  VitMlpBlockImpl(int64_t dim, int64_t hidden, VitMlp kind, VitAct act, const LoraOptions& lora);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Linear fc1_g{nullptr}, fc1_x{nullptr};  // SwiGLU
  Lora fc1_lora{nullptr}, fc2_lora{nullptr}, fc1_g_lora{nullptr}, fc1_x_lora{nullptr};

 private:
  VitMlp kind_;
  VitAct act_;
};
TORCH_MODULE(VitMlpBlock);

class VitBlockImpl : public torch::nn::Module {
 public:
  explicit VitBlockImpl(const VitOptions& o);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  VitAttention attn{nullptr};
  VitMlpBlock mlp{nullptr};
  torch::Tensor ls1, ls2;  // LayerScale gammas (registered as ls1.gamma / ls2.gamma), undefined without
};
TORCH_MODULE(VitBlock);

class VisionTransformerImpl : public BackboneImpl {
 public:
  explicit VisionTransformerImpl(VitOptions options);
  // images (B, C, H, W) -> tokens (B, prefix + patches, D) after the final `norm` (timm's forward_features).
  torch::Tensor forward_features(const torch::Tensor& x);
  // The patch tokens after `norm` as a map (B, D, H/p, W/p): what convolution-based methods pool.
  torch::Tensor features(const torch::Tensor& x) override;
  torch::Tensor project(const torch::Tensor& pooled) override;
  // timm's forward: pooled (global_pool), fc_norm, head.
  torch::Tensor forward(const torch::Tensor& x) override;
  int64_t feature_dim() const override { return options_.pooled_dim(); }
  int64_t out_features() const override { return options_.num_classes > 0 ? options_.num_classes : feature_dim(); }
  const VitOptions& options() const { return options_; }
  // The state dict timm loads: LoRA adapters merged into their layers' weights (W + (alpha / r) B A)
  // and left out; without adapters, the parameters and buffers as they are.
  std::vector<std::pair<std::string, torch::Tensor>> merged_state() const;

  torch::nn::Conv2d patch_embed_proj{nullptr};  // registered as patch_embed.proj
  torch::Tensor cls_token, reg_token, pos_embed;
  torch::nn::LayerNorm norm_pre{nullptr}, norm{nullptr}, fc_norm{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Linear head{nullptr};

 private:
  torch::Tensor position_embedding(int64_t rows, int64_t cols) const;
  torch::Tensor pool(const torch::Tensor& tokens) const;
  VitOptions options_;
};
TORCH_MODULE(VisionTransformer);

// timm.layers.resample_abs_pos_embed: the patch part of pos_embed (1, prefix + h*w, D) from its square
// grid to rows x cols, bicubic with antialiasing; the prefix positions are kept.
torch::Tensor resample_abs_pos_embed(const torch::Tensor& pos_embed, int64_t rows, int64_t cols, int64_t prefix);

}  // namespace tessera::models
