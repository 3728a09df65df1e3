#include "commands.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <iostream>

#include <spdlog/fmt/ranges.h>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/memory.h"
#include "tessera/core/run_dir.h"
#include "tessera/data/csv_images.h"
#include "tessera/data/image_io.h"
#include "tessera/data/megapixel_mnist.h"
#include "tessera/data/prepare_images.h"
#include "tessera/models/state_dict.h"
#include "tessera/train/checkpoint.h"
#include "tessera/train/experiment.h"
#include "tessera/train/planner.h"
#include "tessera/train/trainer.h"

namespace tessera::cli {
namespace fs = std::filesystem;

void ConfigOptions::add_to(CLI::App& app) {
  app.add_option("-c,--config", file_, "YAML preset (see configs/)");
  for (auto& field : defaults_.fields()) {
    options_.push_back(app.add_option("--" + field.key, values_[field.key], "default: " + field.get()));
    options_.back()->group("Config overrides");
  }
}

Config ConfigOptions::resolve() {
  Config config;
  if (!file_.empty()) config.load_yaml(file_);
  for (auto* opt : options_) {
    if (opt->count() > 0) config.set(opt->get_name().substr(2), values_[opt->get_name().substr(2)]);
  }
  config.validate();
  return config;
}

namespace {

Config config_of_run(const std::string& run) {
  const auto path = (fs::path(run) / "checkpoint.pt").string();
  Config config;
  config.load_yaml_text(train::read_checkpoint_config(path), path);
  return config;
}

void print_summary(const nlohmann::json& summary) {
  std::cout << "task       metric        value\n";
  for (const auto& [task, metrics] : summary.items()) {
    if (!metrics.is_object()) continue;
    for (const auto& [name, value] : metrics.items()) {
      std::cout << fmt::format("{:<10} {:<13} {:.4f}\n", task, name, value.get<double>());
    }
  }
}

// Outlines each selected patch on the image, coloured from blue (low score) to red (high score).
torch::Tensor draw_selection(const torch::Tensor& image, const torch::Tensor& rows, const torch::Tensor& cols,
                             const torch::Tensor& scores, int64_t patch) {
  auto rgb = (image.size(0) == 1 ? image.expand({3, -1, -1}) : image.slice(0, 0, 3)).clone().mul_(0.8);
  const int64_t H = rgb.size(1), W = rgb.size(2);
  const int64_t t = std::max<int64_t>(1, std::min(H, W) / 400 + 1);
  const auto s = scores.to(torch::kFloat32);
  const auto norm = (s - s.min()) / (s.max() - s.min() + 1e-12);
  for (int64_t k = 0; k < rows.size(0); ++k) {
    const float v = norm[k].item<float>();
    const auto colour = torch::tensor({v, 0.2f * (1 - v), 1.0f - v}).view({3, 1, 1});
    const int64_t r0 = rows[k].item<int64_t>(), c0 = cols[k].item<int64_t>();
    const int64_t r1 = std::min(H, r0 + patch), c1 = std::min(W, c0 + patch);
    using torch::indexing::Slice;
    rgb.index_put_({Slice(), Slice(r0, std::min(r1, r0 + t)), Slice(c0, c1)}, colour);
    rgb.index_put_({Slice(), Slice(std::max(r0, r1 - t), r1), Slice(c0, c1)}, colour);
    rgb.index_put_({Slice(), Slice(r0, r1), Slice(c0, std::min(c1, c0 + t))}, colour);
    rgb.index_put_({Slice(), Slice(r0, r1), Slice(std::max(c0, c1 - t), c1)}, colour);
  }
  return rgb;
}

// The tasks a run was trained on, rebuilt from its config without reading any image.
std::vector<Task> tasks_of(const Config& config) {
  if (config.data.dataset == "megapixel_mnist") return data::megapixel_mnist_tasks();
  if (config.data.dataset == "ultramnist") return {{"sum", "softmax", 10}};
  if (config.data.dataset == "ultramnist28") return {{"sum", "softmax", 28}};
  return train::make_datasets(config).first->tasks();
}

// predict for PatchGD and the full-image baselines: class probabilities of one image.
void predict_whole(const Config& config, const std::string& run, const std::string& image_path, torch::Tensor image,
                   const std::string& out) {
  const auto tasks = tasks_of(config);
  auto method = train::make_method(config, tasks);
  train::load_checkpoint((fs::path(run) / "checkpoint.pt").string(), method->module(), nullptr);
  TESSERA_CHECK(image.size(0) == config.model.in_channels, "image '", image_path, "' has ", image.size(0),
                " channels but the model expects ", config.model.in_channels, "; convert it first");
  TESSERA_CHECK(image.size(1) == config.data.height && image.size(2) == config.data.width, "image '", image_path, "' is ",
                image.size(1), "x", image.size(2), " but the model was trained on ", config.data.height, "x",
                config.data.width, "; resize it (tessera prepare-images)");
  const auto mean = data::parse_floats(config.data.mean, "data.mean"), std = data::parse_floats(config.data.std, "data.std");
  if (!mean.empty()) {
    const int64_t c = image.size(0);
    image = (image - torch::tensor(mean).view({c, 1, 1})) / torch::tensor(std).view({c, 1, 1});
  } else if (config.data.dataset.rfind("ultramnist", 0) == 0) {
    image = (image - 0.1307) / 0.3081;  // UltraMNIST normalisation, as in training
  }
  data::Batch batch;
  batch.images = image.unsqueeze(0);
  batch.indices = {0};
  const auto outputs = method->predict(batch);
  nlohmann::json result{{"image", image_path}, {"method", method->name()}};
  for (const auto& task : tasks) {
    const auto p = outputs.at(task.name)[0].contiguous();
    result["outputs"][task.name] = std::vector<float>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
    result["predicted"][task.name] = p.argmax().item<int64_t>();
    std::cout << fmt::format("{:<10} {} (p = {:.3f})\n", task.name, p.argmax().item<int64_t>(), p.max().item<float>());
  }
  RunDir target(out.empty() ? (fs::path(run) / "predict").string() : out);
  target.write_text("prediction.json", result.dump(2) + "\n");
  std::cout << "wrote " << target.file("prediction.json") << "\n";
}

}  // namespace

void add_train(CLI::App& app) {
  auto* sub = app.add_subcommand("train", "train a model; writes config, metrics.jsonl and checkpoint.pt to run.dir");
  auto opts = std::make_shared<ConfigOptions>();
  opts->add_to(*sub);
  auto resume = std::make_shared<bool>(false);
  sub->add_flag("--resume", *resume, "continue exactly from <run.dir>/checkpoint.pt");
  sub->callback([opts, resume] {
    auto config = opts->resolve();
    train::apply_runtime(config);
    RunDir run(config.run_dir);
    log::set_file(run.file("train.log"));
    auto [train_set, test_set] = train::make_datasets(config);
    if (config.train.auto_batch && !*resume) {
      const auto plan = train::plan_batch(config, train_set, /*max_batch=*/config.train.batch_size);
      config.train.batch_size = plan.batch_size;
      config.patchgd.q = plan.q;
      run.write_text("plan.json", plan.to_json(config).dump(2) + "\n");
      log::info("plan: batch size {}{} fits {} (trials in {})", plan.batch_size,
                config.train.method == "patchgd" ? fmt::format(", q {:.4f}", plan.q) : "", config.train.memory_budget,
                run.file("plan.json"));
    }
    auto method = train::make_method(config, train_set->tasks());
    const bool bags = config.data.dataset == "slides" || config.data.dataset == "feature_bags";
    log::info("training {} on {} ({}), batch {}, {} threads", method->name(),
              bags ? fmt::format("{} {}", train_set->size(), config.data.dataset)
                   : fmt::format("{}x{} images", config.data.height, config.data.width),
              config.data.dataset, config.train.batch_size, torch::get_num_threads());
    train::Trainer trainer(config, *method, train_set, test_set);
    const auto last = trainer.fit(*resume);
    if (last.contains("test")) print_summary(last["test"]);
    const auto mem = memory::snapshot();
    std::cout << fmt::format("peak tensor memory (last epoch) {}, peak RSS (last epoch) {}\nrun directory: {}\n",
                             memory::format_bytes(last.value("peak_tensor_bytes", int64_t{0})),
                             memory::format_bytes(last.value("peak_rss_bytes", mem.peak_rss_bytes)), run.path());
  });
}

void add_eval(CLI::App& app) {
  auto* sub = app.add_subcommand("eval", "evaluate a run's checkpoint on its test set");
  auto run = std::make_shared<std::string>();
  sub->add_option("--run", *run, "run directory holding checkpoint.pt")->required();
  sub->callback([run] {
    auto config = config_of_run(*run);
    train::apply_runtime(config);
    auto [train_set, test_set] = train::make_datasets(config);
    auto method = train::make_method(config, train_set->tasks());
    train::load_checkpoint((fs::path(*run) / "checkpoint.pt").string(), method->module(), nullptr);
    train::Trainer trainer(config, *method, train_set, test_set);
    const auto summary = trainer.evaluate(test_set);
    print_summary(summary);
    std::cout << summary.dump() << "\n";
  });
}

void add_predict(CLI::App& app) {
  auto* sub = app.add_subcommand("predict", "predict one image; writes outputs JSON and a selection picture");
  auto run = std::make_shared<std::string>();
  auto image_path = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  sub->add_option("--run", *run, "run directory holding checkpoint.pt")->required();
  auto* image_opt = sub->add_option("--image", *image_path, "PNG, JPEG or TIFF image, or a .pt tensor (C, H, W)");
#ifdef TESSERA_WITH_SLIDES
  auto slide = std::make_shared<SlidePredictOptions>();
  auto* slide_opt = sub->add_option("--slide", slide->slide, "whole-slide image (runs trained on slides or feature bags)");
  sub->add_option("--bag", slide->bag, "feature bag (.h5) of the slide, for runs trained on feature bags");
  sub->add_option("--thumbnail", slide->thumbnail, "longest side of the heatmap PNG");
  sub->add_flag("--tiff", slide->tiff, "also write a full-resolution pyramidal TIFF heatmap overlay");
  image_opt->excludes(slide_opt);
#endif
  sub->add_option("--out", *out, "output directory (default: <run>/predict)");
  sub->callback([=] {
    auto config = config_of_run(*run);
    config.train.threads = 0;  // all cores, whatever the training run used
    train::apply_runtime(config);
#ifdef TESSERA_WITH_SLIDES
    if (!slide->slide.empty() || !slide->bag.empty()) {
      slide->out = out->empty() ? (fs::path(*run) / "predict").string() : *out;
      return predict_slide(config, *run, *slide);
    }
#endif
    TESSERA_CHECK(!image_path->empty(), "predict needs --image (or --slide / --bag for slide runs)");
    const auto image = data::read_image(*image_path);
    if (config.train.method != "ips") return predict_whole(config, *run, *image_path, image, *out);
    const std::vector<Task> tasks = data::megapixel_mnist_tasks();
    auto method = train::make_ips(config, tasks);
    train::load_checkpoint((fs::path(*run) / "checkpoint.pt").string(), method->module(), nullptr);
    TESSERA_CHECK(image.size(0) == config.model.in_channels, "image '", *image_path, "' has ", image.size(0),
                  " channels but the model expects ", config.model.in_channels,
                  "; convert it (e.g. to greyscale) first");
    data::Batch batch;
    batch.images = image.unsqueeze(0);
    batch.indices = {0};
    method->module().eval();
    const auto selection = method->select(method->bags(batch));
    const auto outputs = [&] {
      c10::InferenceMode guard;
      return method->forward(selection);
    }();
    const auto scores = method->final_scores(selection)[0];
    const auto idx = selection.idx[0].to(torch::kCPU);
    const auto grid = data::PatchGrid::fit(image.size(1), image.size(2), config.data.patch, config.data.stride);
    const auto grid_rows = torch::div(idx, grid.cols, "floor");
    const auto rows = grid_rows * grid.stride_h;                        // top-left pixel of each patch
    const auto cols = (idx - grid_rows * grid.cols) * grid.stride_w;

    const std::string dir = out->empty() ? (fs::path(*run) / "predict").string() : *out;
    RunDir target(dir);
    nlohmann::json result;
    result["image"] = *image_path;
    for (const auto& task : tasks) {
      const auto p = outputs.at(task.name)[0].to(torch::kCPU).contiguous();
      result["outputs"][task.name] = std::vector<float>(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
      if (task.activation == "softmax") result["predicted"][task.name] = p.argmax().item<int64_t>();
      std::vector<int64_t> on;
      for (int64_t k = 0; k < p.numel(); ++k) {
        if (p[k].item<float>() >= 0.5f) on.push_back(k);
      }
      std::cout << fmt::format("{:<10} {}\n", task.name,
                               task.activation == "softmax" ? fmt::format("{}", p.argmax().item<int64_t>())
                                                            : fmt::format("{{{}}}", fmt::join(on, ",")));
    }
    for (int64_t k = 0; k < idx.size(0); ++k) {
      result["selected"].push_back({{"index", idx[k].item<int64_t>()},
                                    {"row", rows[k].item<int64_t>()},
                                    {"col", cols[k].item<int64_t>()},
                                    {"score", scores[k].item<double>()}});
    }
    target.write_text("prediction.json", result.dump(2) + "\n");
    data::write_png(target.file("selection.png"), draw_selection(image, rows, cols, scores, config.data.patch));
    std::cout << "wrote " << target.file("prediction.json") << " and " << target.file("selection.png") << "\n";
  });
}

void add_import_ips(CLI::App& app) {
  auto* sub = app.add_subcommand("import-ips", "convert a reference-IPSNet state dict (torch.save) into a tessera run");
  auto opts = std::make_shared<ConfigOptions>();
  opts->add_to(*sub);
  auto state_dict = std::make_shared<std::string>();
  auto key = std::make_shared<std::string>();
  sub->add_option("--state-dict", *state_dict, "file saved with torch.save(ips_net.state_dict(), path)")->required();
  sub->add_option("--key", *key, "entry holding the state dict inside the file, if nested (e.g. state_dict)");
  sub->callback([opts, state_dict, key] {
    auto config = opts->resolve();
    train::apply_runtime(config);
    const std::vector<Task> tasks = data::megapixel_mnist_tasks();
    auto method = train::make_ips(config, tasks);
    const auto mapped = models::map_reference_ips(models::read_state_dict(*state_dict, *key));
    models::load_state_dict(method->module(), mapped, /*strict=*/true);
    RunDir run(config.run_dir);
    train::save_checkpoint(run.file("checkpoint.pt"), method->module(), nullptr, {}, config.to_yaml());
    run.write_text("config.yaml", config.to_yaml());
    std::cout << "imported " << mapped.size() << " tensors into " << run.file("checkpoint.pt") << "\n";
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
  auto out = std::make_shared<std::string>("data/export");
  auto count = std::make_shared<int64_t>(8);
  auto split = std::make_shared<std::string>("test");
  sub->add_option("--out", *out, "output directory");
  sub->add_option("--count", *count, "images to write");
  sub->add_option("--split", *split, "train or test");
  sub->callback([opts, out, count, split] {
    auto config = opts->resolve();
    train::apply_runtime(config);
    auto [train_set, test_set] = train::make_datasets(config);
    const auto& set = *split == "train" ? train_set : test_set;
    TESSERA_CHECK(set, "no ", *split, " set configured");
    RunDir dir(*out);
    const auto tasks = set->tasks();
    std::string csv = "file";
    for (const auto& t : tasks) csv += "," + t.name;
    csv += "\n";
    const int64_t n = std::min(*count, set->size());
    for (int64_t i = 0; i < n; ++i) {
      const auto sample = set->get(i);
      const auto name = fmt::format("{}_{:05d}.png", *split, i);
      data::write_png(dir.file(name), set->picture(i));
      csv += name;
      for (const auto& t : tasks) {
        const auto& label = sample.labels.at(t.name);
        if (t.activation == "softmax") {
          csv += fmt::format(",{}", label.item<int64_t>());
        } else {
          const auto on = label.nonzero().view(-1).contiguous();
          csv += "," + fmt::format("{}", fmt::join(std::vector<int64_t>(on.data_ptr<int64_t>(), on.data_ptr<int64_t>() + on.numel()), " "));
        }
      }
      csv += "\n";
    }
    dir.write_text("labels.csv", csv);
    std::cout << "wrote " << n << " images to " << dir.path() << "\n";
  });
}

}  // namespace tessera::cli
