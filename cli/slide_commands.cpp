// Whole-slide commands: slide-info, make-slides, preprocess, extract-features (option parsing only).
#include <fmt/format.h>

#include <filesystem>
#include <iostream>

#include "commands.h"
#include "tessera/core/distributed.h"
#include "tessera/app/slide_workflows.h"
#include "tessera/slides/preprocess.h"
#include "tessera/slides/reader.h"

namespace tessera::cli {
namespace fs = std::filesystem;

namespace {

void add_grid_options(CLI::App* sub, slides::PatchGridOptions& g) {
  sub->add_option("--patch", g.patch, "patch side in pixels at the reading resolution")->capture_default_str();
  sub->add_option("--stride", g.stride, "grid step (0: the patch side)")->capture_default_str();
  sub->add_option("--level", g.level, "pyramid level patches are read at")->capture_default_str();
  sub->add_option("--mpp", g.mpp, "read patches at this resolution (um/px) instead of a level")->capture_default_str();
  sub->add_option("--tissue", g.tissue.method, "tissue detector: otsu | saturation")->capture_default_str();
  sub->add_option("--min-tissue", g.tissue.min_fraction, "tissue fraction a patch needs")->capture_default_str();
  sub->add_option("--annotations", g.annotations,
                  "folder of QuPath GeoJSON exports <slide id>.geojson: keep patches at least half inside the drawn regions");
}

void add_slide_info(CLI::App& app) {
  auto* sub = app.add_subcommand("slide-info", "print a slide's dimensions, levels, resolution and vendor");
  auto path = std::make_shared<std::string>();
  auto backend = std::make_shared<std::string>("auto");
  sub->add_option("slide", *path, "slide file")->required();
  sub->add_option("--backend", *backend, "auto | openslide | vips");
  sub->callback([=] { std::cout << slides::describe(*slides::open_slide(*path, *backend)); });
}

void add_make_slides(CLI::App& app) {
  auto* sub = app.add_subcommand("make-slides",
                                 "write synthetic pyramidal TIFF slides (tissue, glass, MNIST-digit 'tumours') and a manifest");
  auto o = std::make_shared<app::MakeSlidesOptions>();
  o->slide.width = o->slide.height = 4096;
  sub->add_option("--out", o->out, "output folder (slides and manifest.csv)")->required();
  sub->add_option("--count", o->count, "training slides (alternately negative / positive)")->capture_default_str();
  sub->add_option("--test-count", o->test_count, "test slides")->capture_default_str();
  sub->add_option("--width", o->slide.width, "level-0 width in pixels")->capture_default_str();
  sub->add_option("--height", o->slide.height, "level-0 height in pixels")->capture_default_str();
  sub->add_option("--digits", o->digits, "MNIST digits in each positive slide")->capture_default_str();
  sub->add_option("--digit-scale", o->slide.digit_scale, "digit upscaling (28 px x scale)")->capture_default_str();
  sub->add_option("--blobs", o->slide.tissue_blobs, "tissue regions per slide")->capture_default_str();
  sub->add_option("--tissue-size", o->slide.tissue_size, "largest tissue radius relative to the shorter side")->capture_default_str();
  sub->add_option("--mpp", o->slide.mpp, "stated resolution (um/px)")->capture_default_str();
  sub->add_option("--compression", o->slide.compression, "deflate | jpeg | none")->capture_default_str();
  sub->add_option("--quality", o->slide.quality, "JPEG quality")->capture_default_str();
  sub->add_option("--seed", o->slide.seed, "first slide's seed")->capture_default_str();
  sub->add_option("--mnist-dir", o->mnist_dir, "MNIST IDX files (scripts/get-mnist.sh)")->capture_default_str();
  sub->callback([o] {
    const auto manifest = app::make_slides(*o);
    std::cout << "manifest: " << manifest << "\n";
  });
}

void add_localization(CLI::App& app) {
  auto* sub = app.add_subcommand("localization",
                                 "how much of a slide run's top-M attention falls on annotated tumours (make-slides' truth or QuPath GeoJSON)");
  auto o = std::make_shared<app::LocalizationOptions>();
  sub->add_option("--run", o->run, "IPS run trained on slides")->required();
  sub->add_option("--truth", o->truth, "tumour boxes slide,x,y,size (default: tumours.csv beside the run's manifest)");
  sub->add_option("--annotations", o->annotations,
                  "or: folder of QuPath GeoJSON <slide id>.geojson; a patch is tumour when it overlaps an annotated region");
  sub->add_option("--class", o->annotation_class,
                  "with --annotations: only regions of this classification count (default: all but Exclude / Ignore*)");
  sub->add_option("--split", o->split, "manifest split to measure");
  sub->add_option("--out", o->out, "also write the rows and summary as JSON");
  sub->add_option("--threads", o->threads, "torch threads (0: all cores)");
  sub->callback([o] {
    const auto s = app::localize(*o);
    std::cout << "| slide | label | p(positive) | tissue patches | tumour patches | tumour % | top-M on tumour | top-M attention on tumour |\n"
              << "|---|---|---|---|---|---|---|---|\n";
    for (const auto& r : s.slides) {
      std::cout << fmt::format("| {} | {} | {:.3f} | {} | {} | {:.1f} | {} | {:.3f} |\n", r.slide, r.label, r.probability,
                               r.patches, r.tumour_patches, 100 * r.tumour_fraction, r.top_tumour_patches, r.attention_on_tumour);
    }
    std::cout << fmt::format("mean share of the top-{} attention on tumour patches (slides with tumour): {:.3f}; largest tumour "
                             "share of a slide's tissue patches: {:.1f} %\n",
                             s.M, s.mean_attention_on_tumour, 100 * s.max_tumour_fraction);
  });
}

void add_preprocess(CLI::App& app) {
  auto* sub = app.add_subcommand("preprocess",
                                 "tissue patch coordinates for every slide of a manifest (resumable, parallel, with summary)");
  auto o = std::make_shared<slides::PreprocessOptions>();
  sub->add_option("--manifest", o->manifest, "CSV with a slide column")->required();
  sub->add_option("--out", o->out_dir, "cache folder (use it as slide.cache_dir when training)")->required();
  add_grid_options(sub, o->grid);
  sub->add_option("--backend", o->backend, "auto | openslide | vips")->capture_default_str();
  sub->add_option("--workers", o->workers, "slides processed at once")->capture_default_str();
  sub->add_option("--thumbnail", o->thumbnail, "longest side of inspection thumbnails (0: none)")->capture_default_str();
  sub->add_flag("--skip-errors", o->skip_errors, "record bad slides in the summary and go on");
  sub->callback([o] {
    const auto summary = slides::preprocess_slides(*o);
    if (!dist::is_main()) return;  // rank 0 speaks for a data-parallel launch
    std::cout << fmt::format("{} slides done, {} already done (skipped), {} failed; summary in {}\n",
                             summary.count("done"), summary.count("cached"), summary.count("failed"),
                             (fs::path(o->out_dir) / "summary.json").string());
    for (const auto& s : summary.slides) {
      if (s.status == "failed") std::cout << "  failed " << s.id << ": " << s.reason << "\n";
    }
  });
}

void add_extract_features(CLI::App& app) {
  auto* sub = app.add_subcommand("extract-features",
                                 "encode every tissue patch with a frozen encoder into one HDF5 feature bag per slide");
  auto o = std::make_shared<app::ExtractFeaturesOptions>();
  sub->add_option("--manifest", o->manifest, "CSV with a slide column")->required();
  sub->add_option("--out", o->out, "folder for <id>.h5 bags (features + coords, CLAM/TRIDENT layout)")->required();
  sub->add_option("--cache-dir", o->cache_dir, "patch coordinates (default: <manifest folder>/tessera-cache)");
  add_grid_options(sub, o->grid);
  sub->add_option("--backend", o->backend, "auto | openslide | vips");
  sub->add_option("--encoder", o->encoder, "a registered encoder (tessera embed --list-encoders) or a model folder")
      ->capture_default_str();
  sub->add_option("--encoder-args", o->encoder_args, "JSON object over the encoder's arguments");
  sub->add_option("--weights", o->weights, "encoder weights: safetensors or torch.save (a folder's own file by default)");
  sub->add_option("--run", o->run, "or: use the encoder, normalisation and patch size of this tessera IPS run");
  sub->add_option("--stages", o->stages, "ResNet stages kept (2 or 4)");
  sub->add_option("--width", o->width, "channels of the first ResNet stage");
  sub->add_option("--mean", o->mean, "per-channel normalisation mean");
  sub->add_option("--std", o->std, "per-channel normalisation std");
  sub->add_option("--batch", o->batch, "patches encoded at once");
  sub->add_option("--read-workers", o->read_workers, "threads reading patches");
  sub->add_option("--threads", o->threads, "torch threads (0: all cores)");
  sub->add_flag("--skip-errors", o->skip_errors, "record bad slides and go on");
  sub->add_option("--precision", o->precision, "fp32 | bf16 | fp16: autocast precision of the encoder");
  sub->add_option("--json", o->json, "write the summary (patches, seconds), settings and provenance here");
  sub->callback([o] {
    const auto summary = app::extract_features(*o);
    if (!dist::is_main()) return;
    std::cout << fmt::format("{} bags written, {} already there, {} failed; in {}\n", summary.written, summary.existing,
                             summary.failed.size(), o->out);
    if (summary.patches > 0) {
      std::cout << fmt::format("{} patches read and encoded in {:.1f} s ({:.1f} patches/s)\n", summary.patches,
                               summary.seconds, summary.patches / summary.seconds);
    }
    for (const auto& f : summary.failed) std::cout << "  failed " << f << "\n";
  });
}

}  // namespace

void add_slide_commands(CLI::App& app) {
  add_slide_info(app);
  add_make_slides(app);
  add_localization(app);
  add_preprocess(app);
  add_extract_features(app);
}

}  // namespace tessera::cli
