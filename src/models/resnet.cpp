#include "tessera/models/resnet.h"

#include <torch/torch.h>

#include "tessera/core/error.h"
#include "tessera/core/precision.h"

namespace tessera::models {
namespace F = torch::nn::functional;
namespace {

torch::nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t padding) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(padding).bias(false));
}

bool use_onednn(const torch::Tensor& t) { return t.device().is_cpu() && at::hasMKLDNN() && t.scalar_type() == torch::kFloat; }

FoldedConv fold_conv_bn(const torch::nn::Conv2d& c, const torch::nn::BatchNorm2d& bn) {
  torch::NoGradGuard no_grad;
  const auto scale = bn->weight / torch::sqrt(bn->running_var + bn->options.eps());
  FoldedConv f;
  f.weight = c->weight * scale.view({-1, 1, 1, 1});
  f.bias = bn->bias - bn->running_mean * scale;
  f.stride = c->options.stride()->at(0);
  f.padding = c->weight.size(2) / 2;  // torchvision ResNet convs are all "same"-padded
  if (use_onednn(f.weight)) {
    f.weight = at::mkldnn_reorder_conv2d_weight(f.weight.to_mkldnn(), {f.padding, f.padding}, {f.stride, f.stride},
                                                {1, 1}, 1);
    f.bias = f.bias.to_mkldnn();
  } else {
    f.weight = f.weight.contiguous(at::MemoryFormat::ChannelsLast);
  }
  return f;
}

torch::nn::Sequential make_downsample(int64_t in, int64_t out, int64_t stride) {
  if (stride == 1 && in == out) return nullptr;
  return torch::nn::Sequential(conv(in, out, 1, stride, 0), torch::nn::BatchNorm2d(out));
}

FoldedConv fold_downsample(const torch::nn::Sequential& ds) {
  return fold_conv_bn(torch::nn::Conv2d(std::dynamic_pointer_cast<torch::nn::Conv2dImpl>(ds->ptr(0))),
                      torch::nn::BatchNorm2d(std::dynamic_pointer_cast<torch::nn::BatchNorm2dImpl>(ds->ptr(1))));
}

// The stem (conv1 -> bn1 -> ReLU -> max-pool) in training mode, recomputed in the backward pass: its
// saved activations (conv output, ReLU output, int64 pooling indices) are ~12x the size of its output
// and about half of a ResNet-18's training activations on 50x50 patches. Costs one stem forward.
class RecomputedStem : public torch::autograd::Function<RecomputedStem> {
 public:
  static torch::Tensor run(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bn_w,
                           const torch::Tensor& bn_b, const torch::Tensor& mean, const torch::Tensor& var,
                           double momentum, double eps) {
    auto y = torch::conv2d(x, w, {}, 2, w.size(2) / 2);
    y = torch::batch_norm(y, bn_w, bn_b, mean, var, /*training=*/true, momentum, eps, /*cudnn_enabled=*/true);
    return torch::max_pool2d(y.relu_(), 3, 2, 1);
  }

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               const torch::Tensor& bn_w, const torch::Tensor& bn_b, torch::Tensor running_mean,
                               torch::Tensor running_var, double momentum, double eps) {
    ctx->save_for_backward({x, w, bn_w, bn_b});
    ctx->saved_data["eps"] = eps;
    auto out = run(x, w, bn_w, bn_b, running_mean, running_var, momentum, eps);
    // The recomputation repeats the forward's autocast precision (backward itself runs without autocast),
    // so a bf16 step recomputes a bf16 stem, not one twice its size.
    const auto dtype = out.scalar_type();
    ctx->saved_data["precision"] = static_cast<int64_t>(dtype == torch::kBFloat16 ? Precision::bf16
                                                        : dtype == torch::kHalf   ? Precision::fp16
                                                                                  : Precision::fp32);
    return out;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_output) {
    const auto saved = ctx->get_saved_variables();
    torch::AutoGradMode enable_grad(true);
    AutocastGuard precision(static_cast<Precision>(ctx->saved_data["precision"].toInt()));
    std::vector<torch::Tensor> leaves;
    for (const auto& t : saved) leaves.push_back(t.detach().requires_grad_(t.requires_grad()));
    // Same batch statistics as the forward pass; the running statistics were updated there already.
    const auto out = run(leaves[0], leaves[1], leaves[2], leaves[3], {}, {}, 0.0, ctx->saved_data["eps"].toDouble());
    std::vector<torch::Tensor> inputs;
    for (const auto& l : leaves) {
      if (l.requires_grad()) inputs.push_back(l);
    }
    const auto grads = torch::autograd::grad({out}, inputs, {grad_output[0]});
    torch::autograd::tensor_list result;
    size_t next = 0;
    for (const auto& l : leaves) result.push_back(l.requires_grad() ? grads[next++] : torch::Tensor());
    result.resize(8);  // running stats, momentum and eps get no gradient
    return result;
  }
};

}  // namespace

torch::Tensor FoldedConv::operator()(const torch::Tensor& x) const {
  if (weight.is_mkldnn()) return at::mkldnn_convolution(x, weight, bias, {padding, padding}, {stride, stride}, {1, 1}, 1);
  return torch::conv2d(x, weight, bias, stride, padding);
}

FoldedConv FoldedConv::as(c10::ScalarType dtype) const {
  torch::NoGradGuard no_grad;
  FoldedConv f = *this;
  if (weight.is_mkldnn()) {
    f.weight = at::mkldnn_reorder_conv2d_weight(weight.to_dense().to(dtype).to_mkldnn(), {padding, padding},
                                                {stride, stride}, {1, 1}, 1);
    f.bias = bias.to_dense().to(dtype).to_mkldnn();
  } else {
    f.weight = weight.to(dtype);
    f.bias = bias.to(dtype);
  }
  return f;
}

FoldedResNet FoldedResNet::as(c10::ScalarType dtype) const {
  FoldedResNet f = *this;
  f.stem = stem.as(dtype);
  for (auto& b : f.blocks) {
    for (auto& c : b.convs) c = c.as(dtype);
    if (b.has_downsample) b.downsample = b.downsample.as(dtype);
  }
  if (fc_weight.defined()) {
    f.fc_weight = fc_weight.to(dtype);
    f.fc_bias = fc_bias.to(dtype);
  }
  return f;
}

torch::Tensor FoldedResNet::forward(const torch::Tensor& input) const {
  const bool onednn = stem.weight.is_mkldnn();
  const auto in = input.to(stem.weight.scalar_type());
  auto x = stem(onednn ? in.contiguous().to_mkldnn() : to_channels_last(in)).relu_();
  x = torch::max_pool2d(x, 3, 2, 1);
  for (const auto& block : blocks) {
    auto y = x;
    for (size_t i = 0; i < block.convs.size(); ++i) {
      y = block.convs[i](y);
      if (i + 1 < block.convs.size()) y.relu_();
    }
    y.add_(block.has_downsample ? block.downsample(x) : x);
    x = y.relu_();
  }
  x = torch::adaptive_avg_pool2d(x, {1, 1});
  if (onednn) x = x.to_dense();
  x = x.flatten(1);
  if (fc_weight.defined()) x = torch::linear(x, fc_weight, fc_bias);
  return x;
}

BasicBlockImpl::BasicBlockImpl(int64_t in_planes, int64_t planes, int64_t stride) {
  conv1 = register_module("conv1", conv(in_planes, planes, 3, stride, 1));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes));
  conv2 = register_module("conv2", conv(planes, planes, 3, 1, 1));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes));
  downsample = make_downsample(in_planes, planes, stride);
  if (downsample) register_module("downsample", downsample);
}

torch::Tensor BasicBlockImpl::forward(const torch::Tensor& x) {
  // In-place ReLUs after BatchNorm (as torchvision): BatchNorm's backward does not need its output.
  auto y = bn1(conv1(x)).relu_();
  y = bn2(conv2(y));
  return (y + (downsample ? downsample->forward(x) : x)).relu_();
}

FoldedResNet::Block BasicBlockImpl::fold() const {
  FoldedResNet::Block b;
  b.convs = {fold_conv_bn(conv1, bn1), fold_conv_bn(conv2, bn2)};
  b.has_downsample = static_cast<bool>(downsample);
  if (b.has_downsample) b.downsample = fold_downsample(downsample);
  return b;
}

BottleneckImpl::BottleneckImpl(int64_t in_planes, int64_t planes, int64_t stride) {
  conv1 = register_module("conv1", conv(in_planes, planes, 1, 1, 0));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(planes));
  conv2 = register_module("conv2", conv(planes, planes, 3, stride, 1));
  bn2 = register_module("bn2", torch::nn::BatchNorm2d(planes));
  conv3 = register_module("conv3", conv(planes, planes * expansion, 1, 1, 0));
  bn3 = register_module("bn3", torch::nn::BatchNorm2d(planes * expansion));
  downsample = make_downsample(in_planes, planes * expansion, stride);
  if (downsample) register_module("downsample", downsample);
}

torch::Tensor BottleneckImpl::forward(const torch::Tensor& x) {
  auto y = bn1(conv1(x)).relu_();
  y = bn2(conv2(y)).relu_();
  y = bn3(conv3(y));
  return (y + (downsample ? downsample->forward(x) : x)).relu_();
}

FoldedResNet::Block BottleneckImpl::fold() const {
  FoldedResNet::Block b;
  b.convs = {fold_conv_bn(conv1, bn1), fold_conv_bn(conv2, bn2), fold_conv_bn(conv3, bn3)};
  b.has_downsample = static_cast<bool>(downsample);
  if (b.has_downsample) b.downsample = fold_downsample(downsample);
  return b;
}

ResNetImpl::ResNetImpl(const ResNetOptions& options) : options_(options) {
  std::vector<int64_t> blocks;
  if (options.arch == "resnet18") blocks = {2, 2, 2, 2};
  else if (options.arch == "resnet34") blocks = {3, 4, 6, 3};
  else if (options.arch == "resnet50") blocks = {3, 4, 6, 3}, bottleneck_ = true;
  else fail("unknown ResNet '", options.arch, "'; use resnet18, resnet34 or resnet50");
  TESSERA_CHECK(options.stages >= 1 && options.stages <= 4, "ResNet stages must be 1..4, got ", options.stages);
  TESSERA_CHECK(options.in_channels > 0 && options.width > 0, "ResNet channels and width must be positive");

  conv1 = register_module("conv1", conv(options.in_channels, options.width, 7, 2, 3));
  bn1 = register_module("bn1", torch::nn::BatchNorm2d(options.width));
  const int64_t expansion = bottleneck_ ? BottleneckImpl::expansion : BasicBlockImpl::expansion;
  int64_t in_planes = options.width;
  for (int64_t s = 0; s < options.stages; ++s) {
    const int64_t planes = options.width << s;
    torch::nn::Sequential layer;
    for (int64_t b = 0; b < blocks[s]; ++b) {
      const int64_t stride = (b == 0 && s > 0) ? 2 : 1;
      if (bottleneck_) layer->push_back(Bottleneck(in_planes, planes, stride));
      else layer->push_back(BasicBlock(in_planes, planes, stride));
      in_planes = planes * expansion;
    }
    layers.push_back(register_module("layer" + std::to_string(s + 1), layer));
  }
  feature_dim_ = out_features_ = in_planes;
  if (options.num_outputs > 0) {
    fc = register_module("fc", torch::nn::Linear(in_planes, options.num_outputs));
    out_features_ = options.num_outputs;
  }
  // torchvision's initialisation.
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* c = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(c->weight, 0.0, torch::kFanOut, torch::kReLU);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      torch::nn::init::ones_(bn->weight);
      torch::nn::init::zeros_(bn->bias);
    }
  }
}

torch::Tensor ResNetImpl::features(const torch::Tensor& input) {
  const bool channels_last = layers.front()->parameters().front().is_contiguous(at::MemoryFormat::ChannelsLast);
  const auto in = channels_last ? to_channels_last(input) : input;
  torch::Tensor x;
  // bn1, not the module: a frozen BatchNorm stays in eval mode while the ResNet trains.
  if (options_.recompute_stem && bn1->is_training() && torch::GradMode::is_enabled()) {
    const auto& o = bn1->options;
    bn1->num_batches_tracked += 1;
    x = RecomputedStem::apply(in, conv1->weight, bn1->weight, bn1->bias, bn1->running_mean, bn1->running_var,
                              o.momentum().value(), o.eps());
  } else {
    x = torch::max_pool2d(bn1(conv1(in)).relu_(), 3, 2, 1);
  }
  for (auto& layer : layers) x = layer->forward(x);
  return x;
}

torch::Tensor ResNetImpl::project(const torch::Tensor& pooled) { return fc ? fc(pooled) : pooled; }

FoldedResNet ResNetImpl::fold() const {
  FoldedResNet f;
  f.stem = fold_conv_bn(conv1, bn1);
  for (const auto& layer : layers) {
    for (const auto& child : layer->children()) {
      if (auto basic = std::dynamic_pointer_cast<BasicBlockImpl>(child)) f.blocks.push_back(basic->fold());
      else f.blocks.push_back(std::dynamic_pointer_cast<BottleneckImpl>(child)->fold());
    }
  }
  if (fc) {
    f.fc_weight = fc->weight.detach();
    f.fc_bias = fc->bias.detach();
  }
  return f;
}

std::function<torch::Tensor(const torch::Tensor&)> ResNetImpl::inference_function() {
  torch::NoGradGuard no_grad;
  auto folded = std::make_shared<FoldedResNet>(fold());
  // Under bf16 autocast the selection runs oneDNN's bf16 convolutions (autocast does not reach them).
  if (cpu_autocast_dtype() == torch::kBFloat16) *folded = folded->as(torch::kBFloat16);
  return [folded](const torch::Tensor& x) { return folded->forward(x); };
}

}  // namespace tessera::models
