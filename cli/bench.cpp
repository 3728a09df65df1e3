// tessera bench ips|patchgd|slide-*: option parsing; the benchmarks live in tessera/app/bench.h.
#include "commands.h"
#include "tessera/app/bench.h"

#include <iostream>

namespace tessera::cli {

void add_bench(CLI::App& app) {
  auto* bench = app.add_subcommand("bench", "benchmarks that print one table (and JSON with --json)");
  bench->require_subcommand(1);
  auto* sub = bench->add_subcommand("ips", "IPS training step: median time, peak tensor bytes, peak RSS");
  auto o = std::make_shared<app::BenchIpsOptions>();
  sub->add_option("--batch", o->batch, "images per step");
  sub->add_option("--height", o->height, "image height");
  sub->add_option("--width", o->width, "image width");
  sub->add_option("--channels", o->channels, "image channels");
  sub->add_option("--patch", o->patch, "patch size (= stride)");
  sub->add_option("--M", o->M, "patches kept");
  sub->add_option("--I", o->I, "patches scored per iteration");
  sub->add_option("--encoder", o->encoder, "a registered encoder (tessera embed --list-encoders)");
  sub->add_option("--encoder-args", o->encoder_args, "JSON object over the encoder's arguments, e.g. '{\"depth\": 2}'");
  sub->add_option("--grad-chunk", o->grad_chunk, "ips.grad_chunk: winners encoded with gradients at a time (0: all)");
  sub->add_option("--encoder-width", o->width_factor, "channels of the first ResNet stage");
  sub->add_option("--stages", o->stages, "ResNet stages kept");
  sub->add_option("--loading", o->loading, "eager | eager_sequential | lazy");
  sub->add_option("--steps", o->steps, "timed steps");
  sub->add_option("--warmup", o->warmup, "untimed steps first");
  sub->add_option("--threads", o->threads, "torch threads (0 = all cores)");
  sub->add_option("--patches", o->patches, "sweep: comma-separated patch counts, lazy loading, B = 1");
  sub->add_option("--precision", o->precision, "fp32 | bf16 | fp16 (autocast)");
  sub->add_option("--device", o->device, "cpu | cuda");
  sub->add_option("--json", o->json, "also write the results as JSON to this file");
  sub->callback([o] { app::bench_ips(*o); });
  add_encoder_bench(*bench);

  auto* pgd = bench->add_subcommand("patchgd", "PatchGD training step: median time, peak tensor bytes, peak RSS");
  auto p = std::make_shared<app::BenchPatchGdOptions>();
  pgd->add_option("--batch", p->batch, "images per step");
  pgd->add_option("--size", p->size, "image side");
  pgd->add_option("--channels", p->channels, "image channels");
  pgd->add_option("--patch", p->patch, "patch size (= stride)");
  pgd->add_option("--q", p->q, "sampling fraction per inner iteration");
  pgd->add_option("--encoder", p->encoder, "a registered encoder (tessera embed --list-encoders)");
  pgd->add_option("--latent", p->latent, "s, channels of the latent grid");
  pgd->add_option("--head", p->head, "pool | original | smaller | larger | smaller_feat | larger_feat");
  pgd->add_option("--classes", p->classes, "classes of the head");
  pgd->add_option("--steps", p->steps, "timed steps");
  pgd->add_option("--warmup", p->warmup, "untimed steps first");
  pgd->add_option("--threads", p->threads, "torch threads (0 = all cores)");
  pgd->add_option("--sizes", p->sizes, "sweep: comma-separated image sides, PatchGD vs GD peak tensor memory");
  pgd->add_option("--k", p->k, "sweep: fixed patches per inner iteration (q = k / n) instead of a fixed q");
  pgd->add_option("--budget", p->budget, "sweep: memory budget that stops a step early (e.g. 12GiB)");
  pgd->add_option("--precision", p->precision, "fp32 | bf16 | fp16 (autocast)");
  pgd->add_option("--device", p->device, "cpu | cuda");
  pgd->add_option("--json", p->json, "also write the results as JSON to this file");
  pgd->callback([p] { app::bench_patchgd(*p); });

  auto* prov = bench->add_subcommand("provenance", "print this build's and machine's provenance (the JSON every --json carries)");
  prov->callback([] { std::cout << app::bench_provenance().dump(2) << "\n"; });
#ifdef TESSERA_WITH_SLIDES
  add_slide_bench(*bench);
#endif
}

}  // namespace tessera::cli
