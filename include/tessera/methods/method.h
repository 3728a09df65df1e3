// The interface every training method implements (IPS, PatchGD, full-image GD), so the
// trainer, checkpoints, metrics and CLI never depend on a particular method.
#pragma once
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <memory>
#include <string>

#include "tessera/core/task.h"
#include "tessera/data/dataset.h"

namespace tessera::methods {

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
  // One training step on a batch; the method decides how many optimiser steps it takes inside. The
  // batch is taken by value so a method can free the images as soon as it no longer needs them.
  virtual StepResult train_step(data::Batch batch, torch::optim::Optimizer& optimizer) = 0;
  // Eval mode, no gradients, deterministic. Outputs per task on the CPU.
  virtual TaskTensors predict(const data::Batch& batch) = 0;
  // The settings that shrink a step's memory, named for the error raised when a budget is exceeded.
  virtual std::string memory_knobs() const = 0;
  // Smallest batch a training step supports (BatchNorm over single values is undefined).
  virtual int64_t min_batch_size() const { return 1; }
};

// Mean over tasks of NLL(log(p + 1e-6)) for softmax tasks and BCE for sigmoid tasks (the IPS
// reference's loss). outputs are post-activation probabilities.
torch::Tensor multitask_loss(const TaskTensors& outputs, const TaskTensors& labels, const std::vector<Task>& tasks);

// Softmax cross-entropy of one task's logits, with the NaN check; for single-task methods.
torch::Tensor checked_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels, const std::string& method);

// Throws a clear error when a loss is NaN or infinite, before any weights are touched.
void check_finite_loss(const torch::Tensor& loss, const std::string& method);

}  // namespace tessera::methods
