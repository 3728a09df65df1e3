// The public entry point: everything a run needs, built from one Config.
#pragma once
#include <memory>

#include "tessera/core/config.h"
#include "tessera/data/dataset.h"
#include "tessera/methods/ips.h"

namespace tessera::train {

// Applies the config's process settings: threads, seed, determinism, memory tracking and budget.
void apply_runtime(const Config& config);

// Megapixel MNIST train and test sets from config.data (MNIST digits read from data.mnist_dir).
std::pair<data::DatasetPtr, data::DatasetPtr> make_datasets(const Config& config);

// The IPS model of config.model for the given tasks, with encoder weights loaded if model.weights is set.
std::unique_ptr<methods::Ips> make_ips(const Config& config, const std::vector<Task>& tasks);

}  // namespace tessera::train
