// Benchmarks that print one table (and JSON with the build's provenance): IPS and PatchGD training
// steps, patch-count and image-size sweeps, and the whole-slide benchmarks.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace tessera::app {

struct BenchIpsOptions {
  int64_t batch = 16, height = 1500, width = 1500, channels = 1, patch = 50;
  int64_t M = 100, I = 100, width_factor = 64, stages = 2, steps = 3, warmup = 1, threads = 0;
  int64_t grad_chunk = 0;  // ips.grad_chunk
  std::string encoder = "resnet18", encoder_args, loading = "eager", patches, json;
  std::string precision = "fp32", device = "cpu";
};

// bench ips: median training-step time and peak memory (patches empty), or the lazy-loading sweep of
// peak tensor bytes over the patch counts in `patches` (B = 1).
void bench_ips(const BenchIpsOptions& options);

struct BenchPatchGdOptions {
  int64_t batch = 4, size = 512, channels = 3, patch = 128, latent = 256, classes = 6;
  int64_t steps = 3, warmup = 1, threads = 0;
  int64_t k = 0;  // sweep: > 0 fixes the patches per inner iteration (q = k / n) instead of q
  double q = 0.25;
  std::string encoder = "resnet50", head = "original", sizes, budget, json;
  std::string precision = "fp32", device = "cpu";
};

// bench patchgd: median training-step time and peak memory (sizes empty), or PatchGD vs GD peak tensor
// memory over the image sides in `sizes`.
void bench_patchgd(const BenchPatchGdOptions& options);

struct BenchEncoderOptions {
  std::string encoder = "vit_base_patch16_224", encoder_args, precision = "fp32", json;
  int64_t batch = 16, size = 0, threads = 0, steps = 3, warmup = 1;  // size 0: the encoder's input size
};
// bench encoder: images/s without gradients (inference mode) and for forward + backward, and peak tensor
// bytes of each, median of `steps`.
void bench_encoder(const BenchEncoderOptions& options);

#ifdef TESSERA_WITH_SLIDES
// bench slide-read: patches/s of random patch reads per back-end and thread count.
struct ReadBenchOptions {
  std::string slide, backends = "openslide,vips", threads = "1,2,4", json;
  int64_t patches = 2000, patch = 256, level = 0;
};
void bench_slide_read(const ReadBenchOptions& options);

// bench slide-ips: one lazy IPS training step per slide, peak memory against N.
struct SlideIpsBenchOptions {
  std::string slides, json, backend = "auto";
  int64_t patch = 256, M = 16, I = 64, width = 8, stages = 1, read_workers = 2, threads = 0;
};
void bench_slide_ips(const SlideIpsBenchOptions& options);

// bench feature-bags: IPS on HDF5 feature bags at the paper's CAMELYON16 settings.
struct FeatureBagBenchOptions {
  std::string rows = "1000,10000,50000,250000", dir = "build/bench-bags", json;
  int64_t dim = 2048, M = 5000, I = 5000, batch = 16, steps = 1, threads = 0;
};
void bench_feature_bags(const FeatureBagBenchOptions& options);
#endif

// "900,10000" -> {900, 10000}; errors name the option (`what`).
std::vector<int64_t> parse_int_list(const std::string& text, const std::string& what);

// Where a number came from: tessera version and commit, LibTorch version, CPU model, threads, compiler.
nlohmann::json bench_provenance();
// Writes record + {"provenance": ...} to path atomically.
void write_bench_json(const std::string& path, nlohmann::json record);

}  // namespace tessera::app
