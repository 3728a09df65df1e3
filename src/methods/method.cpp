#include "tessera/methods/method.h"

#include <torch/torch.h>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/methods/step_context.h"

namespace tessera::methods {

StepResult Method::train_step(data::Batch batch, torch::optim::Optimizer& optimizer) {
  StepContext context(optimizer);
  return train_step(std::move(batch), context);
}

torch::Tensor multitask_loss(const TaskTensors& outputs, const TaskTensors& labels, const std::vector<Task>& tasks) {
  TESSERA_CHECK(!tasks.empty(), "a loss needs at least one task");
  torch::Tensor total;
  for (const auto& task : tasks) {
    TESSERA_CHECK(outputs.count(task.name) && labels.count(task.name), "no output or label for task '", task.name, "'");
    const auto p = outputs.at(task.name).to(torch::kFloat);  // losses stay fp32 under autocast
    const auto y = labels.at(task.name).to(p.device());
    torch::Tensor loss;
    if (task.activation == "softmax") {
      loss = torch::nll_loss(torch::log(p + 1e-6), y.to(torch::kLong));
    } else {
      loss = torch::binary_cross_entropy(p.reshape(-1), y.reshape(-1).to(p.scalar_type()));
    }
    total = total.defined() ? total + loss : loss;
  }
  return total / static_cast<double>(tasks.size());
}

torch::Tensor checked_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels, const std::string& method) {
  TESSERA_CHECK(labels.dim() == 1 && labels.size(0) == logits.size(0), method, " needs one class label per image, got ",
                labels.sizes(), " for ", logits.size(0), " images");
  const int64_t classes = logits.size(1);
  TESSERA_CHECK(labels.numel() == 0 || (labels.min().item<int64_t>() >= 0 && labels.max().item<int64_t>() < classes),
                method, ": a label is outside [0, ", classes, "); check the data set's class count");
  auto loss = torch::cross_entropy_loss(logits.to(torch::kFloat), labels.to(logits.device(), torch::kLong));
  check_finite_loss(loss, method);
  return loss;
}

void check_finite_loss(const torch::Tensor& loss, const std::string& method) {
  const double v = loss.item<double>();
  TESSERA_CHECK(std::isfinite(v), method, " loss is ", v,
                "; the weights were not updated. Lower train.lr, check the inputs for NaN, or resume from the last "
                "checkpoint");
}

}  // namespace tessera::methods
