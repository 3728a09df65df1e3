#include "tessera/methods/step_context.h"

#include <torch/torch.h>

#include "tessera/core/error.h"
#include "tessera/core/precision.h"
#include "tessera/methods/gradient_reducer.h"
#include "tessera/methods/loss_scaler.h"

namespace tessera::methods {

std::vector<torch::Tensor> optimizer_params(torch::optim::Optimizer& optimizer) {
  std::vector<torch::Tensor> params;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) params.push_back(p);
  }
  return params;
}

void StepContext::zero_grad() { optimizer_.zero_grad(); }

void StepContext::run_backward(const torch::Tensor& loss) {
  // Backward runs outside autocast (torch.autocast's advice): each gradient op follows its forward dtype.
  AutocastGuard fp32(Precision::fp32);
  (scaler_ ? scaler_->scale(loss) : loss).backward();
}

void StepContext::backward(const torch::Tensor& loss, Gradients gradients) {
  TESSERA_ASSERT(!pending_, "backward() again before the previous backward's gradients were completed");
  // Pending gradients change after backward, so their reduction waits for gradients_complete().
  if (reducer_ && gradients == Gradients::complete) reducer_->arm();
  run_backward(loss);
  pending_ = gradients == Gradients::pending;
}

void StepContext::backward_outputs(const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& grads) {
  TESSERA_ASSERT(pending_, "backward_outputs() outside a pending backward");
  AutocastGuard fp32(Precision::fp32);
  torch::autograd::backward(outputs, grads);
}

void StepContext::accumulate(const torch::Tensor& loss) {
  TESSERA_ASSERT(!pending_, "accumulate() before the previous backward's gradients were completed");
  run_backward(loss);
}

void StepContext::gradients_complete() {
  TESSERA_ASSERT(pending_, "gradients_complete() without a pending backward()");
  pending_ = false;
}

void StepContext::step() {
  TESSERA_ASSERT(!pending_, "step() before gradients_complete()");
  if (reducer_) reducer_->finish();
  // Every rank holds the same averaged gradients here, so every rank takes the same decision.
  const bool finite = !scaler_ || scaler_->unscale(optimizer_params(optimizer_));
  if (finite) {
    optimizer_.step();
  } else {
    ++skipped_;
  }
  if (scaler_) scaler_->update(!finite);
  ++steps_;
}

}  // namespace tessera::methods
