// The IPS projector for pre-extracted patch features (the paper's CAMELYON16 setup):
// LayerNorm(in, no affine) -> Linear(in, dim) -> BatchNorm1d(dim) -> ReLU.
// Split into a per-row linear part and the rest, so IPS can apply the wide first layer chunk by
// chunk and complete its gradient by re-reading the inputs (memory independent of the feature width).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <functional>

namespace tessera::models {

struct ProjectorOptions {
  int64_t in_features = 2048;
  int64_t dim = 512;
};

class ProjectorImpl : public torch::nn::Module {
 public:
  explicit ProjectorImpl(const ProjectorOptions& options);
  torch::Tensor forward(const torch::Tensor& x) { return rest(first(x)); }
  torch::Tensor first(const torch::Tensor& x);  // fc(norm(x)), per row
  torch::Tensor rest(const torch::Tensor& y);   // relu(bn(y)), BatchNorm over the rows given
  // Adds this chunk's share of fc's gradients: dW += dy^T norm(x), db += sum(dy). x: (k, in), dy: (k, dim).
  void accumulate_first_grad(const torch::Tensor& x, const torch::Tensor& dy);
  // Eval-mode forward that never changes the module's mode (for no-gradient selection passes).
  std::function<torch::Tensor(const torch::Tensor&)> frozen() const;
  int64_t dim() const { return options_.dim; }
  int64_t in_features() const { return options_.in_features; }

  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};

 private:
  ProjectorOptions options_;
};
TORCH_MODULE(Projector);

}  // namespace tessera::models
