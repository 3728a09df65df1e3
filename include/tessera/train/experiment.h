// The public entry point: everything a run needs, built from one Config.
#pragma once
#include <memory>

#include "tessera/core/config.h"
#include "tessera/data/dataset.h"
#include "tessera/methods/ips.h"

namespace tessera::train {

// Applies the config's process settings: threads, seed, determinism, memory tracking and budget.
void apply_runtime(const Config& config);

// Train and test sets of config.data.dataset (MNIST digits read from data.mnist_dir).
std::pair<data::DatasetPtr, data::DatasetPtr> make_datasets(const Config& config);

// The method of config.train.method (ips | patchgd | gd | gd_extended) for the given tasks, with
// model.weights (torchvision state dict) or model.init_from (a tessera checkpoint, backbone only:
// progressive resolution) loaded into its backbone.
std::unique_ptr<methods::Method> make_method(const Config& config, const std::vector<Task>& tasks);

// The IPS model of config.model for the given tasks, with encoder weights loaded if model.weights is set.
std::unique_ptr<methods::Ips> make_ips(const Config& config, const std::vector<Task>& tasks);

}  // namespace tessera::train
