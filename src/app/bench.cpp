// tessera bench ips|patchgd: median training-step time and peak memory at a stated setting, as a table
// and JSON. bench ips --patches sweeps N in lazy mode (peak tensor memory must not grow with N);
// bench patchgd --sizes compares PatchGD's and GD's peak tensor memory as the image grows.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <fmt/chrono.h>

#include "tessera/app/bench.h"
#include "tessera/core/csv.h"
#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/memory.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/runtime.h"
#include "tessera/core/version.h"
#include "tessera/core/config.h"
#include "tessera/core/precision.h"
#include "tessera/methods/ips.h"
#include "tessera/models/encoder_registry.h"
#include "tessera/methods/loss_scaler.h"
#include "tessera/methods/step_context.h"
#include "tessera/train/experiment.h"
#include "tessera/train/registry.h"

namespace tessera::app {
namespace {


// Stands in for a huge image without holding one: patch n is patch (n mod base) of a fixed base image,
// cut on request like any lazily read image, so host memory stays constant while N grows.
class RepeatingBag final : public data::PatchBag {
 public:
  RepeatingBag(torch::Tensor base, data::PatchGrid grid, int64_t n) : base_(std::move(base), grid), n_(n) {}
  int64_t size() const override { return n_; }
  torch::Tensor gather(const torch::Tensor& idx) const override { return base_.gather(idx.remainder(base_.size())); }

 private:
  data::ImageGridBag base_;
  int64_t n_;
};

methods::Ips make_method(const BenchIpsOptions& o, const std::string& loading) {
  models::IpsNetOptions net;
  net.encoder.arch = o.encoder;
  net.encoder.args = o.encoder_args;
  net.encoder.in_channels = o.channels;
  net.encoder.stages = o.stages;
  net.encoder.width = o.width_factor;
  net.aggregator.heads = 8;
  net.aggregator.d_k = 16;
  net.aggregator.d_inner = 512;
  net.tasks = {{"majority", "softmax", 10}, {"max", "softmax", 10}, {"top", "softmax", 10}, {"multi", "sigmoid", 10}};
  methods::IpsOptions ips;
  ips.M = o.M;
  ips.I = o.I;
  ips.loading = loading;
  ips.grad_chunk = o.grad_chunk;
  ips.patch = ips.stride = o.patch;
  methods::Ips method(models::IpsNet(net), ips, runtime::device_from_name(o.device));
  method.set_precision(parse_precision(o.precision));
  return method;
}

TaskTensors random_labels(int64_t B) {
  return {{"majority", torch::randint(10, {B}, torch::kLong)},
          {"max", torch::randint(10, {B}, torch::kLong)},
          {"top", torch::randint(10, {B}, torch::kLong)},
          {"multi", torch::randint(2, {B, 10}).to(torch::kFloat32)}};
}

struct StepTime {
  double total = 0, selection = 0;
};

// One training step (selection + gradient pass + AdamW step) as Ips::train_step runs it: the bags are
// the only reference to the images and are dropped once the winners are gathered.
StepTime timed_step(methods::Ips& ips, std::vector<data::PatchBagPtr> bags, const TaskTensors& labels,
                    methods::StepContext& context) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  ips.module().train();
  const auto sel = ips.select(bags);
  bags.clear();
  const auto selected = clock::now();
  ips.train_on(sel, labels, context);
  return {std::chrono::duration<double>(clock::now() - start).count(),
          std::chrono::duration<double>(selected - start).count()};
}

void run_step_bench(const BenchIpsOptions& o) {
  auto ips = make_method(o, o.loading);
  torch::optim::AdamW opt(ips.module().parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.1));
  methods::LossScaler scaler;
  methods::StepContext context(opt, o.precision == "fp16" ? &scaler : nullptr);
  auto labels = random_labels(o.batch);
  for (auto& [task, y] : labels) y = y.to(ips.device());
  const int64_t N = data::PatchGrid::fit(o.height, o.width, o.patch, o.patch).count();
  std::vector<double> times, selection_times;
  for (int64_t s = 0; s < o.warmup + o.steps; ++s) {
    data::Batch batch;
    batch.images = torch::rand({o.batch, o.channels, o.height, o.width});  // a fresh batch, as from a loader
    auto bags = ips.bags(batch);
    batch.images = torch::Tensor();
    if (s == o.warmup) memory::reset_peaks();
    const auto t = timed_step(ips, std::move(bags), labels, context);
    std::cerr << fmt::format("step {}/{}: {:.2f} s (selection {:.2f} s){}\n", s + 1, o.warmup + o.steps, t.total,
                             t.selection, s < o.warmup ? " (warm-up)" : "");
    if (s >= o.warmup) times.push_back(t.total), selection_times.push_back(t.selection);
  }
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double step_median = median(times), selection_median = median(selection_times);
  const auto mem = memory::snapshot();
  std::cout << fmt::format(
      "| method | B | N | patch | M | I | grad chunk | encoder | loading | precision | device | threads | step s (median of {}) | selection s | peak tensors | peak RSS |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
      "| ips | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2f} | {:.2f} | {} | {} |\n",
      times.size(), o.batch, N, o.patch, o.M, o.I, o.grad_chunk,
      models::resolve_encoder(o.encoder, o.encoder_args).is_vit() ? o.encoder + " " + o.encoder_args
                                                                 : fmt::format("{} w{} s{}", o.encoder, o.width_factor, o.stages),
      o.loading, o.precision,
      o.device, torch::get_num_threads(), step_median, selection_median, memory::format_bytes(mem.peak_tensor_bytes),
      memory::format_bytes(mem.peak_rss_bytes));
  if (!o.json.empty()) {
    nlohmann::json j{{"method", "ips"}, {"step_seconds_median", step_median},
                     {"selection_seconds_median", selection_median}, {"step_seconds", times},
                     {"peak_tensor_bytes", mem.peak_tensor_bytes}, {"peak_rss_bytes", mem.peak_rss_bytes},
                     {"settings", {{"batch", o.batch}, {"height", o.height}, {"width", o.width}, {"N", N},
                                   {"patch", o.patch}, {"M", o.M}, {"I", o.I}, {"grad_chunk", o.grad_chunk},
                                   {"encoder", o.encoder}, {"encoder_args", o.encoder_args},
                                   {"encoder_width", o.width_factor}, {"stages", o.stages}, {"loading", o.loading},
                                   {"threads", torch::get_num_threads()}, {"precision", o.precision},
                                   {"device", o.device}}}};
    write_bench_json(o.json, j);
  }
}

void run_patch_sweep(const BenchIpsOptions& o) {
  const auto counts = parse_int_list(o.patches, "--patches (patch counts, e.g. 900,10000,100000)");
  auto ips = make_method(o, "lazy");
  torch::optim::AdamW opt(ips.module().parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.1));
  methods::StepContext context(opt);
  const auto base = torch::rand({o.channels, 30 * o.patch, 30 * o.patch});
  const auto grid = data::PatchGrid::fit(base.size(1), base.size(2), o.patch, o.patch);
  const auto labels = random_labels(1);
  timed_step(ips, {std::make_shared<RepeatingBag>(base, grid, counts.front())}, labels, context);  // warm-up
  nlohmann::json rows = nlohmann::json::array();
  std::cout << fmt::format("| N | step s | peak tensors | peak tensors / first | peak RSS |\n|---|---|---|---|---|\n");
  int64_t first = 0;
  for (int64_t n : counts) {
    memory::reset_peaks();
    const double t = timed_step(ips, {std::make_shared<RepeatingBag>(base, grid, n)}, labels, context).total;
    const auto mem = memory::snapshot();
    const auto peak = mem.peak_tensor_bytes;
    if (!first) first = peak;
    std::cout << fmt::format("| {} | {:.2f} | {} | {:.3f} | {} |\n", n, t, memory::format_bytes(peak),
                             static_cast<double>(peak) / static_cast<double>(first),
                             memory::format_bytes(mem.peak_rss_bytes));
    rows.push_back({{"N", n}, {"step_seconds", t}, {"peak_tensor_bytes", peak}, {"peak_rss_bytes", mem.peak_rss_bytes}});
  }
  if (!o.json.empty()) {
    nlohmann::json j{{"method", "ips"}, {"sweep", rows},
                     {"settings", {{"batch", 1}, {"patch", o.patch}, {"M", o.M}, {"I", o.I}, {"encoder", o.encoder},
                                   {"encoder_width", o.width_factor}, {"stages", o.stages}, {"loading", "lazy"},
                                   {"threads", torch::get_num_threads()}}}};
    write_bench_json(o.json, j);
  }
}


Config patchgd_bench_config(const BenchPatchGdOptions& o, const std::string& method, int64_t size, int64_t batch) {
  Config c;
  c.data.dataset = "ultramnist";  // a single-task image set (batches are random tensors)
  c.train.method = method;
  c.train.batch_size = batch;
  c.data.height = c.data.width = size;
  c.data.patch = c.data.stride = o.patch;
  c.model.encoder = o.encoder;
  c.model.in_channels = o.channels;
  c.model.stages = 4;
  c.patchgd.q = o.q;
  c.patchgd.latent = o.latent;
  c.patchgd.head = o.head;
  c.train.precision = o.precision;
  c.train.device = o.device;
  train::validate_model(c);
  return c;
}

data::Batch random_batch(int64_t batch, int64_t channels, int64_t size, int64_t classes) {
  data::Batch b;
  b.images = torch::randn({batch, channels, size, size});
  b.labels["label"] = torch::randint(classes, {batch}, torch::kLong);
  return b;
}

void run_patchgd_step_bench(const BenchPatchGdOptions& o) {
  const std::vector<Task> tasks{{"label", "softmax", o.classes}};
  auto method = train::make_method(patchgd_bench_config(o, "patchgd", o.size, o.batch), tasks);
  torch::optim::AdamW opt(method->module().parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0));
  methods::LossScaler scaler;
  methods::StepContext context(opt, o.precision == "fp16" ? &scaler : nullptr);
  std::vector<double> times;
  for (int64_t s = 0; s < o.warmup + o.steps; ++s) {
    auto batch = random_batch(o.batch, o.channels, o.size, o.classes);
    if (s == o.warmup) memory::reset_peaks();
    const auto start = std::chrono::steady_clock::now();
    method->train_step(std::move(batch), context);
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cerr << fmt::format("step {}/{}: {:.2f} s{}\n", s + 1, o.warmup + o.steps, t, s < o.warmup ? " (warm-up)" : "");
    if (s >= o.warmup) times.push_back(t);
  }
  auto sorted = times;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  const auto mem = memory::snapshot();
  const int64_t n = data::PatchGrid::fit(o.size, o.size, o.patch, o.patch).count();
  std::cout << fmt::format(
      "| method | B | image | patch | n | q | backbone | s | precision | device | threads | step s (median of {}) | peak tensors | peak RSS |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
      "| patchgd | {} | {}x{}x{} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2f} | {} | {} |\n",
      times.size(), o.batch, o.channels, o.size, o.size, o.patch, n, o.q, o.encoder, o.latent, o.precision, o.device,
      torch::get_num_threads(),
      median, memory::format_bytes(mem.peak_tensor_bytes), memory::format_bytes(mem.peak_rss_bytes));
  if (!o.json.empty()) {
    nlohmann::json j{{"method", "patchgd"}, {"step_seconds_median", median}, {"step_seconds", times},
                     {"peak_tensor_bytes", mem.peak_tensor_bytes}, {"peak_rss_bytes", mem.peak_rss_bytes},
                     {"settings", {{"batch", o.batch}, {"size", o.size}, {"channels", o.channels}, {"patch", o.patch},
                                   {"n", n}, {"q", o.q}, {"backbone", o.encoder}, {"latent", o.latent},
                                   {"classes", o.classes}, {"threads", torch::get_num_threads()},
                                   {"precision", o.precision}, {"device", o.device}}}};
    write_bench_json(o.json, j);
  }
}

// Peak tensor bytes of one training step of PatchGD and of GD per image size, at a fixed batch.
void run_size_sweep(const BenchPatchGdOptions& o) {
  const auto sizes = parse_int_list(o.sizes, "--sizes (image sides, e.g. 512,1024,2048,4096)");
  const std::vector<Task> tasks{{"label", "softmax", o.classes}};
  if (!o.budget.empty()) memory::set_budget(memory::parse_bytes(o.budget));
  nlohmann::json rows = nlohmann::json::array();
  std::cout << "| image | method | step s | peak tensors | peak RSS |\n|---|---|---|---|---|\n";
  for (int64_t size : sizes) {
    for (const std::string method_name : {"patchgd", "gd"}) {
      memory::reset_peaks();
      nlohmann::json row{{"size", size}, {"method", method_name}};
      std::string peak_text, time_text = "-";
      try {
        auto config = patchgd_bench_config(o, method_name, size, o.batch);
        const int64_t n = data::PatchGrid::fit(size, size, o.patch, o.patch).count();
        if (o.k > 0) config.patchgd.q = std::min(1.0, static_cast<double>(o.k) / static_cast<double>(n));
        row["q"] = config.patchgd.q;
        auto method = train::make_method(config, tasks);
        torch::optim::AdamW opt(method->module().parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0));
        const auto start = std::chrono::steady_clock::now();
        method->train_step(random_batch(o.batch, o.channels, size, o.classes), opt);
        const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        row["step_seconds"] = t;
        row["peak_tensor_bytes"] = memory::snapshot().peak_tensor_bytes;
        time_text = fmt::format("{:.1f}", t);
        peak_text = memory::format_bytes(row["peak_tensor_bytes"].get<int64_t>());
      } catch (const memory::BudgetExceeded&) {
        row["exceeds_budget"] = memory::budget();
        peak_text = "> " + memory::format_bytes(memory::budget()) + " (budget hit)";
      }
      row["peak_rss_bytes"] = memory::snapshot().peak_rss_bytes;
      std::cout << fmt::format("| {}x{} | {} | {} | {} | {} |\n", size, size, method_name, time_text, peak_text,
                               memory::format_bytes(row["peak_rss_bytes"].get<int64_t>()));
      rows.push_back(row);
    }
  }
  if (!o.json.empty()) {
    nlohmann::json j{{"sweep", rows},
                     {"settings", {{"batch", o.batch}, {"channels", o.channels}, {"patch", o.patch}, {"q", o.q}, {"k", o.k},
                                   {"backbone", o.encoder}, {"latent", o.latent}, {"budget", o.budget},
                                   {"threads", torch::get_num_threads()}}}};
    write_bench_json(o.json, j);
  }
}

}  // namespace

std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what) {
  std::vector<int64_t> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    const auto value = parse_integer(item);
    TESSERA_CHECK(value, what, " must be comma-separated integers, got '", text, "'");
    out.push_back(*value);
  }
  TESSERA_CHECK(!out.empty(), what, " is empty");
  return out;
}

nlohmann::json bench_provenance() {
  std::string cpu = "unknown";
  std::ifstream info("/proc/cpuinfo");
  for (std::string line; std::getline(info, line);) {
    if (line.rfind("model name", 0) == 0) {
      cpu = line.substr(line.find(':') + 2);
      break;
    }
  }
  // The instruction sets that decide which precision is fastest (bf16 needs AMX or avx512_bf16 to pay).
  std::string isa;
  std::ifstream flags_file("/proc/cpuinfo");
  for (std::string line; std::getline(flags_file, line);) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string w; words >> w;) {
      for (const char* f : {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"}) {
        if (w == f) isa += (isa.empty() ? "" : " ") + w;
      }
    }
    break;
  }
  return {{"tessera", version()},       {"commit", commit()}, {"isa", isa},
          {"libtorch", libtorch_version()}, {"cpu", cpu},
          {"cores", std::thread::hardware_concurrency()}, {"threads", torch::get_num_threads()},
          {"compiler", __VERSION__},   {"date", fmt::format("{:%Y-%m-%d}", fmt::localtime(std::time(nullptr)))}};
}

void write_bench_json(const std::string& path, nlohmann::json record) {
  record["provenance"] = bench_provenance();
  write_file_atomic(path, record.dump(2) + "\n");
}

void bench_ips(const BenchIpsOptions& o) {
  runtime::ScopedThreads threads(o.threads);
  runtime::seed_everything(0);
  if (o.patches.empty()) run_step_bench(o);
  else run_patch_sweep(o);
}

void bench_patchgd(const BenchPatchGdOptions& o) {
  runtime::ScopedThreads threads(o.threads);
  runtime::seed_everything(0);
  if (o.sizes.empty()) run_patchgd_step_bench(o);
  else run_size_sweep(o);
}

}  // namespace tessera::app
