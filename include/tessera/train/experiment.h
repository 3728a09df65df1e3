// The public entry point: everything a run needs, built from one Config, and trained runs reopened
// from their run spec alone.
#pragma once
#include <memory>
#include <string>

#include "tessera/core/config.h"
#include "tessera/data/dataset.h"
#include "tessera/methods/ips.h"
#include "tessera/train/checkpoint.h"
#include "tessera/train/run_spec.h"

namespace tessera::train {

// Validates the config (train/registry.h), then applies its run settings: seed, determinism, memory
// tracking and budget. Torch's thread count (train.threads) is the caller's to set: the app:: calls hold
// a runtime::ScopedThreads for their duration.
void apply_runtime(const Config& config);

// Train and test sets of config.data.dataset (either null when not asked for or not configured).
// tasks, when given (a run's spec), fixes the class counts.
std::pair<data::DatasetPtr, data::DatasetPtr> make_datasets(const Config& config, data::Splits splits = {},
                                                            const std::vector<Task>* tasks = nullptr);

// The method of config.train.method for the given tasks, with model.weights (torchvision state dict)
// or model.init_from (another run's checkpoint, backbone only: progressive resolution) loaded.
std::unique_ptr<methods::Method> make_method(const Config& config, const std::vector<Task>& tasks);

// The IPS model of config.model for the given tasks, with encoder weights loaded if model.weights is set.
std::unique_ptr<methods::Ips> make_ips(const Config& config, const std::vector<Task>& tasks);

// A trained run reopened from <dir>/checkpoint.pt (or a checkpoint file): the config it trained with,
// its spec, and its method rebuilt from the spec alone with the weights loaded.
struct OpenedRun {
  std::string checkpoint_path;
  Checkpoint checkpoint;  // format, state, config and spec text
  Config config;          // the training config (data paths for eval)
  RunSpec spec;
  std::unique_ptr<methods::Method> method;
};
OpenedRun open_run(const std::string& run_or_checkpoint);

// The spec of a checkpoint; one written before run specs (format 1) gets one derived from its config
// (generated data sets), or from its data set's files, or an error saying how to convert it.
RunSpec read_run_spec(const Checkpoint& checkpoint, const std::string& path);

// Rewrites a checkpoint of tessera's formats 1-2 (TorchScript archives, which only this opens) in the
// current format, weights, optimiser, RNG and position unchanged; the old file is kept beside it as
// checkpoint.pt.format<N>, whose path is returned. For files the user trusts.
std::string upgrade_checkpoint(const std::string& run_or_checkpoint);

// Saves a model-only run (no optimiser state): checkpoint.pt and config.yaml with the spec, written
// atomically; nothing is written when the model does not match the spec.
void save_run(const std::string& dir, const Config& config, const RunSpec& spec, torch::nn::Module& model);

}  // namespace tessera::train
