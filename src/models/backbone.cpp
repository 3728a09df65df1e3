#include "tessera/models/backbone.h"

#include <torch/torch.h>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/models/mobilenet_v2.h"
#include "tessera/models/resnet.h"
#include "tessera/models/state_dict.h"

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

torch::Tensor to_channels_last(const torch::Tensor& x) {
  if (x.dim() != 4 || x.suggest_memory_format() == at::MemoryFormat::ChannelsLast) return x;
  return torch::empty(x.sizes(), x.options().memory_format(at::MemoryFormat::ChannelsLast)).copy_(x);
}

BackbonePtr make_backbone(const BackboneOptions& o) {
  if (o.arch == "mobilenet_v2") {
    MobileNetV2Options m;
    m.in_channels = o.in_channels;
    m.width_mult = o.width_mult;
    m.num_outputs = o.out_features;
    auto net = std::make_shared<MobileNetV2Impl>(m);
    net->freeze_batchnorm(o.freeze_bn);
    return net;
  }
  TESSERA_CHECK(o.arch == "resnet18" || o.arch == "resnet34" || o.arch == "resnet50", "unknown backbone '", o.arch,
                "'; use resnet18, resnet34, resnet50 or mobilenet_v2");
  ResNetOptions r;
  r.arch = o.arch;
  r.in_channels = o.in_channels;
  r.stages = o.stages;
  r.width = o.width;
  r.num_outputs = o.out_features;
  r.recompute_stem = o.recompute_stem;
  auto net = std::make_shared<ResNetImpl>(r);
  net->freeze_batchnorm(o.freeze_bn);
  return net;
}

int64_t load_backbone_weights(BackboneImpl& backbone, const std::string& path) {
  auto dict = read_state_dict(path);
  std::map<std::string, torch::Tensor> own;
  for (const auto& p : backbone.named_parameters()) own[p.key()] = p.value();
  for (auto it = dict.begin(); it != dict.end();) {
    const auto mine = own.find(it->first);
    const bool replaced_head = mine != own.end() && mine->second.dim() <= 2 && mine->second.sizes() != it->second.sizes();
    it = replaced_head ? dict.erase(it) : std::next(it);
  }
  const auto report = load_state_dict(backbone, dict, /*strict=*/false);
  TESSERA_CHECK(!report.loaded.empty(), "no entry of '", path, "' matches the backbone; is it a torchvision state dict",
                " of the same architecture?");
  log::info("loaded {} backbone tensors from {} ({} kept fresh, {} unused)", report.loaded.size(), path,
            report.missing.size(), report.unexpected.size());
  return static_cast<int64_t>(report.loaded.size());
}

}  // namespace tessera::models
