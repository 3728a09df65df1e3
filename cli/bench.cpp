// tessera bench ips: median training-step time and peak memory at a stated setting, as a table and JSON;
// --patches sweeps N in lazy mode to show that peak tensor memory does not grow with N.
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <iostream>

#include "commands.h"
#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/memory.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/runtime.h"
#include "tessera/methods/ips.h"

namespace tessera::cli {
namespace {

struct BenchIpsOptions {
  int64_t batch = 16, height = 1500, width = 1500, channels = 1, patch = 50;
  int64_t M = 100, I = 100, width_factor = 64, stages = 2, steps = 3, warmup = 1, threads = 0;
  std::string encoder = "resnet18", loading = "eager", patches, json;
};

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
  ips.patch = ips.stride = o.patch;
  return methods::Ips(models::IpsNet(net), ips, torch::kCPU);
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
                    torch::optim::Optimizer& opt) {
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  ips.module().train();
  const auto sel = ips.select(bags);
  bags.clear();
  const auto selected = clock::now();
  opt.zero_grad();
  const auto loss = methods::multitask_loss(ips.forward(sel), labels, ips.tasks());
  loss.backward();
  opt.step();
  return {std::chrono::duration<double>(clock::now() - start).count(),
          std::chrono::duration<double>(selected - start).count()};
}

void run_step_bench(const BenchIpsOptions& o) {
  auto ips = make_method(o, o.loading);
  torch::optim::AdamW opt(ips.module().parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.1));
  const auto labels = random_labels(o.batch);
  const int64_t N = data::PatchGrid::fit(o.height, o.width, o.patch, o.patch).count();
  std::vector<double> times, selection_times;
  for (int64_t s = 0; s < o.warmup + o.steps; ++s) {
    data::Batch batch;
    batch.images = torch::rand({o.batch, o.channels, o.height, o.width});  // a fresh batch, as from a loader
    auto bags = ips.bags(batch);
    batch.images = torch::Tensor();
    if (s == o.warmup) memory::reset_peaks();
    const auto t = timed_step(ips, std::move(bags), labels, opt);
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
      "| method | B | N | patch | M | I | encoder | loading | threads | step s (median of {}) | selection s | peak tensors | peak RSS |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
      "| ips | {} | {} | {} | {} | {} | {} w{} s{} | {} | {} | {:.2f} | {:.2f} | {} | {} |\n",
      times.size(), o.batch, N, o.patch, o.M, o.I, o.encoder, o.width_factor, o.stages, o.loading,
      torch::get_num_threads(), step_median, selection_median, memory::format_bytes(mem.peak_tensor_bytes),
      memory::format_bytes(mem.peak_rss_bytes));
  if (!o.json.empty()) {
    nlohmann::json j{{"method", "ips"}, {"step_seconds_median", step_median},
                     {"selection_seconds_median", selection_median}, {"step_seconds", times},
                     {"peak_tensor_bytes", mem.peak_tensor_bytes}, {"peak_rss_bytes", mem.peak_rss_bytes},
                     {"settings", {{"batch", o.batch}, {"height", o.height}, {"width", o.width}, {"N", N},
                                   {"patch", o.patch}, {"M", o.M}, {"I", o.I}, {"encoder", o.encoder},
                                   {"encoder_width", o.width_factor}, {"stages", o.stages}, {"loading", o.loading},
                                   {"threads", torch::get_num_threads()}, {"dtype", "float32"}}}};
    write_file_atomic(o.json, j.dump(2) + "\n");
  }
}

void run_patch_sweep(const BenchIpsOptions& o) {
  std::vector<int64_t> counts;
  std::stringstream ss(o.patches);
  for (std::string item; std::getline(ss, item, ',');) counts.push_back(std::stoll(item));
  TESSERA_CHECK(!counts.empty(), "--patches needs a comma-separated list of patch counts, e.g. 900,10000,100000");
  auto ips = make_method(o, "lazy");
  torch::optim::AdamW opt(ips.module().parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.1));
  const auto base = torch::rand({o.channels, 30 * o.patch, 30 * o.patch});
  const auto grid = data::PatchGrid::fit(base.size(1), base.size(2), o.patch, o.patch);
  const auto labels = random_labels(1);
  timed_step(ips, {std::make_shared<RepeatingBag>(base, grid, counts.front())}, labels, opt);  // warm-up
  nlohmann::json rows = nlohmann::json::array();
  std::cout << fmt::format("| N | step s | peak tensors | peak tensors / first | peak RSS |\n|---|---|---|---|---|\n");
  int64_t first = 0;
  for (int64_t n : counts) {
    memory::reset_peaks();
    const double t = timed_step(ips, {std::make_shared<RepeatingBag>(base, grid, n)}, labels, opt).total;
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
    write_file_atomic(o.json, j.dump(2) + "\n");
  }
}

}  // namespace

void add_bench(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "benchmarks that print one table (and JSON with --json)");
  bench->require_subcommand(1);
  auto* sub = bench->add_subcommand("ips", "IPS training step: median time, peak tensor bytes, peak RSS");
  auto o = std::make_shared<BenchIpsOptions>();
  sub->add_option("--batch", o->batch, "images per step");
  sub->add_option("--height", o->height, "image height");
  sub->add_option("--width", o->width, "image width");
  sub->add_option("--channels", o->channels, "image channels");
  sub->add_option("--patch", o->patch, "patch size (= stride)");
  sub->add_option("--M", o->M, "patches kept");
  sub->add_option("--I", o->I, "patches scored per iteration");
  sub->add_option("--encoder", o->encoder, "resnet18 | resnet34 | resnet50");
  sub->add_option("--encoder-width", o->width_factor, "channels of the first ResNet stage");
  sub->add_option("--stages", o->stages, "ResNet stages kept");
  sub->add_option("--loading", o->loading, "eager | eager_sequential | lazy");
  sub->add_option("--steps", o->steps, "timed steps");
  sub->add_option("--warmup", o->warmup, "untimed steps first");
  sub->add_option("--threads", o->threads, "torch threads (0 = all cores)");
  sub->add_option("--patches", o->patches, "sweep: comma-separated patch counts, lazy loading, B = 1");
  sub->add_option("--json", o->json, "also write the results as JSON to this file");
  sub->callback([o] {
    runtime::set_threads(o->threads);
    runtime::seed_everything(0);
    if (o->patches.empty()) run_step_bench(*o);
    else run_patch_sweep(*o);
  });
}

}  // namespace tessera::cli
