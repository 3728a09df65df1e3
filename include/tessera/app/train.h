// Training and evaluation workflows, as the tessera command runs them.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "tessera/core/config.h"
#include "tessera/train/trainer.h"

namespace tessera::app {

// Trains config into config.run_dir (resuming when asked): validates, plans the batch when
// train.auto_batch is set (writing plan.json), writes train.log, config.yaml with the run spec,
// metrics.jsonl and checkpoint.pt. Returns the last epoch's record; a run that had already finished
// returns its last record without training. hooks: per-epoch records and interruption (the Python layer).
nlohmann::json train(Config config, bool resume, train::TrainHooks hooks = {});

// Evaluates a run's checkpoint on the test set of the config it trained with; the network and the
// tasks come from the run spec, and only the test set is opened. threads 0: all cores.
nlohmann::json evaluate(const std::string& run, int64_t threads = 0);

// What fits, without training or writing anything. With a budget (e.g. "24GiB"; empty: the config's
// train.memory_budget): the planner's trial
// steps under it, as --train.auto_batch would run them (BatchPlan::to_json: the batch, the method's
// memory settings and every trial). Without: one trial step of config as it is, its peak tensor bytes
// ({"peak_tensor_bytes", "fits": true}).
nlohmann::json plan(Config config, const std::string& budget);
// The plan as lines for a terminal: one per trial, then the choice.
std::string format_plan(const nlohmann::json& plan);

// "task  metric  value" lines of a summary (train or test metrics).
std::string format_summary(const nlohmann::json& summary);

}  // namespace tessera::app
