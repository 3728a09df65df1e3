#include "tessera/models/projector.h"

#include <torch/torch.h>

#include "tessera/core/error.h"

namespace tessera::models {

ProjectorImpl::ProjectorImpl(const ProjectorOptions& o) : options_(o) {
  TESSERA_CHECK(o.in_features > 0 && o.dim > 0, "projector sizes must be positive, got ", o.in_features, " -> ", o.dim);
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.in_features}).elementwise_affine(false)));
  fc = register_module("fc", torch::nn::Linear(o.in_features, o.dim));
  bn = register_module("bn", torch::nn::BatchNorm1d(o.dim));
}

torch::Tensor ProjectorImpl::first(const torch::Tensor& x) {
  TESSERA_CHECK(x.dim() == 2 && x.size(1) == options_.in_features, "projector expects (k, ", options_.in_features,
                ") features, got ", x.sizes(), "; set model.in_features to the bags' feature width");
  return fc(norm(x));
}

torch::Tensor ProjectorImpl::rest(const torch::Tensor& y) { return torch::relu(bn(y)); }

void ProjectorImpl::accumulate_first_grad(const torch::Tensor& x, const torch::Tensor& dy) {
  torch::NoGradGuard no_grad;
  const auto xn = norm(x);
  auto& gw = fc->weight.mutable_grad();
  auto& gb = fc->bias.mutable_grad();
  if (!gw.defined()) gw = torch::zeros_like(fc->weight);
  if (!gb.defined()) gb = torch::zeros_like(fc->bias);
  gw.addmm_(dy.t(), xn);
  gb.add_(dy.sum(0));
}

std::function<torch::Tensor(const torch::Tensor&)> ProjectorImpl::frozen() const {
  const auto n = options_.in_features;
  const auto w = fc->weight, b = fc->bias;
  const auto mean = bn->running_mean, var = bn->running_var, gamma = bn->weight, beta = bn->bias;
  const double eps = bn->options.eps();
  return [=](const torch::Tensor& x) {
    TESSERA_CHECK(x.dim() == 2 && x.size(1) == n, "projector expects (k, ", n, ") features, got ", x.sizes());
    const auto y = torch::linear(torch::layer_norm(x, {n}), w, b);
    return torch::relu(torch::batch_norm(y, gamma, beta, mean, var, false, 0.0, eps, false));
  };
}

}  // namespace tessera::models
