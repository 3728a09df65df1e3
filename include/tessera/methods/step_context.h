// The one place where a training step meets the optimiser: every method's train_step calls only
// zero_grad, backward, gradients_complete and step on it. Loss scaling (mixed precision) and gradient
// reduction (data-parallel training) belong here, so each lands in this file alone.
#pragma once
#include <torch/optim/optimizer.h>

namespace tessera::methods {

class StepContext {
 public:
  // Whether backward() leaves the gradients final, or the method completes some after it (the
  // streamed feature projector adds its first layer's weight gradient after the backward pass).
  enum class Gradients { complete, pending };

  explicit StepContext(torch::optim::Optimizer& optimizer) : optimizer_(optimizer) {}
  virtual ~StepContext() = default;

  void zero_grad();
  void backward(const torch::Tensor& loss, Gradients gradients = Gradients::complete);
  // The point after which every gradient of this step is final (reductions may start here).
  void gradients_complete();
  // optimizer.step() on complete gradients; counts the steps taken.
  void step();

  int64_t steps_taken() const { return steps_; }
  torch::optim::Optimizer& optimizer() { return optimizer_; }

 private:
  torch::optim::Optimizer& optimizer_;
  bool pending_ = false;
  int64_t steps_ = 0;
};

}  // namespace tessera::methods
