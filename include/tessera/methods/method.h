// The interface every training method implements (IPS, PatchGD, full-image GD), so the
// trainer, checkpoints, metrics and CLI never depend on a particular method.
#pragma once
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <functional>
#include <memory>
#include <string>

#include "tessera/core/precision.h"
#include "tessera/core/task.h"
#include "tessera/data/dataset.h"

namespace tessera {
struct Config;
}

namespace tessera::methods {

class StepContext;

struct StepResult {
  double loss = 0;
  TaskTensors outputs;  // per task, after the activation, detached, on the CPU
};

class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;
  virtual torch::nn::Module& module() = 0;
  virtual std::vector<Task> tasks() const = 0;
  // One training step on a batch; the method decides how many optimiser steps it takes inside, each
  // through the context (backward, gradients complete, step). The batch is taken by value so a method
  // can free the images as soon as it no longer needs them.
  virtual StepResult train_step(data::Batch batch, StepContext& context) = 0;
  // The same with a plain optimiser (a default context): for tests and hand-written loops.
  StepResult train_step(data::Batch batch, torch::optim::Optimizer& optimizer);
  // The forward passes of a training step in training mode, without gradients or an optimiser step,
  // so BatchNorm layers see the batches training shows them (train/precise_bn.h); deterministic.
  virtual void forward_for_statistics(const data::Batch& batch) = 0;
  // Eval mode, no gradients, deterministic. Outputs per task on the CPU.
  virtual TaskTensors predict(const data::Batch& batch) = 0;
  // The module pretrained weights (model.weights, model.init_from) go into.
  virtual torch::nn::Module& encoder() = 0;
  // The prediction for image 0 of the batch with each patch's contribution, for pictures: the
  // patches' top-left corners and one score each (higher = more important), computed in the same pass
  // as the outputs. Empty when the method has none.
  struct PatchScores {
    TaskTensors outputs;               // as predict() gives them for that image
    torch::Tensor rows, cols, scores;  // (K) int64, int64, float
    int64_t patch_h = 0, patch_w = 0;
    bool outline = true;               // outline the patches (a selection) or fill them (a full grid)
  };
  virtual PatchScores patch_scores(const data::Batch& batch) { return {}; }
  // The same for one bag (a slide's patches or its feature rows): the prediction, a score for every
  // patch of the bag (IPS: its attention) and the patches the method selects. Undefined scores when
  // the method has none (methods that do not train on bags).
  struct BagScores {
    TaskTensors outputs;                 // as predict() gives them for that bag
    torch::Tensor scores, selected;      // (N) float, (N) bool
  };
  virtual BagScores bag_scores(const data::PatchBagPtr& bag) { return {}; }

  // train.precision: every forward pass of the method (gradient and no-gradient) runs under autocast
  // in this precision; the step context scales fp16 losses.
  void set_precision(Precision p) { precision_ = p; }
  Precision precision() const { return precision_; }

 protected:
  // Opened at the top of every public entry point that runs the model (nesting is harmless).
  AutocastGuard autocast() const { return AutocastGuard(precision_); }

 private:
  Precision precision_ = Precision::fp32;
};

// A method as the registry lists it (train/registry.h): its capabilities and its factory.
struct MethodInfo {
  std::string name;
  std::string summary;
  std::vector<std::string> config_sections;  // its config sections besides model (e.g. "ips"): the run spec keeps these
  std::vector<std::string> inputs;   // input kinds it trains on: image | slide | features
  bool single_softmax_task = false;  // trains exactly one softmax task
  // Smallest batch a training step of this configuration supports.
  std::function<int64_t(const Config&)> min_batch_size = [](const Config&) { return int64_t{1}; };
  std::string memory_knobs;          // settings that shrink a step's memory, for budget errors
  // Settings that trade compute for memory (config key -> value), cheapest first; the planner and the
  // budget check try them in order (IPS: ips.grad_chunk, then block recomputation). Empty: none.
  using Settings = std::vector<std::pair<std::string, std::string>>;
  std::function<std::vector<Settings>(const Config&)> memory_settings;
  std::string picture;               // what predict draws: "selection" | "patch grid" | "" (none)
  bool plans_sampling_fraction = false;  // the planner may lower patchgd.q when no batch fits
  bool plans_image_size = false;         // the planner may downscale the image (gd.image_size) when no batch fits
  bool any_image_size = false;           // predicts images of any size (not only the training size)
  // Step k runs at the schedule's LR of k + 1, as the IPS reference calls its schedule (its first step
  // is not at LR 0); the PatchGD reference starts at 0.
  bool schedule_from_one = false;
  std::function<std::unique_ptr<Method>(const Config&, const std::vector<Task>&)> make;
  std::function<void(const Config&)> validate;  // method-specific checks; may be empty
  // Image inputs: checks against the patch grid of one data.height x data.width image (e.g. IPS's M
  // against the patch count), run before training (train/preflight.h); may be empty.
  std::function<void(const Config&, const data::PatchGrid&)> validate_grid;
};

// Mean over tasks of NLL(log(p + 1e-6)) for softmax tasks and BCE for sigmoid tasks (the IPS
// reference's loss). outputs are post-activation probabilities.
torch::Tensor multitask_loss(const TaskTensors& outputs, const TaskTensors& labels, const std::vector<Task>& tasks);

// Softmax cross-entropy of one task's logits, with the NaN check; for single-task methods.
torch::Tensor checked_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels, const std::string& method);

// Throws a clear error when a loss is NaN or infinite, before any weights are touched.
void check_finite_loss(const torch::Tensor& loss, const std::string& method);

}  // namespace tessera::methods
