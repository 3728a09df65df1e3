// tessera bench slide-read | slide-ips | feature-bags: patch-reading throughput per back-end and
// thread count, and the peak memory of IPS steps on slides / feature bags as N grows (must stay flat).
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "tessera/app/bench.h"
#include "tessera/core/error.h"
#include "tessera/core/memory.h"
#include "tessera/core/runtime.h"
#include "tessera/core/thread_pool.h"
#include "tessera/data/image_io.h"
#include "tessera/methods/ips.h"
#include "tessera/slides/h5.h"
#include "tessera/slides/slide_dataset.h"

namespace tessera::app {
namespace {
namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

std::vector<std::string> split_paths(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  return out;
}

void save_json(const std::string& path, const nlohmann::json& j) {
  if (!path.empty()) write_bench_json(path, j);
}

void run_read_bench(const ReadBenchOptions& o) {
  std::cout << "| backend | threads | patches | seconds | patches/s |\n|---|---|---|---|---|\n";
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& backend : split_paths(o.backends)) {
    const auto reader = slides::open_slide(o.slide, backend);
    const auto& l0 = reader->levels().front();
    const double ds = reader->levels()[o.level].downsample;
    const int64_t span = static_cast<int64_t>(o.patch * ds);
    for (const int64_t threads : parse_int_list(o.threads, "--threads")) {
      // Fresh random positions per run (seeded), so each run pays for its own tile decoding.
      auto gen = at::make_generator<at::CPUGeneratorImpl>(1000 * threads + (backend == "vips"));
      const auto xs = torch::randint(0, l0.width - span, {o.patches}, gen, torch::kLong);
      const auto ys = torch::randint(0, l0.height - span, {o.patches}, gen, torch::kLong);
      ThreadPool pool(threads, data::release_vips_thread);  // started before the clock
      const auto start = clock_type::now();
      pool.parallel_for(threads, [&](int64_t t) {
        for (int64_t i = o.patches * t / threads; i < o.patches * (t + 1) / threads; ++i) {
          reader->read_region(xs[i].item<int64_t>(), ys[i].item<int64_t>(), static_cast<int>(o.level), o.patch, o.patch);
        }
      });
      const double s = seconds_since(start);
      std::cout << fmt::format("| {} | {} | {} | {:.2f} | {:.0f} |\n", backend, threads, o.patches, s, o.patches / s);
      rows.push_back({{"backend", backend}, {"threads", threads}, {"patches", o.patches}, {"seconds", s}});
    }
  }
  save_json(o.json, {{"slide", o.slide}, {"patch", o.patch}, {"level", o.level}, {"runs", rows}});
}


void run_slide_ips_bench(const SlideIpsBenchOptions& o) {
  models::IpsNetOptions net;
  net.encoder.in_channels = 3;
  net.encoder.stages = o.stages;
  net.encoder.width = o.width;
  net.aggregator.heads = 8;
  net.aggregator.d_k = 16;
  net.aggregator.d_inner = 4 * o.width;
  net.tasks = {{"label", "softmax", 2}};
  net.pos_enc = false;
  methods::IpsOptions io;
  io.M = o.M;
  io.I = o.I;
  io.loading = "lazy";
  methods::Ips ips(models::IpsNet(net), io, torch::kCPU);
  torch::optim::AdamW opt(ips.module().parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0.1));
  std::cout << "| slide | gigapixels | N patches | step s | peak tensors | peak RSS |\n|---|---|---|---|---|---|\n";
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& path : split_paths(o.slides)) {
    const auto reader = slides::open_slide(path, o.backend);
    slides::PatchGridOptions g;
    g.patch = o.patch;
    const auto grid = slides::tissue_patches(*reader, g);
    const auto& l0 = reader->levels().front();
    data::Batch batch;
    batch.bags = {std::make_shared<slides::SlideBag>(reader, grid, o.read_workers)};
    batch.labels = {{"label", torch::ones({1}, torch::kLong)}};
    memory::reset_peaks();
    const auto start = clock_type::now();
    ips.train_step(batch, opt);
    const double s = seconds_since(start);
    const auto mem = memory::snapshot();
    std::cout << fmt::format("| {} | {:.2f} | {} | {:.1f} | {} | {} |\n", fs::path(path).filename().string(),
                             l0.width * 1e-9 * l0.height, grid.count(), s, memory::format_bytes(mem.peak_tensor_bytes),
                             memory::format_bytes(mem.peak_rss_bytes)) << std::flush;
    rows.push_back({{"slide", path}, {"N", grid.count()}, {"seconds", s}, {"peak_tensor_bytes", mem.peak_tensor_bytes},
                    {"peak_rss_bytes", mem.peak_rss_bytes}});
  }
  save_json(o.json, {{"settings", {{"patch", o.patch}, {"M", o.M}, {"I", o.I}, {"encoder_width", o.width},
                                   {"stages", o.stages}, {"threads", torch::get_num_threads()}}},
                     {"runs", rows}});
}


// A bag of N random feature rows (written once, reused).
std::string synthetic_bag(const FeatureBagBenchOptions& o, int64_t n) {
  fs::create_directories(o.dir);
  const auto path = (fs::path(o.dir) / fmt::format("bag-{}x{}.h5", n, o.dim)).string();
  if (fs::exists(path)) return path;
  slides::PatchCoords grid;
  grid.patch = grid.footprint = grid.stride = 256;
  const auto i = torch::arange(n, torch::kLong);
  grid.coords = torch::stack({i.remainder(1000) * 256, i.div(1000, "floor") * 256}, 1);
  slides::FeatureWriter writer(path, grid, o.dim, {{"encoder", "random"}});
  auto gen = at::make_generator<at::CPUGeneratorImpl>(n);
  for (int64_t begin = 0; begin < n; begin += 8192) {
    const int64_t end = std::min(begin + 8192, n);
    writer.write(begin, torch::randn({end - begin, o.dim}, gen).relu_());
  }
  writer.finish();
  return path;
}

void run_feature_bag_bench(const FeatureBagBenchOptions& o) {
  models::IpsNetOptions net;  // the paper's CAMELYON16 network
  net.features = true;
  net.projector.in_features = o.dim;
  net.projector.dim = 512;
  net.aggregator.heads = 8;
  net.aggregator.d_k = 64;
  net.aggregator.d_inner = 2048;
  net.tasks = {{"label", "softmax", 2}};
  net.pos_enc = false;
  methods::IpsOptions io;
  io.M = o.M;
  io.I = o.I;
  io.loading = "eager_sequential";
  io.seq_batch = 1;
  methods::Ips ips(models::IpsNet(net), io, torch::kCPU);
  torch::optim::AdamW opt(ips.module().parameters(), torch::optim::AdamWOptions(3e-4).weight_decay(0.1));
  std::cout << "| N per slide | B | M = I | D in | step s | s per slide | peak tensors | peak RSS | target |\n"
               "|---|---|---|---|---|---|---|---|---|\n";
  nlohmann::json rows = nlohmann::json::array();
  for (const int64_t n : parse_int_list(o.rows, "--rows")) {
    const auto path = synthetic_bag(o, n);
    data::Batch batch;
    for (int64_t b = 0; b < o.batch; ++b) batch.bags.push_back(std::make_shared<slides::FeatureBag>(path));
    batch.labels = {{"label", torch::arange(o.batch, torch::kLong).remainder(2)}};
    std::vector<double> times;
    memory::reset_peaks();
    for (int64_t s = 0; s < o.steps; ++s) {
      const auto start = clock_type::now();
      ips.train_step(batch, opt);
      times.push_back(seconds_since(start));
    }
    const auto mem = memory::snapshot();
    const double t = *std::min_element(times.begin(), times.end());
    const bool ok = mem.peak_tensor_bytes <= 1500LL * 1000 * 1000;
    std::cout << fmt::format("| {} | {} | {} | {} | {:.1f} | {:.2f} | {} | {} | {} |\n", n, o.batch, o.M, o.dim, t,
                             t / o.batch, memory::format_bytes(mem.peak_tensor_bytes),
                             memory::format_bytes(mem.peak_rss_bytes), ok ? "<= 1.5 GB" : "OVER 1.5 GB") << std::flush;
    rows.push_back({{"N", n}, {"step_seconds", t}, {"seconds_per_slide", t / o.batch},
                    {"peak_tensor_bytes", mem.peak_tensor_bytes}, {"peak_rss_bytes", mem.peak_rss_bytes}});
  }
  save_json(o.json, {{"settings", {{"batch", o.batch}, {"M", o.M}, {"I", o.I}, {"dim", o.dim},
                                   {"loading", "eager_sequential"}, {"threads", torch::get_num_threads()}}},
                     {"runs", rows}});
}

}  // namespace

void bench_slide_read(const ReadBenchOptions& o) { run_read_bench(o); }

void bench_slide_ips(const SlideIpsBenchOptions& o) {
  runtime::ScopedThreads threads(o.threads);
  run_slide_ips_bench(o);
}

void bench_feature_bags(const FeatureBagBenchOptions& o) {
  runtime::ScopedThreads threads(o.threads);
  run_feature_bag_bench(o);
}

}  // namespace tessera::app
