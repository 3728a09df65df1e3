#include "tessera/train/trainer.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "tessera/core/distributed.h"
#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/memory.h"
#include "tessera/core/precision.h"
#include "tessera/core/progress.h"
#include "tessera/data/loader.h"
#include "tessera/methods/step_context.h"
#include "tessera/train/metrics.h"
#include "tessera/train/precise_bn.h"
#include "tessera/train/registry.h"
#include "tessera/train/schedule.h"

namespace tessera::train {

std::unique_ptr<torch::optim::AdamW> make_optimizer(const Config& config, torch::nn::Module& module) {
  return std::make_unique<torch::optim::AdamW>(
      module.parameters(), torch::optim::AdamWOptions(config.train.lr).weight_decay(config.train.weight_decay));
}

Trainer::Trainer(Config config, methods::Method& method, data::DatasetPtr train_set, data::DatasetPtr test_set,
                 TrainHooks hooks)
    : config_(std::move(config)), method_(method), train_set_(std::move(train_set)), test_set_(std::move(test_set)),
      run_(config_.run_dir), hooks_(std::move(hooks)) {
  TESSERA_CHECK(train_set_ && train_set_->size() > 0, "the training set is empty; set data.train_size > 0");
  spec_ = make_run_spec(config_, method_.tasks(), train_set_->normalization());
  optimizer_ = make_optimizer(config_, method_.module());
  if (parse_precision(config_.train.precision) == Precision::fp16) {
    scaler_ = std::make_unique<methods::LossScaler>();
    if (!torch::cuda::is_available() && !cpu_autocast_supports(Precision::fp16)) {
      log::warn("fp16 autocast needs a GPU with this LibTorch ({}); on the CPU the maths stays fp32 and only the "
                "loss scaler runs (use bf16 on CPUs)", TORCH_VERSION);
    }
  }
  if (dist::world_size() > 1) {
    // Every rank starts from rank 0's weights and buffers, whatever its initialisation did.
    std::vector<torch::Tensor> tensors;
    for (const auto& p : method_.module().parameters()) tensors.push_back(p.detach());
    for (const auto& b : method_.module().buffers()) tensors.push_back(b.detach());
    dist::broadcast(tensors, "initial weights broadcast");
    reducer_ = std::make_unique<methods::GradientReducer>(method_.module().parameters());
  }
}

void Trainer::save() {
  if (!dist::is_main()) return;
  state_.world_size = dist::world_size();
  if (scaler_) {
    state_.loss_scale = scaler_->scale_value();
    state_.scale_growth_tracker = scaler_->growth_tracker();
    state_.skipped_steps = scaler_->skipped_steps();
  }
  save_checkpoint(checkpoint_path(), method_.module(), optimizer_.get(), state_, config_.to_yaml(),
                  to_json(spec_).dump());
}

namespace {

// Ranks stop together: one rank leaving the loop while others wait in a collective would hang them.
bool out_of_time_on_any_rank(bool mine) {
  auto flag = torch::tensor({mine ? 1.0f : 0.0f});
  dist::all_reduce_sum(flag, "time limit agreement");
  return flag.item<float>() > 0;
}

// Resuming from a checkpoint at `step`: records of later steps (written after it, before a crash) go.
void drop_step_records_after(const std::string& path, int64_t step) {
  if (!std::filesystem::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (record.is_object() && record.value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

// The last line of metrics.jsonl, or null.
nlohmann::json last_record(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last.empty() ? nlohmann::json() : nlohmann::json::parse(last, nullptr, /*allow_exceptions=*/false);
}
}  // namespace

nlohmann::json Trainer::fit(bool resume, int64_t stop_after_steps) {
  const auto& t = config_.train;
  if (resume) {
    TESSERA_CHECK(std::filesystem::exists(checkpoint_path()), "--resume given but '", checkpoint_path(),
                  "' does not exist; start without --resume");
    state_ = load_checkpoint(checkpoint_path(), method_.module(), optimizer_.get()).state;
    if (state_.samples_in_epoch < 0) state_.samples_in_epoch = state_.batch_in_epoch * t.batch_size;  // older files
    if (scaler_ && state_.loss_scale > 0) {
      scaler_->restore(state_.loss_scale, state_.scale_growth_tracker, state_.skipped_steps);
    }
    if (state_.world_size != dist::world_size()) {
      log::info("the checkpoint was written by {} rank(s), this run has {}: the epoch is re-sharded from its "
                "sample {}", state_.world_size, dist::world_size(), state_.samples_in_epoch);
    }
    if (state_.epoch >= t.epochs) {
      log::info("{} already finished its {} epochs; nothing to resume (raise train.epochs to train longer)",
                run_.path(), t.epochs);
      return last_record(run_.file("metrics.jsonl"));
    }
    if (t.time_limit > 0 && state_.train_seconds >= t.time_limit) {
      log::info("{} already used its train.time_limit of {:.0f} s; nothing to resume (raise it to train longer)",
                run_.path(), t.time_limit);
      return last_record(run_.file("metrics.jsonl"));
    }
    log::info("resumed from {} at epoch {}, step {}", checkpoint_path(), state_.epoch + 1, state_.step);
    if (dist::is_main()) drop_step_records_after(run_.file("steps.jsonl"), state_.step);
  } else if (dist::is_main()) {
    if (std::filesystem::exists(checkpoint_path())) {
      log::warn("{} holds an earlier run; starting afresh (use --resume to continue it)", run_.path());
      std::filesystem::remove(run_.file("metrics.jsonl"));
    }
    std::filesystem::remove(run_.file("steps.jsonl"));
  }
  // A backbone trained by another run brings its training time along (it counts against time_limit).
  if (!resume && !config_.model.init_from.empty()) {
    state_.train_seconds = read_checkpoint_info(config_.model.init_from).state.train_seconds;
    log::info("encoder starts from {} ({:.0f} s of training, counted in train.time_limit)", config_.model.init_from,
              state_.train_seconds);
  }
  if (dist::is_main()) run_.write_text("config.yaml", config_with_spec_yaml(config_, spec_));

  // The schedule is keyed on global samples: a step is batch_size x world_size samples.
  const int64_t world = dist::world_size(), size = train_set_->size();
  const int64_t global_batch = t.batch_size * world;
  const int64_t steps_per_epoch = (size + global_batch - 1) / global_batch;
  const LrSchedule schedule{t.schedule,       t.lr, t.warmup_epochs, t.epochs, steps_per_epoch, t.min_lr_factor,
                            t.decay_epochs};
  const int64_t offset = find_method(method_.name()).schedule_from_one ? 1 : 0;
  const auto schedule_step = [&] {
    return state_.epoch * steps_per_epoch + (state_.samples_in_epoch + global_batch - 1) / global_batch + offset;
  };
  nlohmann::json last;
  int64_t steps_this_call = 0;
  while (state_.epoch < t.epochs) {
    memory::reset_peaks();
    const auto start = std::chrono::steady_clock::now();
    const double communication_before = reducer_ ? reducer_->communication_seconds() : 0.0;
    data::Loader loader(train_set_,
                        data::epoch_shard(size, t.seed, state_.epoch, state_.samples_in_epoch, dist::rank(), world),
                        t.batch_size, config_.data.workers, config_.data.prefetch);
    TaskMetrics metrics(method_.tasks());
    Progress progress(fmt::format("epoch {}/{}", state_.epoch + 1, t.epochs), loader.num_batches());
    auto mark = std::chrono::steady_clock::now();
    bool out_of_time = false;
    double window_loss = 0;  // train.log_every: the mean loss of the steps since the last record
    int64_t window_steps = 0;
    double last_lr = schedule.at(schedule_step());  // the LR of the epoch's last step (its record's "lr")
    while (auto batch = loader.next()) {
      const double lr = schedule.at(schedule_step());
      last_lr = lr;
      for (auto& group : optimizer_->param_groups()) group.options().set_lr(lr);
      const auto labels = batch->labels;
      const int64_t size_of_step = batch->size();
      const auto result = train_step(std::move(*batch));
      metrics.add(result.outputs, labels, result.loss, size_of_step);
      ++state_.step;
      ++state_.batch_in_epoch;
      state_.samples_in_epoch = std::min(size, state_.samples_in_epoch + size_of_step * world);
      ++steps_this_call;
      const auto now = std::chrono::steady_clock::now();
      state_.train_seconds += std::chrono::duration<double>(now - mark).count();
      mark = now;
      progress.advance(1, fmt::format("loss {:.4f} lr {:.2e}", result.loss, lr));
      window_loss += result.loss;
      ++window_steps;
      if (t.log_every > 0 && state_.step % t.log_every == 0) {
        if (dist::is_main()) {
          run_.append_line("steps.jsonl", {{"step", state_.step},
                                           {"epoch", state_.epoch + 1},
                                           {"samples", state_.epoch * size + state_.samples_in_epoch},
                                           {"loss", window_loss / static_cast<double>(window_steps)},
                                           {"lr", lr},
                                           {"train_seconds", state_.train_seconds}});
        }
        window_loss = 0, window_steps = 0;
      }
      const bool stop = stop_after_steps > 0 && steps_this_call >= stop_after_steps;
      const bool interrupted = hooks_.interrupted && hooks_.interrupted();
      if ((t.checkpoint_every > 0 && state_.step % t.checkpoint_every == 0) || stop || interrupted) save();
      if (stop) return metrics.summary();
      if (interrupted) {
        log::info("interrupted at step {}: checkpoint written; --resume continues", state_.step);
        return {{"epoch", state_.epoch + 1}, {"step", state_.step}, {"train", metrics.summary()}, {"stopped", "interrupted"}};
      }
      if ((out_of_time = t.time_limit > 0 && out_of_time_on_any_rank(state_.train_seconds >= t.time_limit))) break;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const bool epoch_done = state_.samples_in_epoch >= size;  // the time limit may fall on its last step
    if (epoch_done) state_.batch_in_epoch = state_.samples_in_epoch = 0;
    metrics.all_gather();
    const auto train_summary = metrics.summary();
    const auto mem = memory::snapshot();
    nlohmann::json record{{"epoch", state_.epoch + 1},
                          {"step", state_.step},
                          {"lr", last_lr},
                          {"train", train_summary},
                          {"seconds", seconds},
                          {"peak_tensor_bytes", mem.peak_tensor_bytes},
                          {"peak_rss_bytes", mem.peak_rss_bytes},
                          {"train_seconds", state_.train_seconds}};
    if (out_of_time) record["stopped"] = "time_limit";
    if (world > 1) {
      record["world_size"] = world;
      record["allreduce_seconds"] = reducer_->communication_seconds() - communication_before;  // this epoch's wait
    }
    if (scaler_) {
      record["loss_scale"] = scaler_->scale_value();
      record["skipped_steps"] = scaler_->skipped_steps();
    }
    const bool eval_now = (state_.epoch + 1) % t.eval_every == 0 || state_.epoch + 1 == t.epochs || out_of_time;
    const bool evaluates = test_set_ && test_set_->size() > 0 && eval_now;
    if (evaluates && t.precise_bn > 0) record["precise_bn_seconds"] = recompute_batch_norm_statistics();
    if (epoch_done) ++state_.epoch;
    save();  // the finished epoch is kept before its evaluation can fail
    if (evaluates) {
      try {
        record["test"] = evaluate(test_set_);
      } catch (const std::exception& e) {
        const auto* c10 = dynamic_cast<const c10::Error*>(&e);
        const std::string what = c10 ? c10->what_without_backtrace() : e.what();
        record["test_error"] = what;
        if (dist::is_main()) run_.append_metrics(record);
        if (what.rfind("rank ", 0) == 0) throw;  // a collective's failure already says which rank and why
        fail("evaluating epoch ", record["epoch"].get<int64_t>(), " on the test set failed: ", what,
             "; the epoch's training is saved in ", checkpoint_path(), ": fix the cause and rerun with --resume");
      }
    }
    if (dist::is_main()) {
      run_.append_metrics(record);
      if (hooks_.on_epoch) hooks_.on_epoch(record);
    }
    progress.finish(fmt::format("train loss {:.4f}{} | {:.0f}s, peak tensors {}, peak RSS {}",
                                train_summary["loss"].get<double>(),
                                record.contains("test") ? fmt::format(", test {}", record["test"].dump()) : "",
                                seconds, memory::format_bytes(mem.peak_tensor_bytes),
                                memory::format_bytes(mem.peak_rss_bytes)));
    last = record;
    if (out_of_time) {
      log::info("stopped at train.time_limit ({:.0f} s of training); --resume with a larger limit continues", t.time_limit);
      return last;
    }
  }
  return last;
}

methods::StepResult Trainer::train_step(data::Batch batch) {
  try {
    methods::StepContext context(*optimizer_, scaler_.get(), reducer_.get());
    return method_.train_step(std::move(batch), context);
  } catch (const memory::BudgetExceeded& e) {
    // The last checkpoint on disk is untouched: nothing is saved after a failed step.
    throw memory::BudgetExceeded(budget_advice(e.what()), e.needed());
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    if (memory::budget() > 0 && what.find("out of memory") != std::string::npos) {
      throw memory::BudgetExceeded(budget_advice("memory budget exceeded (" + what.substr(0, what.find('.')) + ")"));
    }
    throw;
  }
}

std::string Trainer::budget_advice(const std::string& what) const {
  return fmt::format("{} during a {} training step at batch size {}; lower {}, raise train.memory_budget, or pass "
                     "--train.auto_batch true to plan a batch that fits",
                     what, method_.name(), config_.train.batch_size, find_method(method_.name()).memory_knobs);
}

double Trainer::recompute_batch_norm_statistics() {
  const auto& t = config_.train;
  const auto start = std::chrono::steady_clock::now();
  // A fixed sample of the training set per epoch, in an order of its own (the training order is untouched).
  auto indices = data::epoch_shard(train_set_->size(), t.seed + 1, state_.epoch, 0, dist::rank(), dist::world_size());
  indices.resize(std::min<size_t>(indices.size(), static_cast<size_t>(t.precise_bn * t.batch_size)));
  train::recompute_batch_norm_statistics(method_, train_set_, std::move(indices), t.batch_size, config_.data.workers,
                                         config_.data.prefetch);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

nlohmann::json Trainer::evaluate(const data::DatasetPtr& dataset) {
  return train::evaluate(method_, dataset, config_.train.batch_size, config_.data.workers, config_.data.prefetch);
}

nlohmann::json evaluate(methods::Method& method, const data::DatasetPtr& dataset, int64_t batch_size, int64_t workers,
                        int64_t prefetch) {
  TESSERA_CHECK(dataset && dataset->size() > 0, "the evaluation set is empty; set data.test_size > 0");
  std::vector<int64_t> shard;  // every world_size-th sample, no padding: each sample counts once
  for (int64_t i = dist::rank(); i < dataset->size(); i += dist::world_size()) shard.push_back(i);
  data::Loader loader(dataset, shard, batch_size, workers, prefetch);
  TaskMetrics metrics(method.tasks());
  while (auto batch = loader.next()) {
    const auto outputs = method.predict(*batch);
    metrics.add(outputs, batch->labels, methods::multitask_loss(outputs, batch->labels, method.tasks()).item<double>(),
                batch->size());
  }
  metrics.all_gather();
  return metrics.summary();
}

}  // namespace tessera::train
