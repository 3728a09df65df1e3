// The training loop shared by every method: epochs over a shuffled data set, the LR schedule, metrics
// to metrics.jsonl, memory per epoch, evaluation, and checkpoints that resume exactly. Data-parallel:
// each rank trains on its shard of every epoch (DistributedSampler's layout), gradients are averaged in
// the step context, and rank 0 alone writes metrics, configs and checkpoints.
#pragma once
#include <nlohmann/json.hpp>
#include <torch/optim/adamw.h>

#include <functional>
#include <memory>

#include "tessera/core/config.h"
#include "tessera/core/run_dir.h"
#include "tessera/data/dataset.h"
#include "tessera/methods/gradient_reducer.h"
#include "tessera/methods/loss_scaler.h"
#include "tessera/methods/method.h"
#include "tessera/train/checkpoint.h"
#include "tessera/train/run_spec.h"

namespace tessera::train {

// Evaluation of a method on a data set (eval mode, deterministic order): loss and per-task metrics. In a
// data-parallel run each rank evaluates every world_size-th sample and the metrics cover them all.
nlohmann::json evaluate(methods::Method& method, const data::DatasetPtr& dataset, int64_t batch_size, int64_t workers,
                        int64_t prefetch);

// What a caller (the Python layer) observes and controls of a fit, beyond the config.
struct TrainHooks {
  // Called with each epoch's record after it is written to metrics.jsonl (rank 0).
  std::function<void(const nlohmann::json& record)> on_epoch;
  // Polled after every step; true stops the fit there with a checkpoint of the exact position (the
  // returned record says "stopped": "interrupted"; --resume continues).
  std::function<bool()> interrupted;
};

// The optimiser of a run: AdamW with train.lr and train.weight_decay over every parameter of the module.
// The trainer, the planner's trial step and upgrade-checkpoint all make it here, so they agree.
std::unique_ptr<torch::optim::AdamW> make_optimizer(const Config& config, torch::nn::Module& module);

class Trainer {
 public:
  Trainer(Config config, methods::Method& method, data::DatasetPtr train_set, data::DatasetPtr test_set,
          TrainHooks hooks = {});

  // Trains to config.train.epochs (resuming from <run>/checkpoint.pt if resume). stop_after_steps > 0
  // stops early after that many steps in this call, with a checkpoint (used to test resuming).
  // Returns the last epoch's record (for a run that had already finished, the one in metrics.jsonl).
  nlohmann::json fit(bool resume, int64_t stop_after_steps = 0);
  nlohmann::json evaluate(const data::DatasetPtr& dataset);
  std::string checkpoint_path() const { return run_.file("checkpoint.pt"); }
  const TrainState& state() const { return state_; }
  const RunSpec& spec() const { return spec_; }

 private:
  void save();
  methods::StepResult train_step(data::Batch batch);
  std::string budget_advice(const std::string& what) const;
  // train.precise_bn: BatchNorm statistics from that many training batches; returns the seconds taken.
  double recompute_batch_norm_statistics();
  Config config_;
  RunSpec spec_;
  methods::Method& method_;
  data::DatasetPtr train_set_, test_set_;
  RunDir run_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;
  std::unique_ptr<methods::LossScaler> scaler_;         // fp16 only
  std::unique_ptr<methods::GradientReducer> reducer_;   // data-parallel runs only
  TrainState state_;
  TrainHooks hooks_;
};

}  // namespace tessera::train
