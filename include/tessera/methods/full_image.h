// The full-image baselines PatchGD is measured against. GD: backbone with Linear(F, classes) on the
// whole image, optionally downscaled first. GD-extended: the same backbone and PatchGD head as
// PatchGD, with Z computed from the whole-image feature map (pooled to the patch grid, then the
// backbone's Linear(F, s) per cell), so it has exactly PatchGD's parameters.
#pragma once
#include "tessera/methods/method.h"
#include "tessera/models/patchgd_net.h"

namespace tessera {
struct Config;
}

namespace tessera::methods {

struct FullImageOptions {
  int64_t image_size = 0;  // > 0: resize (area) to image_size x image_size before the backbone
};

// The registry's entries for GD and GD-extended.
MethodInfo gd_method();
MethodInfo gd_extended_method();

class FullImage final : public Method {
 public:
  FullImage(models::PatchGdNet net, std::vector<Task> tasks, FullImageOptions options, torch::Device device);
  static std::unique_ptr<FullImage> from_config(const Config& config, const std::vector<Task>& tasks);

  std::string name() const override { return net_->head ? "gd_extended" : "gd"; }
  torch::nn::Module& module() override { return *net_; }
  std::vector<Task> tasks() const override { return tasks_; }
  using Method::train_step;
  StepResult train_step(data::Batch batch, StepContext& context) override;
  void forward_for_statistics(const data::Batch& batch) override;
  TaskTensors predict(const data::Batch& batch) override;
  torch::nn::Module& encoder() override { return *net_->backbone; }

  torch::Tensor logits(const torch::Tensor& images);  // in the module's current mode
  models::PatchGdNet net() const { return net_; }

 private:
  models::PatchGdNet net_;
  std::vector<Task> tasks_;
  FullImageOptions options_;
  torch::Device device_;
};

}  // namespace tessera::methods
