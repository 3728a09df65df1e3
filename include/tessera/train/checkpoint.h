// Checkpoints: model, optimiser, schedule position, RNG state and data position in one file, written
// through a temporary file, fsync and a rename so a crash never leaves a half-written checkpoint in place.
// Format 3 is a torch.save zip of one dict (Python: torch.load(path)["model"] is a state dict), read
// by tessera's pickle reader, which executes nothing; every field is checked before it is used.
#pragma once
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <string>

namespace tessera::train {

struct TrainState {
  int64_t epoch = 0;           // epoch to run next (or the one in progress)
  int64_t step = 0;            // optimiser steps taken overall (the schedule's counter)
  int64_t batch_in_epoch = 0;  // batches of `epoch` already consumed
  double train_seconds = 0;    // time spent in training steps (train.time_limit), including a model.init_from run's
  // Samples of `epoch` consumed over all ranks: a data-parallel run resumes from here with any world
  // size. -1 in checkpoints older than this field (then batch_in_epoch x batch size).
  int64_t samples_in_epoch = 0;
  int64_t world_size = 1;      // ranks of the run that wrote the checkpoint
  // fp16 dynamic loss scaling (train.precision fp16); loss_scale 0 when the run has no scaler.
  double loss_scale = 0;
  int64_t scale_growth_tracker = 0;
  int64_t skipped_steps = 0;
};

struct Checkpoint {
  int64_t format_version = 0;  // 1: before run specs; 2: with the run spec; 3: a torch.save dict
  TrainState state;
  std::string config_yaml;  // the resolved config the run used
  std::string spec_json;    // the run spec (train/run_spec.h); empty in format 1
  bool has_optimizer = false;
};

// optimizer may be null (a model-only checkpoint, e.g. an imported reference model).
void save_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                     const TrainState& state, const std::string& config_yaml, const std::string& spec_json = "");

// A checkpoint file read and checked once: its info (format, state, config, spec: what rebuilds the model),
// then its tensors loaded into the model built from that info, without reading the file again.
class CheckpointFile {
 public:
  explicit CheckpointFile(const std::string& path);
  const Checkpoint& info() const { return info_; }
  // Restores what `optimizer` is given for; restores the global CPU RNG when an optimizer is given.
  void load(torch::nn::Module& model, torch::optim::Optimizer* optimizer) const;

 private:
  std::string path_;
  c10::impl::GenericDict root_;
  Checkpoint info_;
};

// CheckpointFile(path).load(...) and .info(), for callers that need one or the other.
Checkpoint load_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer);
Checkpoint read_checkpoint_info(const std::string& path);

namespace legacy {
// Formats 1 and 2 (TorchScript archives), read with LibTorch's TorchScript loader, which can crash on
// a damaged file: only upgrade_checkpoint (train/experiment.h) calls it, when the user asks. A null
// model reads the format, state, config and spec only; the global CPU RNG is restored otherwise.
Checkpoint load(const std::string& path, torch::nn::Module* model, torch::optim::Optimizer* optimizer);
}  // namespace legacy

}  // namespace tessera::train
