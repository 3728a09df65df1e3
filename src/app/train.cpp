#include "tessera/app/train.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <optional>

#include "tessera/core/distributed.h"
#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/memory.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/runtime.h"
#include "tessera/train/experiment.h"
#include "tessera/train/planner.h"
#include "tessera/train/preflight.h"
#include "tessera/train/registry.h"
#include "tessera/train/trainer.h"

namespace tessera::app {

namespace {

// The settings a budget plan chose, applied to config (every rank follows rank 0's plan); logged.
std::optional<train::BatchPlan> plan_for_budget(Config& config, const data::DatasetPtr& train_set, bool resume) {
  if (resume) return std::nullopt;  // the run's config holds what its plan chose
  if (!config.train.auto_batch) {
    train::check_budget(config, train_set);
    return std::nullopt;
  }
  auto plan = train::plan_batch(config, train_set, /*max_batch=*/config.train.batch_size);
  // Ranks plan alone (the budget is per rank) and follow rank 0's plan, so all take the same steps.
  auto chosen = torch::tensor({static_cast<double>(plan.batch_size), plan.q, static_cast<double>(plan.image_size),
                               static_cast<double>(plan.settings_index)},
                              torch::kDouble);
  dist::broadcast({chosen}, "batch plan broadcast");
  plan.batch_size = static_cast<int64_t>(chosen[0].item<double>());
  plan.q = chosen[1].item<double>();
  plan.image_size = static_cast<int64_t>(chosen[2].item<double>());
  plan.settings_index = static_cast<int64_t>(chosen[3].item<double>());
  const auto& info = train::find_method(config.train.method);
  plan.settings = plan.settings_index == 0 ? methods::MethodInfo::Settings{} : info.memory_settings(config)[plan.settings_index - 1];
  plan.apply(config);
  return plan;
}

void record_plan(const train::BatchPlan& plan, const Config& config, RunDir& run) {
  run.write_text("plan.json", plan.to_json(config).dump(2) + "\n");
  const auto& info = train::find_method(config.train.method);
  std::string settings;
  for (const auto& [k, v] : plan.settings) settings += fmt::format(", {} {}", k, v);
  log::info("plan: batch size {}{}{}{} fits {} (trials in {})", plan.batch_size,
            info.plans_sampling_fraction ? fmt::format(", q {:.4f}", plan.q) : "",
            info.plans_image_size && plan.image_size > 0 ? fmt::format(", images downscaled to {} px", plan.image_size) : "",
            settings, config.train.memory_budget, run.file("plan.json"));
}

// The process's memory budget as the caller had it, put back when a call ends (apply_runtime sets it).
struct RestoreBudget {
  int64_t bytes = memory::budget();
  ~RestoreBudget() { memory::set_budget(bytes); }
};

// The data sets; those held in memory (generated sets) count against the budget, and a budget they
// exceed is said as such.
std::pair<data::DatasetPtr, data::DatasetPtr> datasets_within_budget(const Config& config) {
  try {
    return train::make_datasets(config);
  } catch (const memory::BudgetExceeded& e) {
    throw memory::BudgetExceeded(
        fmt::format("train.memory_budget {} is too small for the {} data set itself, which needs more than {} in memory "
                    "({}); raise train.memory_budget above that plus what a step needs (tessera plan measures it)",
                    config.train.memory_budget, config.data.dataset, memory::format_bytes(e.needed()), e.what()),
        e.needed());
  }
}

std::string message_of(const std::exception& e) {
  const auto* c10 = dynamic_cast<const c10::Error*>(&e);
  return c10 ? c10->what_without_backtrace() : e.what();
}

}  // namespace

nlohmann::json train(Config config, bool resume, train::TrainHooks hooks) {
  // Joins the data-parallel group when launched by torchrun, SLURM or tessera launch (else a no-op).
  dist::init_from_env(config.train.dist_timeout);
  RestoreBudget restore_budget;
  train::apply_runtime(config);
  runtime::ScopedThreads threads(config.train.threads);
  auto [train_set, test_set] = datasets_within_budget(config);
  TESSERA_CHECK(train_set, "data set ", config.data.dataset, " has no training split; check the data settings");
  // The data and the budget are settled before the run directory is touched, so a mistake costs no
  // epoch and a budget that cannot work leaves an earlier run as it was.
  train::check_data(config, *train_set, test_set.get());
  const auto plan = plan_for_budget(config, train_set, resume);
  runtime::seed_everything(config.train.seed);  // trials drew random numbers; the run starts as without them
  RunDir run(config.run_dir);
  std::optional<log::FileSink> log_file;
  if (dist::is_main()) log_file.emplace(run.file("train.log"));  // rank 0 keeps the run's records
  try {
    if (plan && dist::is_main()) record_plan(*plan, config, run);
    auto method = train::make_method(config, train_set->tasks());
    const bool images = train::find_dataset(config.data.dataset).input == "image";
    log::info("training {} on {} {}, batch {}{}, {} threads{}", method->name(), train_set->size(),
              images ? fmt::format("{}x{} {} images", config.data.height, config.data.width, config.data.dataset)
                     : config.data.dataset + " bags",
              config.train.batch_size, dist::world_size() > 1 ? fmt::format(" per rank x {} ranks", dist::world_size()) : "",
              torch::get_num_threads(), config.train.precision == "fp32" ? "" : ", " + config.train.precision);
    train::Trainer trainer(config, *method, train_set, test_set, std::move(hooks));
    return trainer.fit(resume);
  } catch (const std::exception& e) {
    // The console gets the error from whoever catches it; the run's log keeps it too.
    if (log_file) log_file->record(log::Level::error, message_of(e));
    throw;
  }
}

nlohmann::json plan(Config config, const std::string& budget) {
  if (!budget.empty()) config.train.memory_budget = budget;
  RestoreBudget restore_budget;
  train::apply_runtime(config);
  runtime::ScopedThreads threads(config.train.threads);
  auto [train_set, test_set] = train::make_datasets(config, {/*train=*/true, /*test=*/false});
  TESSERA_CHECK(train_set, "data set ", config.data.dataset, " has no training split; check the data settings");
  if (config.train.memory_budget.empty()) {
    const auto [fits, peak] = train::trial_step(config, train_set);
    return {{"method", config.train.method}, {"batch_size", config.train.batch_size}, {"fits", fits}, {"peak_tensor_bytes", peak}};
  }
  return train::plan_batch(config, train_set, config.train.batch_size).to_json(config);
}

std::string format_plan(const nlohmann::json& plan) {
  std::string out;
  if (!plan.contains("trials")) {
    return fmt::format("{} at batch {}: peak tensor memory {} ({} bytes)\n", plan["method"].get<std::string>(),
                       plan["batch_size"].get<int64_t>(), memory::format_bytes(plan["peak_tensor_bytes"].get<int64_t>()),
                       plan["peak_tensor_bytes"].get<int64_t>());
  }
  out += fmt::format("{:>6} {:<44} {:>14} {}\n", "batch", "settings", "needs", "fits");
  for (const auto& t : plan["trials"]) {
    std::string settings;
    for (const auto& [k, v] : t["settings"].items()) settings += fmt::format("{}{} {}", settings.empty() ? "" : ", ", k, v.get<std::string>());
    if (plan.contains("q")) settings += fmt::format("{}patchgd.q {:.4f}", settings.empty() ? "" : ", ", t["q"].get<double>());
    if (plan.contains("image_size") && t["image_size"].get<int64_t>() > 0) {
      settings += fmt::format("{}gd.image_size {}", settings.empty() ? "" : ", ", t["image_size"].get<int64_t>());
    }
    const bool fits = t["fits"].get<bool>();
    const auto bytes = memory::format_bytes(t["peak_tensor_bytes"].get<int64_t>());
    out += fmt::format("{:>6} {:<44} {:>14} {}\n", t["batch_size"].get<int64_t>(), settings.empty() ? "(as configured)" : settings,
                       fits ? bytes : "> " + bytes, fits ? "yes" : "no");
  }
  out += fmt::format("needs: the step's peak tensor memory; '> X' where a trial stopped at the budget (X is the least it "
                     "needs). Trials plan against 95 % of {} ({}).\n",
                     plan["memory_budget"].get<std::string>(), memory::format_bytes(plan["planned_against_bytes"].get<int64_t>()));
  std::string chosen;
  if (plan.contains("settings")) {
    for (const auto& [k, v] : plan["settings"].items()) chosen += fmt::format(" --{} {}", k, v.get<std::string>());
  }
  out += fmt::format("fits {}: --train.batch_size {}{}\n", plan["memory_budget"].get<std::string>(), plan["batch_size"].get<int64_t>(), chosen);
  return out;
}

nlohmann::json evaluate(const std::string& run_dir, int64_t threads) {
  auto run = train::open_run(run_dir);
  auto config = run.config;
  config.train.threads = threads;
  train::apply_runtime(config);
  runtime::ScopedThreads scoped_threads(config.train.threads);
  const auto test_set = train::make_datasets(config, {/*train=*/false, /*test=*/true}, &run.spec.tasks).second;
  TESSERA_CHECK(test_set, "run '", run_dir, "' has no test set in its config (data.test_csv, data.test_size or the "
                "manifest's test split)");
  const auto tasks = test_set->tasks();
  TESSERA_CHECK(tasks.size() == run.spec.tasks.size(), "the test set of run '", run_dir, "' has ", tasks.size(),
                " tasks but the run was trained on ", run.spec.tasks.size());
  return train::evaluate(*run.method, test_set, config.train.batch_size, config.data.workers, config.data.prefetch);
}

std::string format_summary(const nlohmann::json& summary) {
  std::string out = "task       metric        value\n";
  if (summary.contains("loss")) out += fmt::format("{:<10} {:<13} {:.4f}\n", "all", "loss", summary["loss"].get<double>());
  for (const auto& [task, metrics] : summary.items()) {
    if (!metrics.is_object()) continue;
    for (const auto& [name, value] : metrics.items()) out += fmt::format("{:<10} {:<13} {:.4f}\n", task, name, value.get<double>());
  }
  return out;
}

}  // namespace tessera::app
