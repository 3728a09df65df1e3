#include "tessera/train/checkpoint.h"

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>

#include "tessera/core/error.h"

namespace tessera::train {
namespace {

constexpr int64_t kFormatVersion = 2;  // 2 adds the run spec

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
  } catch (const std::exception&) {  // c10::Error, or the TorchScript parser's errors on a damaged archive
    fail("checkpoint '", path, "' is corrupt or truncated; use an earlier checkpoint or start a new run");
  }
  return archive;
}

}  // namespace

void save_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                     const TrainState& state, const std::string& config_yaml, const std::string& spec_json) {
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
  archive.write("state.train_seconds", torch::tensor(state.train_seconds, torch::kDouble));
  archive.write("state.samples_in_epoch", scalar(state.samples_in_epoch));
  archive.write("state.world_size", scalar(state.world_size));
  archive.write("state.loss_scale", torch::tensor(state.loss_scale, torch::kDouble));
  archive.write("state.scale_growth_tracker", scalar(state.scale_growth_tracker));
  archive.write("state.skipped_steps", scalar(state.skipped_steps));
  archive.write("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
  archive.write("config", c10::IValue(config_yaml));
  archive.write("spec", c10::IValue(spec_json));

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

namespace {

// Format, state, config and spec; the archive stays open for the tensors.
Checkpoint read_info(torch::serialize::InputArchive& archive, const std::string& path) {
  Checkpoint c;
  try {
    c.format_version = read_int(archive, "format_version");
  } catch (const c10::Error&) {
    fail("'", path, "' is not a tessera checkpoint (no format version); was it written by torch.save? "
         "Import reference models with tessera import-ips / import-patchgd");
  }
  TESSERA_CHECK(c.format_version >= 1 && c.format_version <= kFormatVersion, "checkpoint '", path,
                "' has format version ", c.format_version, " but this tessera reads 1 to ", kFormatVersion,
                "; use the tessera version that wrote it or a newer one");
  try {
    c.has_optimizer = read_int(archive, "has_optimizer") != 0;
    c.state.epoch = read_int(archive, "state.epoch");
    c.state.step = read_int(archive, "state.step");
    c.state.batch_in_epoch = read_int(archive, "state.batch_in_epoch");
    torch::Tensor seconds;
    if (archive.try_read("state.train_seconds", seconds)) c.state.train_seconds = seconds.item<double>();
    // Fields added later: absent in older checkpoints. (A fresh tensor each: reading into a defined one
    // converts to its dtype.)
    const auto optional = [&](const std::string& key) {
      torch::Tensor t;
      return archive.try_read(key, t) ? c10::optional<torch::Tensor>(t) : c10::nullopt;
    };
    const auto samples = optional("state.samples_in_epoch");
    c.state.samples_in_epoch = samples ? samples->item<int64_t>() : -1;
    if (const auto t = optional("state.world_size")) c.state.world_size = t->item<int64_t>();
    if (const auto t = optional("state.loss_scale")) c.state.loss_scale = t->item<double>();
    if (const auto t = optional("state.scale_growth_tracker")) c.state.scale_growth_tracker = t->item<int64_t>();
    if (const auto t = optional("state.skipped_steps")) c.state.skipped_steps = t->item<int64_t>();
    c10::IValue text;
    archive.read("config", text);
    c.config_yaml = text.toStringRef();
    if (c.format_version >= 2) {
      archive.read("spec", text);
      c.spec_json = text.toStringRef();
    }
  } catch (const c10::Error& e) {
    fail("checkpoint '", path, "' lacks its state or config (", std::string(e.what_without_backtrace()).substr(0, 120),
         "); it is damaged: use an earlier checkpoint");
  }
  return c;
}

}  // namespace

Checkpoint read_checkpoint_info(const std::string& path) {
  auto archive = open(path);
  return read_info(archive, path);
}

Checkpoint load_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer) {
  auto archive = open(path);
  Checkpoint c = read_info(archive, path);
  // LibTorch's load replaces each tensor whatever its shape: record the shapes to check afterwards.
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  for (const auto& p : model.named_parameters()) shapes.emplace_back(p.key(), p.value().sizes().vec());
  for (const auto& b : model.named_buffers()) shapes.emplace_back(b.key(), b.value().sizes().vec());
  try {
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    model.load(model_archive);
    auto tensors = model.named_parameters();
    for (const auto& b : model.named_buffers()) tensors.insert(b.key(), b.value());
    for (const auto& [name, shape] : shapes) {
      TESSERA_CHECK(tensors[name].sizes().vec() == shape, "checkpoint '", path, "' holds '", name, "' of shape ",
                    tensors[name].sizes(), " but the model has ", c10::IntArrayRef(shape));
    }
    if (optimizer && c.has_optimizer) {
      torch::serialize::InputArchive opt_archive;
      archive.read("optimizer", opt_archive);
      optimizer->load(opt_archive);
    }
    if (optimizer) {
      torch::Tensor rng;
      archive.read("rng.cpu", rng);
      auto generator = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(rng);
    }
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    fail("checkpoint '", path, "' does not match this model (", std::string(e.what_without_backtrace()).substr(0, 160),
         "); was it written with a different config?");
  } catch (const std::exception& e) {
    fail("checkpoint '", path, "' is damaged (", std::string(e.what()).substr(0, 160), "); use an earlier checkpoint");
  }
  return c;
}

}  // namespace tessera::train
