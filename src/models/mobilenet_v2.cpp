#include "tessera/models/mobilenet_v2.h"

#include <torch/torch.h>

#include "tessera/core/error.h"
#include "tessera/models/chain.h"

namespace tessera::models {
namespace {

// torchvision's _make_divisible: channels rounded to a multiple of 8, never below 90 % of the request.
int64_t make_divisible(double v, int64_t divisor = 8) {
  int64_t rounded = std::max<int64_t>(divisor, static_cast<int64_t>(v + divisor / 2.0) / divisor * divisor);
  if (rounded < 0.9 * v) rounded += divisor;
  return rounded;
}

// Conv2dNormActivation: conv (no bias) -> BatchNorm -> ReLU6, names 0/1/2.
Chain conv_bn_relu6(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t groups) {
  return Chain(
      torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding((k - 1) / 2).groups(groups).bias(false)),
      torch::nn::BatchNorm2d(out), torch::nn::ReLU6());
}

class InvertedResidualImpl : public torch::nn::Module {
 public:
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expand) : residual_(stride == 1 && in == out) {
    const int64_t hidden = static_cast<int64_t>(std::round(in * static_cast<double>(expand)));
    torch::nn::Sequential layers;
    if (expand != 1) layers->push_back(conv_bn_relu6(in, hidden, 1, 1, 1));
    layers->push_back(conv_bn_relu6(hidden, hidden, 3, stride, hidden));
    layers->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(hidden, out, 1).bias(false)));
    layers->push_back(torch::nn::BatchNorm2d(out));
    conv = register_module("conv", layers);
  }
  torch::Tensor forward(const torch::Tensor& x) { return residual_ ? x + conv->forward(x) : conv->forward(x); }
  torch::nn::Sequential conv{nullptr};

 private:
  bool residual_;
};
TORCH_MODULE(InvertedResidual);

}  // namespace

MobileNetV2Impl::MobileNetV2Impl(const MobileNetV2Options& options) : options_(options) {
  TESSERA_CHECK(options.in_channels > 0 && options.width_mult > 0, "MobileNetV2 needs in_channels > 0 and width_mult > 0");
  // t (expansion), c (channels), n (repeats), s (first stride): torchvision's inverted_residual_setting.
  const int64_t setting[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                                 {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  int64_t in = make_divisible(32 * options.width_mult);
  last_channel_ = make_divisible(1280 * std::max(1.0, options.width_mult));
  torch::nn::Sequential f;
  f->push_back(conv_bn_relu6(options.in_channels, in, 3, 2, 1));
  for (const auto& row : setting) {
    const int64_t out = make_divisible(row[1] * options.width_mult);
    for (int64_t i = 0; i < row[2]; ++i) {
      f->push_back(InvertedResidual(in, out, i == 0 ? row[3] : 1, row[0]));
      in = out;
    }
  }
  f->push_back(conv_bn_relu6(in, last_channel_, 1, 1, 1));
  body = register_module("features", f);
  if (options.num_outputs > 0) {
    classifier = register_module(
        "classifier", torch::nn::Sequential(torch::nn::Dropout(options.dropout), torch::nn::Linear(last_channel_, options.num_outputs)));
  }
  // torchvision's initialisation.
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* c = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      torch::nn::init::ones_(bn->weight);
      torch::nn::init::zeros_(bn->bias);
    } else if (auto* fc = m->as<torch::nn::Linear>()) {
      torch::nn::init::normal_(fc->weight, 0, 0.01);
      torch::nn::init::zeros_(fc->bias);
    }
  }
}

torch::Tensor MobileNetV2Impl::features(const torch::Tensor& x) {
  const bool channels_last = body->parameters().front().is_contiguous(at::MemoryFormat::ChannelsLast);
  return body->forward(channels_last ? to_channels_last(x) : x);
}

torch::Tensor MobileNetV2Impl::project(const torch::Tensor& pooled) {
  return classifier ? classifier->forward(pooled) : pooled;
}

}  // namespace tessera::models
