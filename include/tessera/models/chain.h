// A Sequential that can sit inside another Sequential (torch::nn::Sequential's templated forward
// cannot), as torchvision's C++ models do. Children are named 0, 1, ... like nn.Sequential's.
#pragma once
#include <torch/nn/modules/container/sequential.h>

namespace tessera::models {

class ChainImpl : public torch::nn::SequentialImpl {
 public:
  using SequentialImpl::SequentialImpl;
  torch::Tensor forward(torch::Tensor x) { return SequentialImpl::forward(x); }
};
TORCH_MODULE(Chain);

}  // namespace tessera::models
