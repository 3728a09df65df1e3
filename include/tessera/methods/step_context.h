// The one place where a training step meets the optimiser: every method's train_step calls only
// zero_grad, backward / accumulate, gradients_complete and step on it. Loss scaling (fp16) and gradient
// averaging across data-parallel ranks live here, so methods never see either.
#pragma once
#include <torch/optim/optimizer.h>

namespace tessera::methods {

class GradientReducer;
class LossScaler;

class StepContext {
 public:
  // Whether backward() leaves the gradients final, or the method completes some after it (the
  // streamed feature projector adds its first layer's weight gradient after the backward pass).
  enum class Gradients { complete, pending };

  // scaler: fp16 loss scaling (null: none). reducer: data-parallel averaging (null: one process).
  explicit StepContext(torch::optim::Optimizer& optimizer, LossScaler* scaler = nullptr,
                       GradientReducer* reducer = nullptr)
      : optimizer_(optimizer), scaler_(scaler), reducer_(reducer) {}
  virtual ~StepContext() = default;

  void zero_grad();
  // Backward of the loss whose gradients the next step() applies (autocast is off inside; the loss is
  // scaled when a scaler is set). With complete gradients, data-parallel reduction overlaps it.
  void backward(const torch::Tensor& loss, Gradients gradients = Gradients::complete);
  // A further backward pass of the pending step: outputs whose gradients the pending backward produced
  // (already scaled, so they are not scaled again), e.g. IPS's gradient pass re-encoding chunk by chunk.
  void backward_outputs(const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& grads);
  // Backward whose gradients add to those of later backward passes before a step (accumulation).
  void accumulate(const torch::Tensor& loss);
  // The point after which every gradient of this step is final (reductions may start here).
  void gradients_complete();
  // Averages gradients over ranks, unscales them, and calls optimizer.step() unless a gradient
  // overflowed (fp16), in which case the step is skipped and the scale backs off. Counts steps taken.
  void step();

  int64_t steps_taken() const { return steps_; }
  int64_t steps_skipped() const { return skipped_; }
  torch::optim::Optimizer& optimizer() { return optimizer_; }

 private:
  void run_backward(const torch::Tensor& loss);
  torch::optim::Optimizer& optimizer_;
  LossScaler* scaler_;
  GradientReducer* reducer_;
  bool pending_ = false;
  int64_t steps_ = 0, skipped_ = 0;
};

// Every parameter of the optimiser's groups, in group order.
std::vector<torch::Tensor> optimizer_params(torch::optim::Optimizer& optimizer);

}  // namespace tessera::methods
