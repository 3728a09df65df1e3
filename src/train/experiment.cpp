#include "tessera/train/experiment.h"

#include <torch/torch.h>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/memory.h"
#include "tessera/core/runtime.h"
#include "tessera/data/megapixel_mnist.h"
#include "tessera/models/state_dict.h"

namespace tessera::train {

void apply_runtime(const Config& config) {
  config.validate();
  memory::install_tracking();
  runtime::set_threads(config.train.threads);
  runtime::seed_everything(config.train.seed);
  runtime::set_deterministic(config.train.deterministic);
  memory::set_cpu_budget(config.train.memory_budget.empty() ? 0 : memory::parse_bytes(config.train.memory_budget));
}

std::pair<data::DatasetPtr, data::DatasetPtr> make_datasets(const Config& config) {
  const auto& d = config.data;
  TESSERA_CHECK(d.dataset == "megapixel_mnist", "unknown data.dataset '", d.dataset, "'; this build has megapixel_mnist");
  const auto make = [&](const std::string& split, int64_t size, int64_t seed) -> data::DatasetPtr {
    data::MegapixelMnistOptions o;
    o.height = d.height;
    o.width = d.width;
    o.n_target = d.n_target;
    o.n_other = d.n_other;
    o.noise_glyphs = d.noise_glyphs;
    o.size = size;
    o.seed = seed;
    auto digits = std::make_shared<const data::MnistDigits>(data::load_mnist(d.mnist_dir, split));
    return std::make_shared<data::MegapixelMnist>(digits, o);
  };
  return {make("train", d.train_size, d.train_seed), make("test", d.test_size, d.test_seed)};
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
