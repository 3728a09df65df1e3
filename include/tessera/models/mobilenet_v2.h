// MobileNetV2 with torchvision's module layout and parameter names (features.N..., classifier.1), so
// torchvision state dicts load unchanged. Options: input channels, width multiplier, output size of the
// final Linear (PatchGD replaces Linear(1280, 1000) by Linear(1280, s)).
#pragma once
#include <torch/nn/modules/container/sequential.h>

#include "tessera/models/backbone.h"

namespace tessera::models {

struct MobileNetV2Options {
  int64_t in_channels = 3;
  double width_mult = 1.0;
  int64_t num_outputs = 1000;  // 0: no classifier, outputs the pooled 1280-d features
  double dropout = 0.2;
};

class MobileNetV2Impl : public BackboneImpl {
 public:
  explicit MobileNetV2Impl(const MobileNetV2Options& options);
  torch::Tensor features(const torch::Tensor& x) override;
  torch::Tensor project(const torch::Tensor& pooled) override;
  int64_t feature_dim() const override { return last_channel_; }
  int64_t out_features() const override { return options_.num_outputs > 0 ? options_.num_outputs : last_channel_; }

  torch::nn::Sequential body{nullptr};        // registered as "features"
  torch::nn::Sequential classifier{nullptr};  // Dropout, Linear

 private:
  MobileNetV2Options options_;
  int64_t last_channel_ = 1280;
};

}  // namespace tessera::models
