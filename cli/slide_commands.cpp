// Whole-slide commands: slide-info, make-slides, preprocess, extract-features, and predict on a slide.
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>

#include "commands.h"
#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/runtime.h"
#include "tessera/data/csv_images.h"
#include "tessera/data/idx.h"
#include "tessera/data/image_io.h"
#include "tessera/models/resnet.h"
#include "tessera/models/state_dict.h"
#include "tessera/slides/h5.h"
#include "tessera/slides/heatmap.h"
#include "tessera/slides/slide_dataset.h"
#include "tessera/slides/synthetic.h"
#include "tessera/train/checkpoint.h"
#include "tessera/train/experiment.h"

namespace tessera::cli {
namespace fs = std::filesystem;

namespace {

void add_grid_options(CLI::App* sub, slides::PatchGridOptions& g) {
  sub->add_option("--patch", g.patch, "patch side in pixels at the reading resolution");
  sub->add_option("--stride", g.stride, "grid step (0: the patch side)");
  sub->add_option("--level", g.level, "pyramid level patches are read at");
  sub->add_option("--mpp", g.mpp, "read patches at this resolution (um/px) instead of a level");
  sub->add_option("--tissue", g.tissue.method, "tissue detector: otsu | saturation");
  sub->add_option("--min-tissue", g.tissue.min_fraction, "tissue fraction a patch needs");
}

void add_slide_info(CLI::App& app) {
  auto* sub = app.add_subcommand("slide-info", "print a slide's dimensions, levels, resolution and vendor");
  auto path = std::make_shared<std::string>();
  auto backend = std::make_shared<std::string>("auto");
  sub->add_option("slide", *path, "slide file")->required();
  sub->add_option("--backend", *backend, "auto | openslide | vips");
  sub->callback([=] { std::cout << slides::describe(*slides::open_slide(*path, *backend)); });
}

struct MakeSlidesOptions {
  std::string out, mnist_dir = "data/mnist";
  int64_t count = 8, test_count = 4, digits = 6;
  slides::SyntheticSlideOptions slide;
};

void add_make_slides(CLI::App& app) {
  auto* sub = app.add_subcommand("make-slides",
                                 "write synthetic pyramidal TIFF slides (tissue, glass, MNIST-digit 'tumours') and a manifest");
  auto o = std::make_shared<MakeSlidesOptions>();
  o->slide.width = o->slide.height = 4096;
  sub->add_option("--out", o->out, "output folder (slides and manifest.csv)")->required();
  sub->add_option("--count", o->count, "training slides (alternately negative / positive)");
  sub->add_option("--test-count", o->test_count, "test slides");
  sub->add_option("--width", o->slide.width, "level-0 width in pixels");
  sub->add_option("--height", o->slide.height, "level-0 height in pixels");
  sub->add_option("--digits", o->digits, "MNIST digits in each positive slide");
  sub->add_option("--digit-scale", o->slide.digit_scale, "digit upscaling (28 px x scale)");
  sub->add_option("--blobs", o->slide.tissue_blobs, "tissue regions per slide");
  sub->add_option("--tissue-size", o->slide.tissue_size, "largest tissue radius relative to the shorter side");
  sub->add_option("--mpp", o->slide.mpp, "stated resolution (um/px)");
  sub->add_option("--compression", o->slide.compression, "deflate | jpeg | none");
  sub->add_option("--quality", o->slide.quality, "JPEG quality");
  sub->add_option("--seed", o->slide.seed, "first slide's seed");
  sub->add_option("--mnist-dir", o->mnist_dir, "MNIST IDX files (scripts/get-mnist.sh)");
  sub->callback([o] {
    fs::create_directories(o->out);
    std::shared_ptr<data::MnistDigits> digits;
    if (o->digits > 0) digits = std::make_shared<data::MnistDigits>(data::load_mnist(o->mnist_dir, "test"));
    std::string manifest = "slide,label,split\n";
    const int64_t total = o->count + o->test_count;
    for (int64_t i = 0; i < total; ++i) {
      auto s = o->slide;
      s.seed = o->slide.seed + static_cast<uint64_t>(i);
      const int64_t label = i % 2;
      s.digits = label ? o->digits : 0;
      const std::string name = fmt::format("slide_{:03d}.tif", i);
      slides::write_synthetic_slide((fs::path(o->out) / name).string(), s, digits.get());
      manifest += fmt::format("{},{},{}\n", name, label, i < o->count ? "train" : "test");
      std::cout << fmt::format("wrote {} ({}x{}, label {})\n", name, s.width, s.height, label);
    }
    std::ofstream(fs::path(o->out) / "manifest.csv") << manifest;
    std::cout << "manifest: " << (fs::path(o->out) / "manifest.csv").string() << "\n";
  });
}

void add_preprocess(CLI::App& app) {
  auto* sub = app.add_subcommand("preprocess",
                                 "tissue patch coordinates for every slide of a manifest (resumable, parallel, with summary)");
  auto o = std::make_shared<slides::PreprocessOptions>();
  sub->add_option("--manifest", o->manifest, "CSV with a slide column")->required();
  sub->add_option("--out", o->out_dir, "cache folder (use it as slide.cache_dir when training)")->required();
  add_grid_options(sub, o->grid);
  sub->add_option("--backend", o->backend, "auto | openslide | vips");
  sub->add_option("--workers", o->workers, "slides processed at once");
  sub->add_option("--thumbnail", o->thumbnail, "longest side of inspection thumbnails (0: none)");
  sub->add_flag("--skip-errors", o->skip_errors, "record bad slides in the summary and go on");
  sub->callback([o] {
    const auto summary = slides::preprocess_slides(*o);
    std::cout << fmt::format("{} slides done, {} already done (skipped), {} failed; summary in {}\n",
                             summary.count("done"), summary.count("cached"), summary.count("failed"),
                             (fs::path(o->out_dir) / "summary.json").string());
    for (const auto& s : summary.slides) {
      if (s.status == "failed") std::cout << "  failed " << s.id << ": " << s.reason << "\n";
    }
  });
}

struct ExtractOptions {
  std::string manifest, out, cache_dir, backend = "auto", encoder = "resnet50", weights;
  std::string mean = "0.485,0.456,0.406", std = "0.229,0.224,0.225";
  int64_t stages = 4, width = 64, batch = 64, read_workers = 2, threads = 0;
  bool skip_errors = false;
  slides::PatchGridOptions grid;
};

void extract_one(const ExtractOptions& o, const slides::ManifestEntry& e, const models::FoldedResNet& encoder,
                 int64_t dim, const std::string& path) {
  const auto reader = slides::open_slide(e.path, o.backend);
  auto grid = slides::cached_tissue_patches(e, *reader, o.grid, o.cache_dir);
  const auto bag = std::make_shared<slides::SlideBag>(reader, grid, o.read_workers, data::parse_floats(o.mean, "--mean"),
                                                      data::parse_floats(o.std, "--std"));
  slides::FeatureWriter writer(path, grid, dim, {{"encoder", o.encoder}, {"weights", o.weights}, {"slide", e.path}});
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

void add_extract_features(CLI::App& app) {
  auto* sub = app.add_subcommand("extract-features",
                                 "encode every tissue patch with a frozen encoder into one HDF5 feature bag per slide");
  auto o = std::make_shared<ExtractOptions>();
  sub->add_option("--manifest", o->manifest, "CSV with a slide column")->required();
  sub->add_option("--out", o->out, "folder for <id>.h5 bags (features + coords, CLAM/TRIDENT layout)")->required();
  sub->add_option("--cache-dir", o->cache_dir, "patch coordinates (default: <manifest folder>/tessera-cache)");
  add_grid_options(sub, o->grid);
  sub->add_option("--backend", o->backend, "auto | openslide | vips");
  sub->add_option("--encoder", o->encoder, "resnet18 | resnet34 | resnet50 (pooled features: 512 or 2048)");
  sub->add_option("--weights", o->weights, "torchvision state dict for the encoder (e.g. ImageNet resnet50)");
  sub->add_option("--stages", o->stages, "ResNet stages kept (2 or 4)");
  sub->add_option("--width", o->width, "channels of the first ResNet stage");
  sub->add_option("--mean", o->mean, "per-channel normalisation mean");
  sub->add_option("--std", o->std, "per-channel normalisation std");
  sub->add_option("--batch", o->batch, "patches encoded at once");
  sub->add_option("--read-workers", o->read_workers, "threads reading patches");
  sub->add_option("--threads", o->threads, "torch threads (0: all cores)");
  sub->add_flag("--skip-errors", o->skip_errors, "record bad slides and go on");
  sub->callback([o] {
    runtime::set_threads(o->threads);
    if (o->cache_dir.empty()) o->cache_dir = (fs::path(o->manifest).parent_path() / "tessera-cache").string();
    models::ResNetOptions ro;
    ro.arch = o->encoder;
    ro.stages = o->stages;
    ro.width = o->width;
    models::ResNet net(ro);
    if (!o->weights.empty()) {
      const auto report = models::load_state_dict(*net, models::read_state_dict(o->weights), /*strict=*/false);
      TESSERA_CHECK(!report.loaded.empty(), "no tensor of '", o->weights, "' matches a ", o->encoder, "; is it a torchvision state dict?");
      log::info("loaded {} encoder tensors from {}", report.loaded.size(), o->weights);
    } else {
      log::warn("no --weights: features come from a randomly initialised {} (fine for tests, not for real slides)", o->encoder);
    }
    net->eval();
    net->use_channels_last();
    const auto encoder = [&] {
      torch::NoGradGuard no_grad;
      return net->fold();
    }();
    fs::create_directories(o->out);
    int64_t done = 0, existing = 0;
    std::vector<std::string> failed;
    for (const auto& e : slides::read_manifest(o->manifest)) {
      const auto path = (fs::path(o->out) / (e.id + ".h5")).string();
      if (fs::exists(path)) {
        ++existing;
        continue;
      }
      try {
        extract_one(*o, e, encoder, net->out_features(), path);
        ++done;
        log::info("extracted {}", path);
      } catch (const Error& err) {
        if (!o->skip_errors) fail("slide '", e.id, "' (", e.path, "): ", err.what(), " (pass --skip-errors to go on)");
        failed.push_back(e.id + ": " + err.what());
      }
    }
    std::cout << fmt::format("{} bags written, {} already there, {} failed; in {}\n", done, existing, failed.size(), o->out);
    for (const auto& f : failed) std::cout << "  failed " << f << "\n";
  });
}

}  // namespace

void add_slide_commands(CLI::App& app) {
  add_slide_info(app);
  add_make_slides(app);
  add_preprocess(app);
  add_extract_features(app);
}

void predict_slide(const Config& config, const std::string& run, const SlidePredictOptions& o) {
  TESSERA_CHECK(config.train.method == "ips", "slide prediction needs an IPS run; '", run, "' used ", config.train.method);
  const bool features = config.data.dataset == "feature_bags";
  TESSERA_CHECK(!features || !o.bag.empty(), "this run was trained on feature bags; pass --bag <slide>.h5 (and --slide for a heatmap)");
  TESSERA_CHECK(features || !o.slide.empty(), "this run was trained on slide patches; pass --slide");
  const auto tasks = slides::manifest_tasks(slides::read_manifest(config.data.manifest));
  auto ips = train::make_ips(config, tasks);
  train::load_checkpoint((fs::path(run) / "checkpoint.pt").string(), ips->module(), nullptr);
  ips->module().eval();

  slides::SlideReaderPtr reader;
  if (!o.slide.empty()) reader = slides::open_slide(o.slide, config.slide.backend);
  data::PatchBagPtr bag;
  slides::PatchCoords grid;
  if (features) {
    bag = std::make_shared<slides::FeatureBag>(o.bag);
    grid = slides::read_coords(o.bag);
  } else {
    const auto opts = slides::slide_data_options(config, "");
    grid = slides::tissue_patches(*reader, opts.grid);
    bag = std::make_shared<slides::SlideBag>(reader, grid, opts.read_workers, opts.mean, opts.std);
  }
  data::Batch batch;
  batch.bags = {bag};
  batch.indices = {0};
  const auto outputs = ips->predict(batch);
  const auto scores = ips->score_all(bag);
  const auto top = std::get<1>(scores.topk(std::min<int64_t>(config.ips.M, scores.size(0))));
  auto selected = torch::zeros({scores.size(0)}, torch::kBool).index_fill_(0, top, true);

  RunDir target(o.out);
  nlohmann::json result{{"slide", o.slide}, {"bag", o.bag}, {"patches", bag->size()}};
  for (const auto& task : tasks) {
    const auto p = outputs.at(task.name)[0].contiguous();
    result["outputs"][task.name] = std::vector<float>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
    result["predicted"][task.name] = p.argmax().item<int64_t>();
    std::cout << fmt::format("{:<10} {} (p = {:.3f})\n", task.name, p.argmax().item<int64_t>(), p.max().item<float>());
  }
  target.write_text("prediction.json", result.dump(2) + "\n");
  slides::write_scores_csv(target.file("scores.csv"), grid, scores, selected);
  std::cout << "wrote " << target.file("prediction.json") << " and " << target.file("scores.csv") << "\n";
  if (reader) {
    data::write_png(target.file("heatmap.png"), slides::heatmap_overlay(*reader, grid, scores, o.thumbnail));
    std::cout << "heatmap: " << target.file("heatmap.png") << "\n";
    if (o.tiff) {
      slides::write_heatmap_tiff(target.file("heatmap.tif"), *reader, grid, scores);
      std::cout << "full-resolution overlay: " << target.file("heatmap.tif") << "\n";
    }
  }
}

}  // namespace tessera::cli
