#include "tessera/train/experiment.h"

#include <torch/torch.h>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/memory.h"
#include "tessera/core/runtime.h"
#include "tessera/data/csv_images.h"
#include "tessera/data/megapixel_mnist.h"
#include "tessera/data/ultramnist.h"
#include "tessera/methods/full_image.h"
#include "tessera/methods/patchgd.h"
#include "tessera/models/state_dict.h"
#include "tessera/train/checkpoint.h"
#ifdef TESSERA_WITH_SLIDES
#include "tessera/slides/slide_dataset.h"
#endif

namespace tessera::train {

void apply_runtime(const Config& config) {
  config.validate();
  memory::install_tracking();
  runtime::set_threads(config.train.threads);
  runtime::seed_everything(config.train.seed);
  runtime::set_deterministic(config.train.deterministic);
  memory::set_budget(config.train.memory_budget.empty() ? 0 : memory::parse_bytes(config.train.memory_budget));
}

std::pair<data::DatasetPtr, data::DatasetPtr> make_datasets(const Config& config) {
  const auto& d = config.data;
  if (d.dataset == "slides" || d.dataset == "feature_bags") {
#ifdef TESSERA_WITH_SLIDES
    auto train = std::make_shared<slides::SlideDataset>(slides::slide_data_options(config, "train"));
    const auto entries = slides::read_manifest(d.manifest);
    const bool has_test = !slides::select_split(entries, "test").empty();
    data::DatasetPtr test;
    if (has_test) test = std::make_shared<slides::SlideDataset>(slides::slide_data_options(config, "test"));
    return {train, test};
#else
    fail("data.dataset ", d.dataset, " needs a build with slide support (TESSERA_WITH_SLIDES=ON)");
#endif
  }
  if (d.dataset == "csv") {
    const auto make = [&](const std::string& csv) -> data::DatasetPtr {
      if (csv.empty()) return nullptr;
      data::CsvImagesOptions o;
      o.csv = csv;
      o.height = d.height;
      o.width = d.width;
      o.channels = d.channels;
      o.classes = d.classes;
      o.ordinal = d.ordinal;
      o.mean = data::parse_floats(d.mean, "data.mean");
      o.std = data::parse_floats(d.std, "data.std");
      return std::make_shared<data::CsvImages>(o);
    };
    TESSERA_CHECK(!d.train_csv.empty(), "data.dataset csv needs data.train_csv (a CSV of path,label rows)");
    auto train = make(d.train_csv);
    auto test = make(d.test_csv);
    if (test && d.classes == 0) {  // both sets must agree on the class count
      TESSERA_CHECK(test->tasks()[0].outputs <= train->tasks()[0].outputs, d.test_csv, " has more classes than ",
                    d.train_csv, "; set data.classes");
    }
    return {train, test};
  }
  const auto digits = [&](const std::string& split) {
    return std::make_shared<const data::MnistDigits>(data::load_mnist(d.mnist_dir, split));
  };
  if (d.dataset == "ultramnist" || d.dataset == "ultramnist28") {
    TESSERA_CHECK(d.height == d.width, "UltraMNIST canvases are square; set data.height = data.width");
    const auto make = [&](const std::string& split, int64_t size, int64_t seed) -> data::DatasetPtr {
      data::UltraMnistOptions o;
      o.variant = d.dataset == "ultramnist28" ? "28" : "512";
      o.canvas = d.height;
      o.max_scale = d.max_scale;
      o.channels = d.channels;
      o.size = size;
      o.seed = seed;
      return std::make_shared<data::UltraMnist>(digits(split), o);
    };
    return {make("train", d.train_size, d.train_seed), make("test", d.test_size, d.test_seed)};
  }
  const auto make = [&](const std::string& split, int64_t size, int64_t seed) -> data::DatasetPtr {
    data::MegapixelMnistOptions o;
    o.height = d.height;
    o.width = d.width;
    o.n_target = d.n_target;
    o.n_other = d.n_other;
    o.noise_glyphs = d.noise_glyphs;
    o.size = size;
    o.seed = seed;
    return std::make_shared<data::MegapixelMnist>(digits(split), o);
  };
  return {make("train", d.train_size, d.train_seed), make("test", d.test_size, d.test_seed)};
}

namespace {

// Starts a backbone from the backbone of another run's checkpoint (trained at a lower resolution):
// that run's network is rebuilt from its stored config, loaded, and its backbone tensors copied over.
// Everything else (the head, whose grid depends on the resolution) keeps its fresh initialisation.
void init_backbone_from(models::BackboneImpl& backbone, const std::string& checkpoint, const std::vector<Task>& tasks) {
  Config earlier;
  earlier.load_yaml_text(read_checkpoint_config(checkpoint), checkpoint);
  TESSERA_CHECK(earlier.train.method != "ips", "model.init_from '", checkpoint,
                "' is an IPS run; progressive resolution starts from a PatchGD or GD run");
  auto net = methods::make_patchgd_net(earlier, tasks, earlier.train.method != "gd");
  load_checkpoint(checkpoint, *net, nullptr);
  models::StateDict dict;
  for (const auto& p : net->backbone->named_parameters()) dict[p.key()] = p.value();
  for (const auto& b : net->backbone->named_buffers()) dict[b.key()] = b.value();
  for (const auto& p : backbone.named_parameters()) {
    const auto it = dict.find(p.key());
    if (it != dict.end() && it->second.sizes() != p.value().sizes()) dict.erase(it);  // a replaced final Linear
  }
  const auto report = models::load_state_dict(backbone, dict, /*strict=*/false);
  TESSERA_CHECK(report.unexpected.empty() && !report.loaded.empty(), "model.init_from '", checkpoint,
                "' has a different backbone (", earlier.model.encoder, "); use the same model.encoder");
  log::info("backbone starts from {} ({} tensors)", checkpoint, report.loaded.size());
}

}  // namespace

std::unique_ptr<methods::Method> make_method(const Config& config, const std::vector<Task>& tasks) {
  if (config.train.method == "ips") return make_ips(config, tasks);
  std::unique_ptr<methods::Method> method;
  models::BackbonePtr backbone;
  if (config.train.method == "patchgd") {
    auto m = methods::PatchGd::from_config(config, tasks);
    backbone = m->net()->backbone;
    method = std::move(m);
  } else {
    auto m = methods::FullImage::from_config(config, tasks);
    backbone = m->net()->backbone;
    method = std::move(m);
  }
  if (!config.model.weights.empty()) models::load_backbone_weights(*backbone, config.model.weights);
  if (!config.model.init_from.empty()) init_backbone_from(*backbone, config.model.init_from, tasks);
  return method;
}

std::unique_ptr<methods::Ips> make_ips(const Config& config, const std::vector<Task>& tasks) {
  auto ips = methods::Ips::from_config(config, tasks);
  if (!config.model.weights.empty()) {
    auto dict = models::read_state_dict(config.model.weights);
    const auto report = models::load_state_dict(*ips->net()->encoder, dict, /*strict=*/false);
    TESSERA_CHECK(!report.loaded.empty(), "no entry of '", config.model.weights,
                  "' matches the encoder; is it a torchvision ResNet state dict?");
    log::info("loaded {} encoder tensors from {} ({} not in the file, {} unused)", report.loaded.size(),
              config.model.weights, report.missing.size(), report.unexpected.size());
  }
  return ips;
}

}  // namespace tessera::train
