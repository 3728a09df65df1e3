// ResNet-18/34/50 with torchvision's parameter names (conv1, bn1, layer1.0.conv1, ..., fc), so
// torchvision state dicts load unchanged. Options: input channels, stages kept (truncation after
// stage 2 or 4), first-stage width, optional fc. forward() returns pooled features (or fc outputs).
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <string>
#include <vector>

#include "tessera/models/backbone.h"

namespace tessera::models {

struct ResNetOptions {
  std::string arch = "resnet18";  // resnet18 | resnet34 | resnet50
  int64_t in_channels = 3;
  int64_t stages = 4;  // 1..4
  int64_t width = 64;  // channels of the first stage
  int64_t num_outputs = 0;  // > 0 adds fc: Linear(features, num_outputs)
  // Recompute the stem in the backward pass instead of saving its activations (less memory, one more
  // stem forward per training step).
  bool recompute_stem = true;
};

// A convolution with its BatchNorm folded in: what an eval-mode conv+bn computes, in one conv.
// On the CPU the weights are pre-reordered for oneDNN and activations stay in its blocked layout
// (1.2x faster than channels_last here); elsewhere weights are channels_last.
struct FoldedConv {
  torch::Tensor weight, bias;
  int64_t stride = 1, padding = 0;
  torch::Tensor operator()(const torch::Tensor& x) const;
  FoldedConv as(c10::ScalarType dtype) const;  // the same conv with weights in dtype (oneDNN layout kept)
};

// A parameter-free snapshot of a ResNet in eval mode with every BatchNorm folded: the fast path for
// no-gradient passes. Rebuild it after the weights change.
struct FoldedResNet {
  struct Block {
    std::vector<FoldedConv> convs;  // 2 (basic) or 3 (bottleneck), ReLU between
    bool has_downsample = false;
    FoldedConv downsample;
  };
  FoldedConv stem;
  std::vector<Block> blocks;
  torch::Tensor fc_weight, fc_bias;  // undefined without fc
  // Inputs are cast to the weights' dtype; outputs come in it.
  torch::Tensor forward(const torch::Tensor& x) const;
  // A copy computing in dtype (bf16 for autocast runs: oneDNN's native bf16 convolutions).
  FoldedResNet as(c10::ScalarType dtype) const;
};

class BasicBlockImpl : public torch::nn::Module {
 public:
  static constexpr int64_t expansion = 1;
  BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride);
  torch::Tensor forward(const torch::Tensor& x);
  FoldedResNet::Block fold() const;

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(BasicBlock);

class BottleneckImpl : public torch::nn::Module {
 public:
  static constexpr int64_t expansion = 4;
  BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride);
  torch::Tensor forward(const torch::Tensor& x);
  FoldedResNet::Block fold() const;

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr}, bn3{nullptr};
  torch::nn::Sequential downsample{nullptr};
};
TORCH_MODULE(Bottleneck);

class ResNetImpl : public BackboneImpl {
 public:
  explicit ResNetImpl(const ResNetOptions& options);
  torch::Tensor features(const torch::Tensor& x) override;
  torch::Tensor project(const torch::Tensor& pooled) override;
  int64_t feature_dim() const override { return feature_dim_; }
  int64_t out_features() const override { return out_features_; }
  // Eval-mode semantics regardless of the module's mode; call under no-grad/inference mode.
  FoldedResNet fold() const;
  // The folded snapshot (in bf16 under bf16 autocast: oneDNN's native bf16 convolutions).
  std::function<torch::Tensor(const torch::Tensor&)> inference_function() override;
  const ResNetOptions& options() const { return options_; }

  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  std::vector<torch::nn::Sequential> layers;  // registered as layer1..layerN
  torch::nn::Linear fc{nullptr};

 private:
  ResNetOptions options_;
  int64_t feature_dim_ = 0, out_features_ = 0;
  bool bottleneck_ = false;
};
TORCH_MODULE(ResNet);

}  // namespace tessera::models
