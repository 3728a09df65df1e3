// Per-task metrics accumulated over batches: accuracy (softmax tasks, plus quadratic weighted kappa
// for ordinal ones), multi-label exact match at 0.5
// (sigmoid tasks with several outputs) and ROC AUC (sigmoid tasks with one output).
#pragma once
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <vector>

#include "tessera/core/task.h"

namespace tessera::train {

class TaskMetrics {
 public:
  explicit TaskMetrics(std::vector<Task> tasks);
  void add(const TaskTensors& outputs, const TaskTensors& labels, double loss, int64_t count);
  nlohmann::json summary() const;
  // Data-parallel runs: every rank's outputs, labels and losses, so summary() covers them all.
  void all_gather();  // {"loss": .., "<task>": {"accuracy"|"exact_match"|"auc": ..}}

 private:
  std::vector<Task> tasks_;
  std::map<std::string, std::vector<torch::Tensor>> outputs_, labels_;
  double loss_sum_ = 0;
  int64_t count_ = 0;
};

// Cohen's kappa with quadratic weights (i - j)^2 / (K - 1)^2 between predicted and true classes (n) int.
double quadratic_weighted_kappa(const torch::Tensor& predicted, const torch::Tensor& labels, int64_t classes);

// Area under the ROC curve with ties counted half (Mann-Whitney U). scores, labels: (n).
double roc_auc(const torch::Tensor& scores, const torch::Tensor& labels);

}  // namespace tessera::train
