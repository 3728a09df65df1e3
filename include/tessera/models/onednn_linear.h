// A Linear layer's maths through oneDNN's fp32 GEMM on the CPU. LibTorch's CPU Linear calls the BLAS it
// was built with (Debian's: OpenBLAS, 32-40 GFLOP/s on 2 cores here), while oneDNN's inner product
// reaches 110-190 GFLOP/s on the same cores, conversions included. Forward and both backward GEMMs go
// through it; anything else (CUDA, autocast, non-fp32, a LibTorch without oneDNN) takes torch::linear.
#pragma once
#include <torch/types.h>

namespace tessera::models {

// y = x W^T + b for x (..., in), W (out, in), b (out) or undefined; differentiable in x, W and b.
torch::Tensor fast_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

// Whether fast_linear takes the oneDNN path for these operands in the current autocast state.
bool onednn_linear_applies(const torch::Tensor& x, const torch::Tensor& weight);

}  // namespace tessera::models
