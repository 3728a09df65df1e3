#include "commands.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <iostream>

#include "tessera/app/export_data.h"
#include "tessera/app/import.h"
#include "tessera/app/launch.h"
#include "tessera/app/predict.h"
#include "tessera/app/report.h"
#include "tessera/app/train.h"
#include "tessera/core/memory.h"
#include "tessera/core/run_dir.h"
#include "tessera/data/prepare_images.h"
#include "tessera/train/experiment.h"
#include "tessera/train/registry.h"
#include "tessera/train/resume.h"

namespace tessera::cli {

void ConfigOptions::add_to(CLI::App& app) {
  app.add_option("-c,--config", file_, "YAML preset (see configs/)");
  for (auto& field : defaults_.fields()) {
    const auto default_text = field.get().empty() ? std::string("empty") : field.get();
    options_.push_back(app.add_option("--" + field.key, values_[field.key], field.help + " [default: " + default_text + "]"));
    options_.back()->type_name(field.type)->group("Config overrides");
  }
}

Config ConfigOptions::resolve(bool resume) {
  Config config;
  if (!file_.empty()) config.load_yaml(file_);
  std::vector<std::string> given;
  for (auto* opt : options_) {
    const auto key = opt->get_name().substr(2);
    if (opt->count() == 0) continue;
    config.set(key, values_[key]);
    given.push_back(key);
  }
  if (resume) config = train::resume_config(config, given, /*whole=*/!file_.empty());
  train::validate(config);
  return config;
}

namespace {

void print_files(const std::vector<std::string>& files) {
  for (const auto& f : files) std::cout << "wrote " << f << "\n";
}

void add_input_flags(CLI::App* sub, app::InputFlags& input) {
  sub->add_option("--mean", input.mean, "per-channel normalisation mean the model was trained with (e.g. 0.485,0.456,0.406)");
  sub->add_option("--std", input.std, "per-channel normalisation std");
  sub->add_option("--height", input.height, "image height the model was trained on");
  sub->add_option("--width", input.width, "image width the model was trained on");
}

}  // namespace

void add_train(CLI::App& app) {
  auto* sub = app.add_subcommand("train", "train a model; writes config, metrics.jsonl and checkpoint.pt to run.dir");
  auto opts = std::make_shared<ConfigOptions>();
  opts->add_to(*sub);
  auto resume = std::make_shared<bool>(false);
  sub->add_flag("--resume", *resume, "continue exactly from <run.dir>/checkpoint.pt");
  sub->callback([opts, resume] {
    const auto config = opts->resolve(*resume);
    const auto last = app::train(config, *resume);
    if (last.contains("train")) std::cout << "train (last epoch)\n" << app::format_summary(last["train"]);
    if (last.contains("test")) std::cout << "test\n" << app::format_summary(last["test"]);
    if (last.contains("peak_tensor_bytes")) {
      std::cout << fmt::format("peak tensor memory (last epoch) {}, peak RSS (last epoch) {}\n",
                               memory::format_bytes(last["peak_tensor_bytes"].get<int64_t>()),
                               memory::format_bytes(last["peak_rss_bytes"].get<int64_t>()));
    }
    std::cout << "run directory: " << config.run_dir << "\n";
  });
}

void add_plan(CLI::App& app) {
  auto* sub = app.add_subcommand("plan", "what fits a memory budget: the planner's trial steps, without training");
  auto opts = std::make_shared<ConfigOptions>();
  opts->add_to(*sub);
  auto budget = std::make_shared<std::string>();
  auto json_out = std::make_shared<std::string>();
  sub->add_option("--budget", *budget, "memory budget, e.g. 24GiB (default: train.memory_budget; neither: one step as configured, measured)");
  sub->add_option("--json", *json_out, "also write the plan as JSON to this file");
  sub->callback([opts, budget, json_out] {
    const auto plan = app::plan(opts->resolve(), *budget);
    if (!json_out->empty()) write_file_atomic(*json_out, plan.dump(2) + "\n");
    std::cout << app::format_plan(plan);
  });
}

void add_launch(CLI::App& app) {
  auto* sub = app.add_subcommand("launch", "run a command (e.g. train) as several data-parallel ranks on this node");
  auto o = std::make_shared<app::LaunchOptions>();
  auto command = std::make_shared<std::vector<std::string>>();
  sub->add_option("--nproc-per-node", o->nproc_per_node, "ranks on this node (e.g. one per GPU)")->capture_default_str();
  sub->add_option("--nnodes", o->nnodes, "nodes in the run")->capture_default_str();
  sub->add_option("--node-rank", o->node_rank, "this node's index in [0, nnodes)")->capture_default_str();
  sub->add_option("--master-addr", o->master_addr, "address of node 0 (rank 0 serves the rendezvous store)")
      ->capture_default_str();
  sub->add_option("--master-port", o->master_port, "port on node 0 (0: a free one; multi-node runs must set it)")
      ->capture_default_str();
  sub->add_option("--grace", o->grace_seconds, "seconds the other ranks get to exit after one fails")->capture_default_str();
  sub->add_option("command", *command, "the tessera command and its options, after '--'")->required();
  sub->callback([o, command] {
    const int code = app::launch(*o, *command);
    if (code != 0) std::exit(code);
  });
}

void add_eval(CLI::App& app) {
  auto* sub = app.add_subcommand("eval", "evaluate a run's checkpoint on its test set");
  auto run = std::make_shared<std::string>();
  auto threads = std::make_shared<int64_t>(0);
  sub->add_option("--run", *run, "run directory holding checkpoint.pt")->required();
  sub->add_option("--threads", *threads, "torch threads (0: all cores)");
  sub->callback([run, threads] {
    const auto summary = app::evaluate(*run, *threads);
    std::cout << app::format_summary(summary) << summary.dump() << "\n";
  });
}

void add_predict(CLI::App& app) {
  auto* sub = app.add_subcommand("predict", "predict one image, slide or feature bag; writes outputs JSON and a picture");
  auto o = std::make_shared<app::PredictOptions>();
  sub->add_option("--run", o->run, "run directory holding checkpoint.pt")->required();
  auto* image = sub->add_option("--image", o->image, "PNG, JPEG or TIFF image, or a .pt tensor (C, H, W) in [0, 1]");
  auto* slide = sub->add_option("--slide", o->slide, "whole-slide image (runs trained on slides or feature bags)");
  sub->add_option("--bag", o->bag, "feature bag (.h5) of the slide, for runs trained on feature bags");
  sub->add_option("--thumbnail", o->thumbnail, "longest side of the heatmap PNG")->capture_default_str();
  sub->add_flag("--tiff", o->tiff, "also write a full-resolution pyramidal TIFF heatmap overlay");
  sub->add_flag("--geojson", o->geojson,
                "also write scores.geojson: one QuPath detection per patch (level-0 polygon, measurement 'attention', "
                "the selected ones classified 'Selected')");
  sub->add_option("--out", o->out, "output directory (default: <run>/predict)");
  sub->add_option("--threads", o->threads, "torch threads (0: all cores)");
  image->excludes(slide);
  sub->callback([o] {
    const auto p = app::predict(*o);
    for (const auto& [task, value] : p.result["predicted"].items()) {
      const bool named = p.result.contains("predicted_class") && p.result["predicted_class"].contains(task);
      std::cout << fmt::format("{:<10} {}\n", task,
                               named ? fmt::format("{} ({})", p.result["predicted_class"][task].get<std::string>(), value.dump())
                                     : value.dump());
    }
    print_files(p.files);
  });
}

void add_import(CLI::App& app) {
  auto* ips = app.add_subcommand("import-ips", "convert a reference IPSNet state dict (torch.save) into a tessera run");
  auto io = std::make_shared<app::ImportIpsOptions>();
  auto opts = std::make_shared<ConfigOptions>();
  opts->add_to(*ips);
  ips->add_option("--state-dict", io->state_dict, "file saved with torch.save(ips_net.state_dict(), path)")->required();
  ips->add_option("--key", io->key, "entry holding the state dict inside the file, if nested (e.g. state_dict)");
  ips->add_option("--reference-config", io->reference_config,
                  "the reference's YAML (config/*.yml): tasks, encoder, sizes; without it the config options describe "
                  "the model (Megapixel MNIST tasks)");
  add_input_flags(ips, io->input);
  ips->callback([io, opts] {
    io->config = opts->resolve();
    const auto report = app::import_ips(*io);
    std::cout << "imported " << report.tensors << " tensors into " << report.run_dir << "/checkpoint.pt\n";
  });

  auto* pgd = app.add_subcommand("import-patchgd", "convert a PatchGD reference checkpoint (backbone + head) into a tessera run");
  auto po = std::make_shared<app::ImportPatchGdOptions>();
  auto popts = std::make_shared<ConfigOptions>();
  popts->add_to(*pgd);
  pgd->add_option("--checkpoint", po->checkpoint, "the reference's torch.save dict with model1_weights and model2_weights")->required();
  pgd->add_option("--patch", po->patch, "patch side the model was trained with")->required();
  pgd->add_option("--task", po->task, "name of the class label");
  add_input_flags(pgd, po->input);
  pgd->callback([po, popts] {
    po->config = popts->resolve();
    const auto report = app::import_patchgd(*po);
    std::cout << fmt::format("imported {} tensors (head {}, latent {}, {} classes) into {}/checkpoint.pt\n", report.tensors,
                             report.spec.config().patchgd.head, report.spec.config().patchgd.latent,
                             report.spec.tasks[0].outputs, report.run_dir);
  });

  auto* up = app.add_subcommand("upgrade-checkpoint",
                                "rewrite a checkpoint of tessera's formats 1-2 (TorchScript archives) in the current format; "
                                "for files you trust, the old file kept beside it");
  auto run = std::make_shared<std::string>();
  up->add_option("--run", *run, "run directory or checkpoint file")->required();
  up->callback([run] {
    const auto backup = train::upgrade_checkpoint(*run);
    std::cout << "upgraded; the old checkpoint is kept as " << backup << "\n";
  });
}

void add_report(CLI::App& app) {
  auto* sub = app.add_subcommand("report", "one self-contained HTML page of runs: learning curves, memory, spec, pictures");
  auto o = std::make_shared<app::ReportOptions>();
  sub->add_option("--run", o->runs, "run directory (repeat to overlay several runs)")->required();
  sub->add_option("--out", o->out, "HTML file (default: <first run>/report.html)");
  sub->add_option("--pictures", o->pictures, "test inputs drawn per run (0: none)");
  sub->add_option("--threads", o->threads, "torch threads (0: all cores)");
  sub->callback([o] {
    const auto path = app::write_report(*o);
    std::cout << "wrote " << path << "\n";
  });
}

void add_prepare_images(CLI::App& app) {
  auto* sub = app.add_subcommand("prepare-images",
                                 "PANDA preprocessing: fit images/slides into S x S with white padding, stratified folds");
  auto o = std::make_shared<data::PrepareImagesOptions>();
  sub->add_option("--manifest", o->manifest, "CSV listing the images (e.g. PANDA's train.csv)")->required();
  sub->add_option("--images", o->images, "folder holding <id><extension>")->required();
  sub->add_option("--out", o->out, "output folder: PNGs, folds.csv, train.csv, val.csv")->required();
  sub->add_option("--size", o->size, "side S of the square output");
  sub->add_option("--level", o->level, "pyramid level to read (0: full resolution)");
  sub->add_option("--id-column", o->id_column, "manifest column naming the image");
  sub->add_option("--label-column", o->label_column, "manifest column holding the class index");
  sub->add_option("--extension", o->extension, "file extension of the images");
  sub->add_option("--folds", o->folds, "stratified folds; fold 0 is validation");
  sub->add_option("--seed", o->seed, "seed of the fold assignment");
  sub->callback([o] {
    const auto summary = data::prepare_images(*o);
    std::cout << fmt::format("{} images written, {} already there; train.csv and val.csv in {}\n", summary.written,
                             summary.skipped, o->out);
  });
}

void add_export_data(CLI::App& app) {
  auto* sub = app.add_subcommand("export-data", "write generated images (Megapixel MNIST, UltraMNIST) as PNG with a labels CSV");
  auto opts = std::make_shared<ConfigOptions>();
  opts->add_to(*sub);
  auto o = std::make_shared<app::ExportOptions>();
  sub->add_option("--out", o->out, "output directory")->capture_default_str();
  sub->add_option("--count", o->count, "images to write")->capture_default_str();
  sub->add_option("--split", o->split, "train or test")->capture_default_str();
  sub->callback([opts, o] {
    const auto n = app::export_data(opts->resolve(), *o);
    std::cout << "wrote " << n << " images to " << o->out << "\n";
  });
}

}  // namespace tessera::cli
