// tessera bench slide-read | slide-ips | feature-bags: option parsing (tessera/app/bench.h).
#include "commands.h"
#include "tessera/app/bench.h"

namespace tessera::cli {

void add_slide_bench(CLI::App& bench) {
  auto* read = bench.add_subcommand("slide-read", "patches/s of random patch reads per back-end and thread count");
  auto r = std::make_shared<app::ReadBenchOptions>();
  read->add_option("--slide", r->slide, "slide file (e.g. from tessera make-slides)")->required();
  read->add_option("--backends", r->backends, "comma-separated: openslide,vips");
  read->add_option("--threads", r->threads, "comma-separated reader thread counts");
  read->add_option("--patches", r->patches, "patches read per run");
  read->add_option("--patch", r->patch, "patch side");
  read->add_option("--level", r->level, "pyramid level");
  read->add_option("--json", r->json, "also write the results as JSON");
  read->callback([r] { app::bench_slide_read(*r); });

  auto* sips = bench.add_subcommand("slide-ips", "one lazy IPS training step per slide: peak memory against N");
  auto s = std::make_shared<app::SlideIpsBenchOptions>();
  sips->add_option("--slides", s->slides, "comma-separated slide files")->required();
  sips->add_option("--patch", s->patch, "patch side at level 0");
  sips->add_option("--M", s->M, "patches kept");
  sips->add_option("--I", s->I, "patches scored per iteration");
  sips->add_option("--encoder-width", s->width, "channels of the ResNet-18 stem");
  sips->add_option("--stages", s->stages, "ResNet stages kept");
  sips->add_option("--read-workers", s->read_workers, "threads reading each chunk");
  sips->add_option("--backend", s->backend, "auto | openslide | vips");
  sips->add_option("--json", s->json, "also write the results as JSON");
  sips->add_option("--threads", s->threads, "torch threads (0: all cores)");
  sips->callback([s] { app::bench_slide_ips(*s); });

  auto* bags = bench.add_subcommand("feature-bags", "IPS on HDF5 feature bags at the paper's CAMELYON16 settings");
  auto f = std::make_shared<app::FeatureBagBenchOptions>();
  bags->add_option("--rows", f->rows, "comma-separated N (patches per slide)");
  bags->add_option("--dim", f->dim, "feature width");
  bags->add_option("--M", f->M, "patches kept");
  bags->add_option("--I", f->I, "patches scored per iteration");
  bags->add_option("--batch", f->batch, "slides per step (eager-sequential)");
  bags->add_option("--steps", f->steps, "steps per N (the fastest is reported)");
  bags->add_option("--dir", f->dir, "where the synthetic bags are written");
  bags->add_option("--json", f->json, "also write the results as JSON");
  bags->add_option("--threads", f->threads, "torch threads (0: all cores)");
  bags->callback([f] { app::bench_feature_bags(*f); });
}

}  // namespace tessera::cli
