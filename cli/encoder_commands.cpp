// tessera embed | export-encoder, and `bench encoder`: glue over tessera/app/embed.h and bench.h.
#include <fmt/format.h>

#include <iostream>

#include "commands.h"
#include "tessera/app/bench.h"
#include "tessera/app/embed.h"
#include "tessera/core/runtime.h"

namespace tessera::cli {

void add_encoder_commands(CLI::App& app) {
  auto* sub = app.add_subcommand("embed", "features of image files from a registered encoder or a model folder (.npy)");
  auto o = std::make_shared<app::EmbedOptions>();
  auto precision = std::make_shared<std::string>("fp32");
  auto threads = std::make_shared<int64_t>(0);
  auto list_only = std::make_shared<bool>(false);
  sub->add_option("--encoder", o->encoder, "a registered encoder (--list-encoders) or a model folder (config.json + weights)");
  sub->add_option("--weights", o->weights, "weights: safetensors or torch.save (a folder's own file by default)");
  sub->add_option("--encoder-args", o->encoder_args, "JSON object over the encoder's arguments, e.g. '{\"depth\": 2}'");
  sub->add_option("--images", o->images, "image files (PNG, JPEG, TIFF)");
  sub->add_option("--list", o->list, "a file with one image path a line");
  sub->add_option("--out", o->out, "output .npy: float32 (n, D), row i for the i-th image");
  sub->add_option("--batch", o->batch, "images per forward pass")->capture_default_str();
  sub->add_option("--precision", *precision, "fp32 | bf16 (autocast)")->capture_default_str();
  sub->add_flag("--no-resize", o->no_resize, "feed each image at its own size (dynamic-size encoders)");
  sub->add_option("--threads", *threads, "torch threads (0 = all cores)");
  sub->add_flag("--list-encoders", *list_only, "print the registered encoders and exit");
  sub->callback([o, precision, threads, list_only] {
    if (*list_only) {
      std::cout << fmt::format("{:<32} {:<32} {}\n", "name", "architecture", "summary");
      for (const auto& e : models::list_encoders()) {
        std::cout << fmt::format("{:<32} {:<32} {}\n", e.name, e.architecture, e.summary);
      }
      return;
    }
    runtime::set_threads(*threads);
    o->precision = parse_precision(*precision);
    const auto r = app::embed(*o);
    std::cout << fmt::format("embedded {} images in {:.2f} s; wrote {} with shape ({})\n", r.images, r.seconds, o->out,
                             fmt::join(r.shape, ", "));
  });

  auto* ex = app.add_subcommand("export-encoder", "write an encoder as a timm model folder (config.json + model.safetensors)");
  auto e = std::make_shared<app::ExportEncoderOptions>();
  ex->add_option("--run", e->run, "a trained run whose encoder is exported");
  ex->add_option("--encoder", e->encoder, "or a registered encoder / model folder");
  ex->add_option("--weights", e->weights, "with --encoder: its weights");
  ex->add_option("--encoder-args", e->encoder_args, "with --encoder: JSON arguments");
  ex->add_option("--out", e->out, "the folder to write")->required();
  ex->callback([e] {
    app::export_encoder(*e);
    std::cout << "wrote " << e->out << "/config.json and " << e->out << "/model.safetensors\n";
  });
}

void add_encoder_bench(CLI::App& bench) {
  auto* sub = bench.add_subcommand("encoder", "encoder throughput: images/s without gradients and for forward + backward");
  auto o = std::make_shared<app::BenchEncoderOptions>();
  sub->add_option("--encoder", o->encoder, "a registered encoder or a model folder")->capture_default_str();
  sub->add_option("--encoder-args", o->encoder_args, "JSON object over the encoder's arguments");
  sub->add_option("--batch", o->batch, "images per pass")->capture_default_str();
  sub->add_option("--size", o->size, "image side (0: the encoder's input size)");
  sub->add_option("--precision", o->precision, "fp32 | bf16 (autocast)")->capture_default_str();
  sub->add_option("--threads", o->threads, "torch threads (0 = all cores)");
  sub->add_option("--steps", o->steps, "timed passes")->capture_default_str();
  sub->add_option("--warmup", o->warmup, "untimed passes first")->capture_default_str();
  sub->add_option("--json", o->json, "also write the results as JSON to this file");
  sub->callback([o] { app::bench_encoder(*o); });
}

}  // namespace tessera::cli
