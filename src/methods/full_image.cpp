#include "tessera/methods/full_image.h"

#include <torch/torch.h>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/core/runtime.h"
#include "tessera/methods/patchgd.h"
#include "tessera/methods/step_context.h"

namespace tessera::methods {

FullImage::FullImage(models::PatchGdNet net, std::vector<Task> tasks, FullImageOptions options, torch::Device device)
    : net_(std::move(net)), tasks_(std::move(tasks)), options_(options), device_(device) {
  TESSERA_CHECK(options_.image_size >= 0, "gd.image_size must be >= 0");
  net_->to(device_);
  net_->backbone->use_channels_last();
}

std::unique_ptr<FullImage> FullImage::from_config(const Config& c, const std::vector<Task>& tasks) {
  FullImageOptions o;
  o.image_size = c.gd.image_size;
  return std::make_unique<FullImage>(make_patchgd_net(c, tasks, c.train.method == "gd_extended"), tasks, o,
                                     runtime::device_from_name(c.train.device));
}

torch::Tensor FullImage::logits(const torch::Tensor& input) {
  TESSERA_CHECK(input.dim() == 4, "full-image GD expects a batch of images (B, C, H, W), got ", input.sizes());
  auto x = input;
  if (options_.image_size > 0 && (x.size(2) != options_.image_size || x.size(3) != options_.image_size)) {
    x = torch::adaptive_avg_pool2d(x, {options_.image_size, options_.image_size});  // area downscaling
  }
  if (!net_->head) return net_->backbone->forward(x);
  const auto& h = net_->head->options();
  const auto cells = torch::adaptive_avg_pool2d(net_->backbone->features(x), {h.rows, h.cols});  // (B, F, r, c)
  const auto z = net_->backbone->project(cells.permute({0, 2, 3, 1})).permute({0, 3, 1, 2});
  return net_->head->forward(z);
}

StepResult FullImage::train_step(data::Batch batch, StepContext& context) {
  const auto precision_scope = autocast();
  const auto images = batch.images.to(device_);
  batch.images = torch::Tensor();
  const auto& task = tasks_[0];
  net_->train();
  context.zero_grad();
  const auto out = logits(images);
  const auto loss = checked_cross_entropy(out, batch.labels.at(task.name), name());
  context.backward(loss);
  context.step();
  StepResult result;
  result.loss = loss.item<double>();
  result.outputs[task.name] = torch::softmax(out.detach(), 1, torch::kFloat).to(torch::kCPU);
  return result;
}

void FullImage::forward_for_statistics(const data::Batch& batch) {
  const auto precision_scope = autocast();
  torch::NoGradGuard no_grad;
  net_->train();
  logits(batch.images.to(device_));
}

TaskTensors FullImage::predict(const data::Batch& batch) {
  const auto precision_scope = autocast();
  c10::InferenceMode guard;
  net_->eval();
  return {{tasks_[0].name, torch::softmax(logits(batch.images.to(device_)), 1, torch::kFloat).to(torch::kCPU)}};
}

namespace {
MethodInfo full_image_method(bool extended) {
  MethodInfo m;
  m.name = extended ? "gd_extended" : "gd";
  m.config_sections = extended ? std::vector<std::string>{"gd", "patchgd"} : std::vector<std::string>{"gd"};
  m.summary = extended ? "full-image baseline with PatchGD's backbone and head" : "full-image baseline: backbone + Linear";
  m.inputs = {"image"};
  m.single_softmax_task = true;
  if (extended) m.min_batch_size = patchgd_head_min_batch;  // the head's BatchNorm, if it has one
  m.memory_knobs = "train.batch_size or gd.image_size (downscaling)";
  m.plans_image_size = true;
  m.make = [](const Config& c, const std::vector<Task>& tasks) -> std::unique_ptr<Method> {
    return FullImage::from_config(c, tasks);
  };
  m.validate = [](const Config& c) {
    TESSERA_CHECK(c.model.encoder != "projector", "full-image GD encodes images; model.encoder projector is for feature bags");
  };
  return m;
}
}  // namespace

MethodInfo gd_method() { return full_image_method(false); }
MethodInfo gd_extended_method() { return full_image_method(true); }

}  // namespace tessera::methods
