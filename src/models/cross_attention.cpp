#include "tessera/models/cross_attention.h"

#include <torch/torch.h>

#include <cmath>

#include "tessera/core/error.h"

namespace tessera::models {

CrossAttentionImpl::CrossAttentionImpl(const CrossAttentionOptions& options) : options_(options) {
  auto& o = options_;
  if (o.d_v == 0) o.d_v = o.d_k;
  TESSERA_CHECK(o.dim > 0 && o.heads > 0 && o.d_k > 0 && o.d_v > 0 && o.tokens > 0,
                "cross-attention sizes must be positive");
  const double bound = std::sqrt(1.0 / static_cast<double>(o.d_k));
  q = register_parameter("q", torch::empty({1, o.tokens, o.dim}).uniform_(-bound, bound));
  const auto linear = [](int64_t in, int64_t out, bool bias) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
  };
  q_w = register_module("q_w", linear(o.dim, o.heads * o.d_k, false));
  k_w = register_module("k_w", linear(o.dim, o.heads * o.d_k, false));
  v_w = register_module("v_w", linear(o.dim, o.heads * o.d_v, false));
  fc = register_module("fc", linear(o.heads * o.d_v, o.dim, false));
  ln1 = register_module("ln1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim}).eps(1e-6)));
  w_1 = register_module("w_1", linear(o.dim, o.d_inner, true));
  w_2 = register_module("w_2", linear(o.d_inner, o.dim, true));
  ln2 = register_module("ln2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim}).eps(1e-6)));
  attn_drop = register_module("attn_drop", torch::nn::Dropout(o.attn_dropout));
  drop = register_module("drop", torch::nn::Dropout(o.dropout));
}

torch::Tensor CrossAttentionImpl::logits(const torch::Tensor& x) {
  const auto& o = options_;
  TESSERA_CHECK(x.dim() == 3 && x.size(2) == o.dim, "cross-attention expects (B, L, ", o.dim, ") input, got ",
                x.sizes());
  const int64_t B = x.size(0), L = x.size(1);
  // Scaling q before the product (not the product after) matches the reference bit for bit.
  const auto query = q_w(q).view({1, o.tokens, o.heads, o.d_k}).transpose(1, 2) /
                     std::sqrt(static_cast<double>(o.d_k));
  const auto key = k_w(x).view({B, L, o.heads, o.d_k}).transpose(1, 2);
  return torch::matmul(query, key.transpose(2, 3));  // (B, H, T, L)
}

torch::Tensor CrossAttentionImpl::attention(const torch::Tensor& x, const torch::Tensor& pad_mask) {
  auto l = logits(x);
  if (pad_mask.defined()) l = l.masked_fill(pad_mask.view({x.size(0), 1, 1, x.size(1)}), -INFINITY);
  return torch::softmax(l, -1, torch::kFloat);  // fp32 under autocast
}

torch::Tensor CrossAttentionImpl::scores(const torch::Tensor& x, const torch::Tensor& pad_mask) {
  return attention(x, pad_mask).mean(1).mean(1);
}

torch::Tensor CrossAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& pad_mask) {
  const auto& o = options_;
  const int64_t B = x.size(0), L = x.size(1);
  const auto attn = attn_drop(attention(x, pad_mask));
  const auto value = v_w(x).view({B, L, o.heads, o.d_v}).transpose(1, 2);
  auto y = torch::matmul(attn, value).transpose(1, 2).contiguous().view({B, o.tokens, o.heads * o.d_v});
  y = ln1(drop(fc(y)) + q);  // the residual is the raw query, as in the reference
  return ln2(drop(w_2(torch::relu(w_1(y)))) + y);
}

torch::Tensor sinusoidal_encoding(const torch::Tensor& idx, int64_t dim) {
  TESSERA_CHECK(dim % 2 == 0, "sinusoidal positional encoding needs an even dimension, got ", dim);
  const auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(idx.device());
  const auto div = torch::exp(torch::arange(0, dim, 2, opts) * (-std::log(10000.0) / dim));
  const auto angle = idx.to(torch::kFloat32).unsqueeze(-1) * div;  // (..., dim/2)
  // Interleave: even channels sin, odd channels cos.
  return torch::stack({torch::sin(angle), torch::cos(angle)}, -1).flatten(-2);
}

}  // namespace tessera::models
