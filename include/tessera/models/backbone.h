// A backbone turns images into feature maps and feature maps into one vector per image. ResNet,
// MobileNetV2 and the ViT implement it; methods build it through the encoder registry
// (encoder_registry.h) so they never name an architecture.
#pragma once
#include <torch/nn/module.h>

#include <functional>
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
  // The eval-mode forward as a function for no-gradient passes (IPS's selection, feature extraction),
  // valid until the weights change. The default runs forward() in eval mode; ResNets fold BatchNorm.
  virtual std::function<torch::Tensor(const torch::Tensor&)> inference_function();

 private:
  bool frozen_bn_ = false;
};
using BackbonePtr = std::shared_ptr<BackboneImpl>;

struct BackboneOptions {
  std::string arch = "resnet50";  // a registered encoder or a model folder (encoder_registry.h)
  std::string args;           // JSON object of architecture arguments over the encoder's (model.encoder_args)
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

// The encoder options.arch names (resolved through the registry; defined in encoder_registry.cpp).
BackbonePtr make_backbone(const BackboneOptions& options);

}  // namespace tessera::models
