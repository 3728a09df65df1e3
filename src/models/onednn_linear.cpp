#include "tessera/models/onednn_linear.h"

#include <ATen/Context.h>
#include <torch/torch.h>

#include "tessera/core/precision.h"

namespace tessera::models {
namespace {

// a (M, K) @ b^T for b (N, K), both dense: oneDNN's inner product, output dense (M, N).
torch::Tensor gemm_nt(const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& bias = {}) {
  return at::mkldnn_linear(a.contiguous().to_mkldnn(), b.contiguous(), bias.defined() ? c10::optional<at::Tensor>(bias)
                                                                                       : c10::nullopt)
      .to_dense();
}

// x (..., in) -> (..., out) through gemm_nt.
torch::Tensor linear_nd(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  auto sizes = x.sizes().vec();
  sizes.back() = weight.size(0);
  return gemm_nt(x.reshape({-1, x.size(-1)}), weight, bias).view(sizes);
}

class OneDnnLinear : public torch::autograd::Function<OneDnnLinear> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight,
                               const torch::Tensor& bias) {
    // The input is kept only for the weight's gradient: a frozen layer (LoRA's base) does not hold it.
    ctx->save_for_backward({weight.requires_grad() ? x.reshape({-1, x.size(-1)}) : torch::Tensor(), weight});
    ctx->saved_data["has_bias"] = bias.defined();
    return linear_nd(x, weight, bias);
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_output) {
    const auto saved = ctx->get_saved_variables();
    const auto& x2 = saved[0];
    const auto& weight = saved[1];
    const auto g = grad_output[0].reshape({-1, weight.size(0)});
    torch::Tensor grad_x, grad_w, grad_b;
    if (ctx->needs_input_grad(0)) {
      auto sizes = grad_output[0].sizes().vec();
      sizes.back() = weight.size(1);
      grad_x = gemm_nt(g, weight.t()).view(sizes);  // g W
    }
    if (ctx->needs_input_grad(1)) grad_w = gemm_nt(g.t(), x2.t());  // g^T x
    if (ctx->needs_input_grad(2) && ctx->saved_data["has_bias"].toBool()) grad_b = g.sum(0);
    return {grad_x, grad_w, grad_b};
  }
};

}  // namespace

bool onednn_linear_applies(const torch::Tensor& x, const torch::Tensor& weight) {
  return at::hasMKLDNN() && x.device().is_cpu() && x.scalar_type() == torch::kFloat &&
         weight.scalar_type() == torch::kFloat && cpu_autocast_dtype() == torch::kFloat && x.numel() > 0;
}

torch::Tensor fast_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!onednn_linear_applies(x, weight)) return torch::linear(x, weight, bias);
  if (!torch::GradMode::is_enabled()) return linear_nd(x, weight, bias);
  return OneDnnLinear::apply(x, weight, bias);
}

}  // namespace tessera::models
