// The --auto-batch planner: short trial steps under the memory budget find the largest batch (and, for
// PatchGD, the largest sampling fraction at the smallest batch) that fits. Each trial trains a fresh
// model on real samples, so parameters, gradients, optimiser state and activations all count.
#pragma once
#include <nlohmann/json.hpp>

#include "tessera/core/config.h"
#include "tessera/data/dataset.h"
#include "tessera/methods/method.h"

namespace tessera::train {

struct BatchPlan {
  int64_t batch_size = 0;
  double q = 0;  // PatchGD sampling fraction (unchanged for other methods)
  int64_t image_size = 0;  // full-image baselines: gd.image_size (0: native; unchanged for other methods)
  // The method's memory settings chosen (MethodInfo::memory_settings; empty: as configured), and their
  // index in that list + 1 (0: as configured), which is what data-parallel ranks agree on.
  methods::MethodInfo::Settings settings;
  int64_t settings_index = 0;
  nlohmann::json trials = nlohmann::json::array();  // {batch_size, q, image_size, settings, fits, peak_tensor_bytes}
  nlohmann::json to_json(const Config& config) const;
  // config with the plan's batch, q, image size and settings.
  void apply(Config& config) const;
};

// Two training steps of config's method at config.train.batch_size under config.train.memory_budget;
// returns whether it fitted and, if it did, the peak live tensor bytes it reached; if not, what it needs at
// least (the live bytes the refused allocation would have brought, above the budget).
std::pair<bool, int64_t> trial_step(const Config& config, const data::DatasetPtr& train_set);

// Largest batch in [method minimum, max_batch] whose step fits the budget. Methods with memory
// settings (IPS: gradient chunks, block recomputation) take the cheapest setting that fits max_batch,
// else the cheapest at which the minimum batch fits and the largest batch under it. If even the minimum
// does not fit, PatchGD halves q (down to one patch per iteration) and the full-image baselines halve
// the image side (down to 16 px), as the paper's GD rows downscale to fit; otherwise throws, naming
// the budget and the knobs.
BatchPlan plan_batch(const Config& config, const data::DatasetPtr& train_set, int64_t max_batch);

// Before a run writes anything: one trial step of config under its memory budget (none: no check).
// When it does not fit, the error says whether the method's smallest step (its minimum batch, and for
// PatchGD one patch per inner iteration) would, and which knobs to turn.
void check_budget(const Config& config, const data::DatasetPtr& train_set);

}  // namespace tessera::train
