#include "tessera/models/backbone.h"

#include <torch/torch.h>


namespace tessera::models {

torch::Tensor BackboneImpl::forward(const torch::Tensor& x) {
  // adaptive_avg_pool2d (not mean) keeps the incoming gradient channels_last in the backward pass.
  return project(torch::adaptive_avg_pool2d(features(x), {1, 1}).flatten(1));
}

void BackboneImpl::use_channels_last() {
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) {
    if (p.dim() == 4) p.set_data(p.data().contiguous(at::MemoryFormat::ChannelsLast));
  }
}

void BackboneImpl::freeze_batchnorm(bool on) {
  frozen_bn_ = on;
  train(is_training());
}

void BackboneImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (!frozen_bn_) return;
  for (auto& m : modules(/*include_self=*/false)) {
    if (m->as<torch::nn::BatchNorm2d>() || m->as<torch::nn::BatchNorm1d>()) m->eval();
  }
}

std::function<torch::Tensor(const torch::Tensor&)> BackboneImpl::inference_function() {
  auto self = std::dynamic_pointer_cast<BackboneImpl>(shared_from_this());
  return [self](const torch::Tensor& x) {
    const bool was_training = self->is_training();
    if (was_training) self->train(false);
    auto out = self->forward(x);
    if (was_training) self->train(true);
    return out;
  };
}

torch::Tensor to_channels_last(const torch::Tensor& x) {
  if (x.dim() != 4 || x.suggest_memory_format() == at::MemoryFormat::ChannelsLast) return x;
  return torch::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast)).copy_(x);
}

}  // namespace tessera::models
