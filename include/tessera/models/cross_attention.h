// The IPS aggregator: one post-norm cross-attention layer in which T learned query tokens (one per
// task) attend over the patch embeddings, followed by an MLP. Parameter names follow the reference's
// modules (q, q_w, k_w, v_w, fc, w_1, w_2) with its two LayerNorms named ln1 and ln2.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

namespace tessera::models {

struct CrossAttentionOptions {
  int64_t dim = 128;      // D
  int64_t heads = 8;      // H
  int64_t d_k = 16;       // per-head size of queries and keys
  int64_t d_v = 0;        // per-head size of values; 0: d_k
  int64_t d_inner = 512;  // MLP hidden size
  int64_t tokens = 1;     // T
  double dropout = 0.1;
  double attn_dropout = 0.1;
};

class CrossAttentionImpl : public torch::nn::Module {
 public:
  explicit CrossAttentionImpl(const CrossAttentionOptions& options);
  // x (B, L, D); pad_mask (B, L) bool, true = padding (gets zero attention). Returns (B, T, D).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& pad_mask = {});
  // Selection scores (B, L): post-softmax attention averaged over heads, then over tokens.
  torch::Tensor scores(const torch::Tensor& x, const torch::Tensor& pad_mask = {});
  // Pre-softmax attention logits (B, H, T, L): comparable across chunks, unlike scores.
  torch::Tensor logits(const torch::Tensor& x);
  const CrossAttentionOptions& options() const { return options_; }

  torch::Tensor q;
  torch::nn::Linear q_w{nullptr}, k_w{nullptr}, v_w{nullptr}, fc{nullptr}, w_1{nullptr}, w_2{nullptr};
  torch::nn::LayerNorm ln1{nullptr}, ln2{nullptr};
  torch::nn::Dropout attn_drop{nullptr}, drop{nullptr};

 private:
  torch::Tensor attention(const torch::Tensor& x, const torch::Tensor& pad_mask);  // (B, H, T, L)
  CrossAttentionOptions options_;
};
TORCH_MODULE(CrossAttention);

// Fixed 1-D sinusoidal encoding of patch indices: idx (...) int64 -> (..., dim) float.
// pe[p, 2i] = sin(p * exp(-2i ln(10000) / dim)), pe[p, 2i+1] = cos(same).
torch::Tensor sinusoidal_encoding(const torch::Tensor& idx, int64_t dim);

}  // namespace tessera::models
