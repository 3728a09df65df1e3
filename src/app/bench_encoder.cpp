// bench encoder: throughput of one encoder without gradients and for a training step's forward + backward.
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <iostream>

#include "tessera/app/bench.h"
#include "tessera/app/embed.h"
#include "tessera/core/error.h"
#include "tessera/core/memory.h"
#include "tessera/core/precision.h"
#include "tessera/core/runtime.h"
#include "tessera/models/encoder_registry.h"

namespace tessera::app {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

void bench_encoder(const BenchEncoderOptions& o) {
  TESSERA_CHECK(o.batch > 0 && o.steps > 0 && o.warmup >= 0 && o.size >= 0, "bench encoder: --batch and --steps must be ",
                "positive, --warmup and --size >= 0");
  runtime::ScopedThreads threads(o.threads);
  runtime::seed_everything(0);
  const auto precision = parse_precision(o.precision);
  auto spec = models::resolve_encoder(o.encoder, o.encoder_args);
  const int64_t side = o.size > 0 ? o.size : spec.preprocessing.height;
  auto net = load_encoder(spec, "");
  const auto x = torch::randn({o.batch, spec.preprocessing.channels, side, side});

  const auto time = [&](bool train) {
    std::vector<double> seconds;
    int64_t peak = 0;
    for (int64_t s = 0; s < o.warmup + o.steps; ++s) {
      if (s == o.warmup) memory::reset_peaks();
      const auto start = std::chrono::steady_clock::now();
      if (train) {
        net->train();
        net->zero_grad();
        torch::Tensor loss;
        {
          AutocastGuard autocast(precision);
          loss = net->forward(x).to(torch::kFloat).square().mean();
        }
        loss.backward();
      } else {
        net->eval();
        c10::InferenceMode inference;
        AutocastGuard autocast(precision);
        net->forward(x);
      }
      const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::cerr << fmt::format("{} step {}/{}: {:.2f} s{}\n", train ? "train" : "forward", s + 1, o.warmup + o.steps, t,
                               s < o.warmup ? " (warm-up)" : "");
      if (s >= o.warmup) seconds.push_back(t);
    }
    peak = memory::snapshot().peak_tensor_bytes;
    return std::make_pair(seconds, peak);
  };
  const auto [forward_s, forward_peak] = time(false);
  const auto [train_s, train_peak] = time(true);
  const auto rate = [&](const std::vector<double>& s) { return static_cast<double>(o.batch) / median(s); };
  const auto range = [&](const std::vector<double>& s) {
    return fmt::format("{:.2f}-{:.2f}", o.batch / *std::max_element(s.begin(), s.end()),
                       o.batch / *std::min_element(s.begin(), s.end()));
  };
  int64_t params = 0;
  for (const auto& p : net->parameters()) params += p.numel();
  std::cout << fmt::format(
      "| encoder | params | B | size | precision | threads | forward img/s (median of {}, range) | train img/s (range) | "
      "peak tensors forward | peak tensors train |\n|---|---|---|---|---|---|---|---|---|---|\n"
      "| {} | {:.1f} M | {} | {} | {} | {} | {:.2f} ({}) | {:.2f} ({}) | {} | {} |\n",
      o.steps, o.encoder, params / 1e6, o.batch, side, o.precision, torch::get_num_threads(), rate(forward_s),
      range(forward_s), rate(train_s), range(train_s), memory::format_bytes(forward_peak), memory::format_bytes(train_peak));
  if (!o.json.empty()) {
    write_bench_json(o.json, {{"bench", "encoder"},
                              {"forward_images_per_second", rate(forward_s)},
                              {"train_images_per_second", rate(train_s)},
                              {"forward_seconds", forward_s},
                              {"train_seconds", train_s},
                              {"peak_tensor_bytes", std::max(forward_peak, train_peak)},
                              {"forward_peak_tensor_bytes", forward_peak},
                              {"train_peak_tensor_bytes", train_peak},
                              {"settings",
                               {{"encoder", o.encoder}, {"encoder_args", o.encoder_args}, {"architecture", spec.architecture},
                                {"parameters", params}, {"batch", o.batch}, {"size", side}, {"precision", o.precision},
                                {"threads", torch::get_num_threads()}, {"steps", o.steps}}}});
  }
}

}  // namespace tessera::app
