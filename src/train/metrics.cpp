#include "tessera/train/metrics.h"

#include <torch/torch.h>

#include "tessera/core/distributed.h"
#include "tessera/core/error.h"

namespace tessera::train {

TaskMetrics::TaskMetrics(std::vector<Task> tasks) : tasks_(std::move(tasks)) {}

void TaskMetrics::add(const TaskTensors& outputs, const TaskTensors& labels, double loss, int64_t count) {
  for (const auto& t : tasks_) {
    outputs_[t.name].push_back(outputs.at(t.name).detach().to(torch::kCPU));
    labels_[t.name].push_back(labels.at(t.name).to(torch::kCPU));
  }
  loss_sum_ += loss * static_cast<double>(count);
  count_ += count;
}

void TaskMetrics::all_gather() {
  if (dist::world_size() == 1) return;
  for (const auto& t : tasks_) {
    for (auto* m : {&outputs_, &labels_}) {
      auto& parts = (*m)[t.name];
      auto local = parts.empty() ? torch::Tensor() : torch::cat(parts);
      TESSERA_CHECK(local.defined(), "rank ", dist::rank(), " has no samples to evaluate; use a data set with at least as many samples as ranks");
      parts = {dist::all_gather_rows(local, "metrics gather")};
    }
  }
  auto totals = torch::tensor({loss_sum_, static_cast<double>(count_)}, torch::kDouble);
  dist::all_reduce_sum(totals, "metrics gather");
  loss_sum_ = totals[0].item<double>();
  count_ = static_cast<int64_t>(totals[1].item<double>());
}

nlohmann::json TaskMetrics::summary() const {
  nlohmann::json j;
  j["loss"] = count_ ? loss_sum_ / static_cast<double>(count_) : 0.0;
  j["samples"] = count_;
  for (const auto& t : tasks_) {
    if (!outputs_.count(t.name)) continue;
    const auto out = torch::cat(outputs_.at(t.name));
    const auto lab = torch::cat(labels_.at(t.name));
    if (t.activation == "softmax") {
      j[t.name]["accuracy"] = out.argmax(-1).eq(lab).to(torch::kDouble).mean().item<double>();
      if (t.ordinal) j[t.name]["qwk"] = quadratic_weighted_kappa(out.argmax(-1), lab, t.outputs);
      // Binary labels (e.g. tumour slides): AUC of the positive class's probability, when both classes occur.
      if (t.outputs == 2 && lab.eq(1).any().item<bool>() && lab.eq(0).any().item<bool>()) {
        j[t.name]["auc"] = roc_auc(out.select(-1, 1), lab);
      }
    } else if (t.outputs == 1) {  // one binary label
      j[t.name]["accuracy"] = out.reshape(-1).ge(0.5).eq(lab.reshape(-1).ge(0.5)).to(torch::kDouble).mean().item<double>();
      j[t.name]["auc"] = roc_auc(out.reshape(-1), lab.reshape(-1));
    } else {
      const auto predicted = out.ge(0.5);
      j[t.name]["exact_match"] = predicted.eq(lab.ge(0.5)).all(-1).to(torch::kDouble).mean().item<double>();
    }
  }
  return j;
}

double quadratic_weighted_kappa(const torch::Tensor& predicted, const torch::Tensor& labels, int64_t classes) {
  TESSERA_CHECK(predicted.numel() == labels.numel() && labels.numel() > 0, "kappa needs as many predictions as labels");
  TESSERA_CHECK(classes >= 2, "kappa needs at least 2 classes");
  const auto p = predicted.reshape(-1).to(torch::kLong), y = labels.reshape(-1).to(torch::kLong);
  const auto observed = torch::zeros({classes * classes}, torch::kDouble)
                            .index_add_(0, y * classes + p, torch::ones({y.numel()}, torch::kDouble))
                            .view({classes, classes});
  const auto grades = torch::arange(classes, torch::kDouble);
  const auto weights = (grades.unsqueeze(1) - grades.unsqueeze(0)).pow(2) / static_cast<double>((classes - 1) * (classes - 1));
  const auto expected = torch::outer(observed.sum(1), observed.sum(0)) / static_cast<double>(y.numel());
  const double denominator = (weights * expected).sum().item<double>();
  if (denominator == 0) return 1.0;  // one class everywhere, predicted perfectly
  return 1.0 - (weights * observed).sum().item<double>() / denominator;
}

double roc_auc(const torch::Tensor& scores, const torch::Tensor& labels) {
  TESSERA_CHECK(scores.numel() == labels.numel(), "AUC needs as many scores as labels");
  const auto s = scores.to(torch::kDouble).reshape(-1);
  const auto y = labels.to(torch::kDouble).reshape(-1).ge(0.5);
  const int64_t pos = y.sum().item<int64_t>(), neg = y.numel() - pos;
  TESSERA_CHECK(pos > 0 && neg > 0, "AUC is undefined with only one class present (", pos, " positive, ", neg,
                " negative)");
  // Average ranks (ties get the mean rank), then U = sum of positive ranks - pos(pos+1)/2.
  const auto sorted = s.sort();
  const auto values = std::get<0>(sorted), order = std::get<1>(sorted);
  auto ranks = torch::empty_like(s);
  const auto* v = values.data_ptr<double>();
  const auto* o = order.data_ptr<int64_t>();
  auto* r = ranks.data_ptr<double>();
  const int64_t n = s.numel();
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j + 1 < n && v[j + 1] == v[i]) ++j;
    const double rank = 0.5 * static_cast<double>(i + j) + 1.0;
    for (int64_t k = i; k <= j; ++k) r[o[k]] = rank;
    i = j + 1;
  }
  const double rank_sum = ranks.masked_select(y).sum().item<double>();
  return (rank_sum - 0.5 * static_cast<double>(pos) * static_cast<double>(pos + 1)) / (static_cast<double>(pos) * static_cast<double>(neg));
}

}  // namespace tessera::train
