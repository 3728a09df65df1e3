#include "tessera/train/planner.h"

#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/memory.h"
#include "tessera/data/patches.h"
#include "tessera/train/experiment.h"
#include "tessera/train/registry.h"
#include "tessera/train/trainer.h"

namespace tessera::train {
namespace {
// Patches in PatchGD's grid of the training image (non-overlapping, stride = patch).
int64_t patch_count(const Config& c) { return data::PatchGrid::fit(c.data.height, c.data.width, c.data.patch, c.data.patch).count(); }
}  // namespace

namespace {
// A budget that cannot work: BudgetExceeded (tessera.BudgetExceeded in Python) with the message parts.
template <typename... Args>
[[noreturn]] void refuse(int64_t needed, const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  throw memory::BudgetExceeded(os.str(), needed);
}

nlohmann::json settings_json(const methods::MethodInfo::Settings& settings) {
  auto j = nlohmann::json::object();
  for (const auto& [k, v] : settings) j[k] = v;
  return j;
}

std::string describe(const methods::MethodInfo::Settings& settings) {
  std::string out;
  for (const auto& [k, v] : settings) out += fmt::format("{}{} {}", out.empty() ? "" : ", ", k, v);
  return out;
}

// The config's current values of the keys a setting changes, e.g. ", ips.grad_chunk 0".
std::string describe_current(Config config, const methods::MethodInfo::Settings& settings) {
  std::string out;
  for (const auto& f : config.fields()) {
    for (const auto& s : settings) {
      if (s.first == f.key) out += fmt::format(", {} {}", f.key, f.get());
    }
  }
  return out;
}
}  // namespace

void BatchPlan::apply(Config& config) const {
  for (const auto& [k, v] : settings) config.set(k, v);
  config.train.batch_size = batch_size;
  config.patchgd.q = q;
  config.gd.image_size = image_size;
}

nlohmann::json BatchPlan::to_json(const Config& config) const {
  nlohmann::json j{{"method", config.train.method},
                   {"memory_budget", config.train.memory_budget},
                   {"budget_bytes", memory::budget()},
                   {"planned_against_bytes", memory::budget() * 95 / 100},
                   {"batch_size", batch_size},
                   {"trials", trials}};
  if (find_method(config.train.method).plans_sampling_fraction) j["q"] = q;
  if (find_method(config.train.method).plans_image_size) j["image_size"] = image_size;
  if (find_method(config.train.method).memory_settings) j["settings"] = settings_json(settings);
  return j;
}

std::pair<bool, int64_t> trial_step(const Config& config, const data::DatasetPtr& train_set) {
  const int64_t b = config.train.batch_size;
  TESSERA_CHECK(train_set->size() >= b, "the training set has ", train_set->size(), " images, fewer than the trial batch ", b);
  memory::reset_peaks();
  try {
    auto method = make_method(config, train_set->tasks());
    const auto optimizer = make_optimizer(config, method->module());
    const auto batch = [&] {
      std::vector<data::Sample> samples;
      std::vector<int64_t> indices;
      for (int64_t i = 0; i < b; ++i) {
        samples.push_back(train_set->get(i));
        indices.push_back(i);
      }
      return data::collate(std::move(samples), indices);
    };
    // While a step runs the loader holds workers x prefetch ready batches, and a worker collating the
    // next one holds it twice (samples and stacked batch); they count too.
    std::vector<torch::Tensor> prefetched;
    for (int64_t i = 0; i < std::max<int64_t>(1, config.data.workers) * config.data.prefetch + 2; ++i) {
      prefetched.push_back(batch().images);
    }
    // Two steps: from the second on, the optimiser's state coexists with the activations.
    method->train_step(batch(), *optimizer);
    method->train_step(batch(), *optimizer);
    method->predict(batch());
  } catch (const memory::BudgetExceeded& e) {
    // What the step needs at least: the live bytes the refused allocation would have brought.
    return {false, std::max(e.needed(), memory::cpu_peak_bytes())};
  } catch (const c10::Error& e) {
    if (memory::budget() > 0 && std::string(e.what()).find("out of memory") != std::string::npos) {
      return {false, memory::snapshot().peak_tensor_bytes};
    }
    throw;
  }
  return {true, memory::snapshot().peak_tensor_bytes};
}

BatchPlan plan_batch(const Config& base, const data::DatasetPtr& train_set, int64_t max_batch) {
  TESSERA_CHECK(memory::budget() > 0, "--train.auto_batch needs a budget: set train.memory_budget (e.g. 4GiB)");
  BatchPlan plan;
  Config config = base;
  plan.batch_size = base.train.batch_size;
  // Trials run against 95 % of the budget: headroom for what a trial does not reproduce exactly
  // (allocation order across loader threads, metric buffers).
  const int64_t budget = memory::budget();
  struct Restore {
    int64_t bytes;
    ~Restore() { memory::set_budget(bytes); }
  } restore{budget};
  memory::set_budget(budget * 95 / 100);
  plan.q = config.patchgd.q;
  plan.image_size = config.gd.image_size;
  const auto& method = find_method(config.train.method);
  const auto fits = [&](int64_t b) {
    config = base;
    plan.batch_size = b;
    plan.apply(config);
    const auto [ok, peak] = trial_step(config, train_set);
    plan.trials.push_back({{"batch_size", b}, {"q", plan.q}, {"image_size", plan.image_size},
                           {"settings", settings_json(plan.settings)}, {"fits", ok}, {"peak_tensor_bytes", peak}});
    log::info("plan: batch {}{}{}{} {} (peak tensors {})", b, method.plans_sampling_fraction ? fmt::format(", q {:.4f}", plan.q) : "",
              method.plans_image_size && plan.image_size > 0 ? fmt::format(", image {} px", plan.image_size) : "",
              plan.settings.empty() ? "" : ", " + describe(plan.settings), ok ? "fits" : "does not fit", memory::format_bytes(peak));
    return ok;
  };
  const int64_t lo_limit = [&] {
    try {
      make_method(config, train_set->tasks());  // the model alone must fit
      return find_method(config.train.method).min_batch_size(config);
    } catch (const memory::BudgetExceeded& e) {
      refuse(e.needed(), "the ", config.train.method, " model alone does not fit train.memory_budget ",
             config.train.memory_budget, " (", e.what(), "); raise train.memory_budget or use a smaller model.encoder");
    }
  }();
  max_batch = std::min(max_batch, train_set->size());
  TESSERA_CHECK(max_batch >= lo_limit, "the training set is too small to plan a batch");
  int64_t good = lo_limit, bad = -1;
  const auto settings = method.memory_settings ? method.memory_settings(base) : std::vector<methods::MethodInfo::Settings>{};
  if (!settings.empty()) {
    // The requested batch with the cheapest setting that fits it ...
    for (size_t i = 0; i <= settings.size(); ++i) {
      plan.settings = i == 0 ? methods::MethodInfo::Settings{} : settings[i - 1];
      plan.settings_index = static_cast<int64_t>(i);
      if (fits(max_batch)) return plan;
    }
    // ... else the cheapest at which the smallest batch fits, and the largest batch under it.
    bad = max_batch;
    bool found = false;
    for (size_t i = 0; i <= settings.size() && !found; ++i) {
      plan.settings = i == 0 ? methods::MethodInfo::Settings{} : settings[i - 1];
      plan.settings_index = static_cast<int64_t>(i);
      found = lo_limit < max_batch && fits(lo_limit);
    }
    if (!found) {
      refuse(plan.trials.back()["peak_tensor_bytes"].get<int64_t>(), "no batch fits train.memory_budget ",
             config.train.memory_budget, ": even batch ", lo_limit, " with ", describe(settings.back()), " needs more than ",
             memory::format_bytes(plan.trials.back()["peak_tensor_bytes"].get<int64_t>()),
             " (the planner keeps 5 % headroom: it plans against ", memory::format_bytes(memory::budget()),
             "); raise train.memory_budget or lower ", method.memory_knobs);
    }
  } else if (!fits(lo_limit)) {
    const bool can_sample_less = method.plans_sampling_fraction, can_downscale = method.plans_image_size;
    const int64_t n = patch_count(config);
    constexpr int64_t kSmallestSide = 16;
    bool found = false;
    while (can_sample_less && plan.q * n > 1.0 + 1e-9) {
      plan.q = std::max(1.0 / static_cast<double>(n), plan.q / 2);
      if ((found = fits(lo_limit))) break;
    }
    int64_t side = plan.image_size > 0 ? plan.image_size : std::max(config.data.height, config.data.width);
    while (can_downscale && side / 2 >= kSmallestSide) {
      plan.image_size = side /= 2;
      if ((found = fits(lo_limit))) break;
    }
    if (!found) {
      refuse(plan.trials.back()["peak_tensor_bytes"].get<int64_t>(), "no batch fits train.memory_budget ",
             config.train.memory_budget, ": even batch ", lo_limit, can_sample_less ? " at one patch per inner iteration" : "",
             can_downscale ? fmt::format(" on images downscaled to {} px", side) : "", " needs more than ",
             memory::format_bytes(plan.trials.back()["peak_tensor_bytes"].get<int64_t>()),
             " (the planner keeps 5 % headroom: it plans against ", memory::format_bytes(memory::budget()),
             "); raise train.memory_budget or lower ", method.memory_knobs);
    }
  }
  // Doubling, then bisection between the last batch that fitted and the first that did not.
  while (bad < 0 && good < max_batch) {
    const int64_t next = std::min(max_batch, good * 2);
    if (fits(next)) good = next;
    else bad = next;
  }
  while (bad > good + 1) {
    const int64_t mid = (good + bad) / 2;
    if (fits(mid)) good = mid;
    else bad = mid;
  }
  plan.batch_size = good;
  return plan;
}

void check_budget(const Config& config, const data::DatasetPtr& train_set) {
  if (memory::budget() <= 0) return;
  const auto [fits, peak] = trial_step(config, train_set);
  if (fits) return;
  const auto& method = find_method(config.train.method);
  // Methods with memory settings: the cheapest that fits this batch is the fix to name.
  const auto settings = method.memory_settings ? method.memory_settings(config) : std::vector<methods::MethodInfo::Settings>{};
  for (const auto& s : settings) {
    Config trial = config;
    for (const auto& [k, v] : s) trial.set(k, v);
    if (!trial_step(trial, train_set).first) continue;
    std::string flags;
    for (const auto& [k, v] : s) flags += fmt::format(" --{} {}", k, v);
    refuse(peak, "train.memory_budget ", config.train.memory_budget, " does not fit a ", config.train.method, " step at batch ",
         config.train.batch_size, describe_current(config, s), " (it needs more than ", memory::format_bytes(peak), "); ",
         describe(s), " fits: pass", flags, " (or --train.auto_batch true to plan the batch too)");
  }
  Config smallest = config;
  smallest.train.batch_size = std::min(config.train.batch_size, method.min_batch_size(config));
  if (!settings.empty()) {
    for (const auto& [k, v] : settings.back()) smallest.set(k, v);
  }
  std::string what = fmt::format("batch {}", smallest.train.batch_size);
  if (!settings.empty()) what += " with " + describe(settings.back());
  if (method.plans_sampling_fraction) {
    const int64_t n = patch_count(config);
    smallest.patchgd.q = 1.0 / static_cast<double>(n);
    what += " with one patch per inner iteration (its smallest chunk)";
  }
  const auto [smallest_fits, smallest_needs] = trial_step(smallest, train_set);
  if (!smallest_fits) {
    refuse(smallest_needs, "train.memory_budget ", config.train.memory_budget, " is too small for ", config.train.method,
           ": even its smallest step, ", what, ", needs more than ", memory::format_bytes(smallest_needs),
           "; raise train.memory_budget above that, lower ", method.memory_knobs, ", or use a smaller model.encoder");
  }
  refuse(peak, "train.memory_budget ", config.train.memory_budget, " does not fit a ", config.train.method, " step at batch ",
       config.train.batch_size, method.plans_sampling_fraction ? fmt::format(", q {}", config.patchgd.q) : "",
       " (it needs more than ", memory::format_bytes(peak), "); lower ", method.memory_knobs,
       ", or pass --train.auto_batch true to find what fits");
}

}  // namespace tessera::train
