#include "tessera/methods/step_context.h"

#include <torch/torch.h>

#include "tessera/core/error.h"

namespace tessera::methods {

void StepContext::zero_grad() { optimizer_.zero_grad(); }

void StepContext::backward(const torch::Tensor& loss, Gradients gradients) {
  TESSERA_ASSERT(!pending_, "backward() again before the previous backward's gradients were completed");
  loss.backward();
  pending_ = gradients == Gradients::pending;
}

void StepContext::gradients_complete() {
  TESSERA_ASSERT(pending_, "gradients_complete() without a pending backward()");
  pending_ = false;
}

void StepContext::step() {
  TESSERA_ASSERT(!pending_, "step() before gradients_complete()");
  optimizer_.step();
  ++steps_;
}

}  // namespace tessera::methods
