#include "tessera/app/slide_workflows.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include <filesystem>
#include <future>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/runtime.h"
#include "tessera/data/csv_images.h"
#include "tessera/data/idx.h"
#include "tessera/methods/ips.h"
#include "tessera/models/resnet.h"
#include "tessera/models/state_dict.h"
#include "tessera/slides/h5.h"
#include "tessera/slides/slide_dataset.h"
#include "tessera/train/experiment.h"

namespace tessera::app {
namespace fs = std::filesystem;

std::string make_slides(const MakeSlidesOptions& o) {
  TESSERA_CHECK(!o.out.empty(), "make-slides needs --out");
  fs::create_directories(o.out);
  std::shared_ptr<data::MnistDigits> digits;
  if (o.digits > 0) digits = std::make_shared<data::MnistDigits>(data::load_mnist(o.mnist_dir, "test"));
  std::string manifest = "slide,label,split\n";
  const int64_t total = o.count + o.test_count;
  for (int64_t i = 0; i < total; ++i) {
    auto s = o.slide;
    s.seed = o.slide.seed + static_cast<uint64_t>(i);
    const int64_t label = i % 2;
    s.digits = label ? o.digits : 0;
    const std::string name = fmt::format("slide_{:03d}.tif", i);
    slides::write_synthetic_slide((fs::path(o.out) / name).string(), s, digits.get());
    manifest += fmt::format("{},{},{}\n", name, label, i < o.count ? "train" : "test");
    log::info("wrote {} ({}x{}, label {})", name, s.width, s.height, label);
  }
  const auto path = (fs::path(o.out) / "manifest.csv").string();
  write_file_atomic(path, manifest);
  return path;
}

namespace {

void extract_one(const ExtractFeaturesOptions& o, const slides::ManifestEntry& e, const models::FoldedResNet& encoder,
                 int64_t dim, const std::string& path) {
  const auto reader = slides::open_slide(e.path, o.backend);
  auto grid = slides::cached_tissue_patches(e, *reader, o.grid, o.cache_dir);
  const auto bag = std::make_shared<slides::SlideBag>(reader, grid, o.read_workers, data::parse_floats(o.mean, "--mean"),
                                                      data::parse_floats(o.std, "--std"));
  const std::string source = o.run.empty() ? o.weights : o.run;
  slides::FeatureWriter writer(path, grid, dim, {{"encoder", o.encoder}, {"weights", source}, {"slide", e.path}});
  const int64_t N = bag->size();
  // The next chunk is read while this one is encoded.
  auto pending = std::async(std::launch::async, [&] { return bag->range(0, std::min(o.batch, N)); });
  for (int64_t begin = 0; begin < N; begin += o.batch) {
    const int64_t end = std::min(begin + o.batch, N);
    const auto patches = pending.get();
    if (end < N) pending = std::async(std::launch::async, [&, end] { return bag->range(end, std::min(end + o.batch, N)); });
    c10::InferenceMode inference;
    writer.write(begin, encoder.forward(patches.contiguous(at::MemoryFormat::ChannelsLast)));
  }
  writer.finish();
}

// The encoder: a tessera IPS run's (normalisation and patch geometry from its spec), or a ResNet
// with torchvision weights.
models::ResNet load_encoder(ExtractFeaturesOptions& o) {
  if (!o.run.empty()) {
    auto run = train::open_run(o.run);
    auto* ips = dynamic_cast<methods::Ips*>(run.method.get());
    TESSERA_CHECK(ips && run.spec.input.kind != "features", "extract-features --run needs an IPS run with an image encoder; '",
                  o.run, "' is a ", run.spec.method, " run on ", run.spec.input.kind, " inputs");
    TESSERA_CHECK(run.spec.input.channels == 3, "extract-features reads RGB slides; run '", o.run, "' encodes ",
                  run.spec.input.channels, "-channel patches");
    const auto join = [](const std::vector<float>& v) { return fmt::format("{}", fmt::join(v, ",")); };
    o.mean = join(run.spec.input.normalization.mean);
    o.std = join(run.spec.input.normalization.std);
    o.grid.patch = run.spec.input.patch;
    o.grid.stride = run.spec.input.stride;
    o.encoder = run.config.model.encoder;
    log::info("encoder, normalisation and {} px patches from run {}", o.grid.patch, o.run);
    return ips->net()->encoder;
  }
  models::ResNetOptions ro;
  ro.arch = o.encoder;
  ro.stages = o.stages;
  ro.width = o.width;
  models::ResNet net(ro);
  if (!o.weights.empty()) {
    const auto report = models::load_state_dict(*net, models::read_state_dict(o.weights), /*strict=*/false);
    TESSERA_CHECK(!report.loaded.empty(), "no tensor of '", o.weights, "' matches a ", o.encoder, "; is it a torchvision state dict?");
    log::info("loaded {} encoder tensors from {}", report.loaded.size(), o.weights);
  } else {
    log::warn("no --weights: features come from a randomly initialised {} (fine for tests, not for real slides)", o.encoder);
  }
  return net;
}

}  // namespace

ExtractSummary extract_features(ExtractFeaturesOptions o) {
  runtime::set_threads(o.threads);
  if (o.cache_dir.empty()) o.cache_dir = (fs::path(o.manifest).parent_path() / "tessera-cache").string();
  auto net = load_encoder(o);
  net->eval();
  net->use_channels_last();
  const auto encoder = [&] {
    torch::NoGradGuard no_grad;
    return net->fold();
  }();
  fs::create_directories(o.out);
  ExtractSummary summary;
  for (const auto& e : slides::read_manifest(o.manifest)) {
    const auto path = (fs::path(o.out) / (e.id + ".h5")).string();
    if (fs::exists(path)) {
      ++summary.existing;
      continue;
    }
    try {
      extract_one(o, e, encoder, net->out_features(), path);
      ++summary.written;
      log::info("extracted {}", path);
    } catch (const Error& err) {
      if (!o.skip_errors) fail("slide '", e.id, "' (", e.path, "): ", err.what(), " (pass --skip-errors to go on)");
      summary.failed.push_back(e.id + ": " + err.what());
    }
  }
  return summary;
}

}  // namespace tessera::app
