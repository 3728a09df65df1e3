// A backbone turns images into feature maps and feature maps into one vector per image. ResNet and
// MobileNetV2 implement it; methods use the factory so they never name an architecture.
#pragma once
#include <torch/nn/module.h>

#include <memory>
#include <string>

namespace tessera::models {

class BackboneImpl : public torch::nn::Module {
 public:
  // images (B, C, H, W) -> feature map (B, F, h, w) in the module's current mode.
  virtual torch::Tensor features(const torch::Tensor& x) = 0;
  // pooled features (..., F) -> outputs (..., out_features()): the replaced fc/classifier, or identity.
  virtual torch::Tensor project(const torch::Tensor& pooled) = 0;
  virtual int64_t feature_dim() const = 0;
  virtual int64_t out_features() const = 0;
  // Stores 4-D weights channels_last (faster convolutions on CPU and GPU); inputs follow. Loading a
  // state dict afterwards keeps the layout (it copies into the existing tensors).
  void use_channels_last();
  // Frozen BatchNorm: every BatchNorm layer stays in eval mode (running statistics, never updated)
  // whatever train() says, so a sample's features never depend on the other samples of its batch.
  void freeze_batchnorm(bool on);
  bool batchnorm_frozen() const { return frozen_bn_; }
  void train(bool on = true) override;

  // project(global average pool(features(x))): one vector per image.
  virtual torch::Tensor forward(const torch::Tensor& x);

 private:
  bool frozen_bn_ = false;
};
using BackbonePtr = std::shared_ptr<BackboneImpl>;

struct BackboneOptions {
  std::string arch = "resnet50";  // resnet18 | resnet34 | resnet50 | mobilenet_v2
  int64_t in_channels = 3;
  int64_t stages = 4;         // ResNet stages kept
  int64_t width = 64;         // ResNet first-stage channels
  double width_mult = 1.0;    // MobileNetV2 width multiplier
  int64_t out_features = 0;   // > 0: final Linear(F, out_features) named as torchvision's (fc / classifier.1)
  bool recompute_stem = true; // ResNet: trade one stem forward for the stem's saved activations
  bool freeze_bn = false;     // BatchNorm layers always in eval mode (BackboneImpl::freeze_batchnorm)
};

// x with channels_last strides (also for one channel, where contiguous() keeps NCHW strides and every
// later layer would fall back to the slower layout).
torch::Tensor to_channels_last(const torch::Tensor& x);

BackbonePtr make_backbone(const BackboneOptions& options);

// Loads a torchvision state dict (torch.save) into a backbone; entries of a replaced final layer whose
// shape differs (fc 1000 -> s) are left at their fresh initialisation. Returns the number loaded.
int64_t load_backbone_weights(BackboneImpl& backbone, const std::string& path);

}  // namespace tessera::models
