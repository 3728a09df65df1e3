#include "tessera/train/checkpoint.h"

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

#include "tessera/core/error.h"

namespace tessera::train {
namespace {

constexpr int64_t kFormatVersion = 1;

torch::Tensor scalar(int64_t v) { return torch::tensor(v, torch::kLong); }

int64_t read_int(torch::serialize::InputArchive& a, const std::string& key) {
  torch::Tensor t;
  a.read(key, t);
  return t.item<int64_t>();
}

torch::serialize::InputArchive open(const std::string& path) {
  TESSERA_CHECK(std::filesystem::exists(path), "checkpoint '", path, "' does not exist; check --run or the path");
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error&) {
    fail("checkpoint '", path, "' is corrupt or truncated; use an earlier checkpoint or start a new run");
  }
  return archive;
}

}  // namespace

void save_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                     const TrainState& state, const std::string& config_yaml) {
  torch::serialize::OutputArchive archive;
  archive.write("format_version", scalar(kFormatVersion));
  torch::serialize::OutputArchive model_archive;
  model.save(model_archive);
  archive.write("model", model_archive);
  if (optimizer) {
    torch::serialize::OutputArchive opt_archive;
    optimizer->save(opt_archive);
    archive.write("optimizer", opt_archive);
  }
  archive.write("has_optimizer", scalar(optimizer ? 1 : 0));
  archive.write("state.epoch", scalar(state.epoch));
  archive.write("state.step", scalar(state.step));
  archive.write("state.batch_in_epoch", scalar(state.batch_in_epoch));
  archive.write("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
  archive.write("config", c10::IValue(config_yaml));

  const std::string tmp = path + ".tmp";
  try {
    archive.save_to(tmp);
  } catch (const c10::Error& e) {
    std::remove(tmp.c_str());
    fail("cannot write checkpoint '", tmp, "': ", e.what_without_backtrace(), "; the previous checkpoint is kept");
  }
  TESSERA_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot move '", tmp, "' onto '", path,
                "'; the previous checkpoint is kept");
}

std::string read_checkpoint_config(const std::string& path) {
  auto archive = open(path);
  c10::IValue config;
  archive.read("config", config);
  return config.toStringRef();
}

Checkpoint load_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer) {
  auto archive = open(path);
  Checkpoint c;
  try {
    TESSERA_CHECK(read_int(archive, "format_version") == kFormatVersion, "checkpoint '", path,
                  "' has an unsupported format version");
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    model.load(model_archive);
    c.has_optimizer = read_int(archive, "has_optimizer") != 0;
    if (optimizer && c.has_optimizer) {
      torch::serialize::InputArchive opt_archive;
      archive.read("optimizer", opt_archive);
      optimizer->load(opt_archive);
    }
    c.state.epoch = read_int(archive, "state.epoch");
    c.state.step = read_int(archive, "state.step");
    c.state.batch_in_epoch = read_int(archive, "state.batch_in_epoch");
    if (optimizer) {
      torch::Tensor rng;
      archive.read("rng.cpu", rng);
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(rng);
    }
    c10::IValue config;
    archive.read("config", config);
    c.config_yaml = config.toStringRef();
  } catch (const c10::Error& e) {
    fail("checkpoint '", path, "' does not match this model (", std::string(e.what_without_backtrace()).substr(0, 160),
         "); was it written with a different config?");
  }
  return c;
}

}  // namespace tessera::train
