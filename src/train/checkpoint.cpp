#include "tessera/train/checkpoint.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/pickle.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <unistd.h>

#include "tessera/core/error.h"
#include "tessera/core/pickle.h"

namespace tessera::train {
namespace {

// 1: TorchScript archive; 2: adds the run spec; 3: a torch.save zip of one dict (below), read without
// LibTorch's TorchScript loader, which can crash on a damaged archive.
constexpr int64_t kFormatVersion = 3;

using Dict = c10::impl::GenericDict;

Dict new_dict() { return Dict(c10::StringType::get(), c10::AnyType::get()); }

// --- format 3 ---------------------------------------------------------------------------------------
// { "format_version": 3,
//   "model": {name: tensor}                       (parameters and buffers, as a state dict)
//   "optimizer": {"param_groups": [{"lr", "betas", "eps", "weight_decay", "amsgrad", "params": [names]}],
//                 "state": {name: {"step", "exp_avg", "exp_avg_sq"[, "max_exp_avg_sq"]}}}   (AdamW; absent
//                 in model-only checkpoints)
//   "state": {"epoch", "step", ...}  "rng": {"cpu": tensor}  "config": str  "spec": str }
// Python reads it with torch.load(path)["model"].

// The optimiser state's key of a parameter: its TensorImpl's address as text in LibTorch 1.x, the
// address itself in 2.x.
auto state_key(const torch::Tensor& p) {
#if TORCH_VERSION_MAJOR >= 2
  return static_cast<void*>(p.unsafeGetTensorImpl());
#else
  return c10::guts::to_string(p.unsafeGetTensorImpl());
#endif
}

std::map<const void*, std::string> parameter_names(torch::nn::Module& model) {
  std::map<const void*, std::string> names;
  for (const auto& p : model.named_parameters()) names[p.value().unsafeGetTensorImpl()] = p.key();
  return names;
}

Dict optimizer_dict(torch::nn::Module& model, torch::optim::Optimizer& optimizer) {
  const auto names = parameter_names(model);
  c10::impl::GenericList groups(c10::AnyType::get());
  Dict states = new_dict();
  for (auto& group : optimizer.param_groups()) {
    const auto* options = dynamic_cast<const torch::optim::AdamWOptions*>(&group.options());
    TESSERA_ASSERT(options, "checkpoints hold AdamW's state; another optimiser needs its own fields");
    Dict g = new_dict();
    g.insert("lr", options->lr());
    g.insert("betas", c10::List<double>({std::get<0>(options->betas()), std::get<1>(options->betas())}));
    g.insert("eps", options->eps());
    g.insert("weight_decay", options->weight_decay());
    g.insert("amsgrad", options->amsgrad());
    c10::List<std::string> params;
    for (const auto& p : group.params()) {
      const auto it = names.find(p.unsafeGetTensorImpl());
      TESSERA_ASSERT(it != names.end(), "an optimised tensor is not a parameter of the model");
      params.push_back(it->second);
      const auto key = state_key(p);
      const auto s = optimizer.state().find(key);
      if (s == optimizer.state().end()) continue;  // no step taken yet
      const auto& adam = static_cast<const torch::optim::AdamWParamState&>(*s->second);
      Dict entry = new_dict();
      entry.insert("step", adam.step());
      entry.insert("exp_avg", adam.exp_avg());
      entry.insert("exp_avg_sq", adam.exp_avg_sq());
      if (adam.max_exp_avg_sq().defined()) entry.insert("max_exp_avg_sq", adam.max_exp_avg_sq());
      states.insert(it->second, entry);
    }
    g.insert("params", params);
    groups.push_back(g);
  }
  Dict d = new_dict();
  d.insert("param_groups", groups);
  d.insert("state", states);
  return d;
}

void write_atomically(const std::string& path, const std::vector<char>& bytes) {
  const std::string tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  TESSERA_CHECK(f, "cannot write checkpoint '", tmp, "'; check the run directory's permissions and free space; "
                "the previous checkpoint is kept");
  const bool written = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size() && std::fflush(f) == 0 &&
                       ::fsync(fileno(f)) == 0;
  const bool closed = std::fclose(f) == 0;
  if (!written || !closed) {
    std::remove(tmp.c_str());
    fail("cannot write checkpoint '", tmp, "' (disk full?); the previous checkpoint is kept");
  }
  TESSERA_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot move '", tmp, "' onto '", path,
                "'; the previous checkpoint is kept");
}

// Reading: every field is checked for presence and type, so a damaged file is one error naming the field.
// Dicts are read as generic dicts whatever their type tags say (Python's torch.save writes none).
using Generic = c10::impl::GenericDict;

class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}

  [[noreturn]] void damaged(const std::string& field, const std::string& what) const {
    fail("checkpoint '", path_, "' is damaged: '", field, "' ", what, "; use an earlier checkpoint");
  }
  const c10::IValue& get(const Generic& d, const std::string& key, const std::string& where) const {
    const auto it = d.find(c10::IValue(key));
    if (it == d.end()) damaged(where + key, "is missing");
    return it->value();
  }
  Generic dict(const Generic& d, const std::string& key, const std::string& where = "") const {
    const auto& v = get(d, key, where);
    if (!v.isGenericDict()) damaged(where + key, "is not a dictionary");
    return v.toGenericDict();
  }
  int64_t integer(const Generic& d, const std::string& key, const std::string& where = "") const {
    const auto& v = get(d, key, where);
    if (v.isInt()) return v.toInt();
    if (v.isBool()) return v.toBool();
    damaged(where + key, "is not an integer");
  }
  double real(const Generic& d, const std::string& key, const std::string& where = "") const {
    const auto& v = get(d, key, where);
    if (v.isDouble()) return v.toDouble();
    if (v.isInt()) return static_cast<double>(v.toInt());
    damaged(where + key, "is not a number");
  }
  std::string text(const Generic& d, const std::string& key, const std::string& where = "") const {
    const auto& v = get(d, key, where);
    if (!v.isString()) damaged(where + key, "is not a string");
    return v.toStringRef();
  }
  torch::Tensor tensor(const Generic& d, const std::string& key, const std::string& where = "") const {
    const auto& v = get(d, key, where);
    if (!v.isTensor()) damaged(where + key, "is not a tensor");
    return v.toTensor();
  }

 private:
  std::string path_;
};

bool is_legacy_archive(const std::string& path) {
  if (!is_zip(path)) return false;
  try {
    caffe2::serialize::PyTorchStreamReader zip(path);
    return zip.hasRecord("constants.pkl") || zip.hasRecord("code/__torch__.py");
  } catch (const std::exception&) {
    return false;  // read_pickle reports the damage
  }
}

Generic read_root(const std::string& path) {
  TESSERA_CHECK(std::filesystem::exists(path), "checkpoint '", path, "' does not exist; check --run or the path");
  TESSERA_CHECK(!is_legacy_archive(path), "checkpoint '", path,
                "' is in tessera's older format (1-2, a TorchScript archive), which is not opened by default "
                "because LibTorch's TorchScript loader can crash on a damaged file; if you trust the file, convert it "
                "once with: tessera upgrade-checkpoint --run ", path);
  c10::IValue root;
  try {
    root = read_pickle(path);
  } catch (const Error& e) {
    fail("checkpoint '", path, "' is corrupt or truncated (", e.what(), "); use an earlier checkpoint or start a new run");
  }
  TESSERA_CHECK(root.isGenericDict() && root.toGenericDict().contains(c10::IValue("format_version")),
                "'", path, "' is not a tessera checkpoint (no format version); was it written by torch.save? "
                "Import reference models with tessera import-ips / import-patchgd");
  return root.toGenericDict();
}

Checkpoint read_info(const Generic& root, const Reader& r, const std::string& path) {
  Checkpoint c;
  c.format_version = r.integer(root, "format_version");
  TESSERA_CHECK(c.format_version == kFormatVersion, "checkpoint '", path, "' has format version ", c.format_version,
                " but this tessera reads ", kFormatVersion, " (and 1-2 through tessera upgrade-checkpoint); use the "
                "tessera version that wrote it or a newer one");
  const auto s = r.dict(root, "state");
  c.state.epoch = r.integer(s, "epoch", "state.");
  c.state.step = r.integer(s, "step", "state.");
  c.state.batch_in_epoch = r.integer(s, "batch_in_epoch", "state.");
  c.state.train_seconds = r.real(s, "train_seconds", "state.");
  c.state.samples_in_epoch = r.integer(s, "samples_in_epoch", "state.");
  c.state.world_size = r.integer(s, "world_size", "state.");
  c.state.loss_scale = r.real(s, "loss_scale", "state.");
  c.state.scale_growth_tracker = r.integer(s, "scale_growth_tracker", "state.");
  c.state.skipped_steps = r.integer(s, "skipped_steps", "state.");
  c.config_yaml = r.text(root, "config");
  c.spec_json = r.text(root, "spec");
  c.has_optimizer = root.contains(c10::IValue("optimizer"));
  return c;
}

void load_model(const Generic& root, const Reader& r, const std::string& path, torch::nn::Module& model) {
  const auto saved = r.dict(root, "model");
  auto tensors = model.named_parameters();
  for (const auto& b : model.named_buffers()) tensors.insert(b.key(), b.value());
  torch::NoGradGuard no_grad;
  for (auto& item : tensors) {
    const auto t = r.tensor(saved, item.key(), "model.");
    TESSERA_CHECK(t.sizes() == item.value().sizes(), "checkpoint '", path, "' holds '", item.key(), "' of shape ",
                  t.sizes(), " but the model has ", item.value().sizes(), "; was it written with a different config?");
    item.value().copy_(t);
  }
  TESSERA_CHECK(static_cast<size_t>(saved.size()) == tensors.size(), "checkpoint '", path, "' holds ", saved.size(),
                " tensors but the model has ", tensors.size(), "; was it written with a different config?");
}

void load_optimizer(const Generic& root, const Reader& r, const std::string& path, torch::nn::Module& model,
                    torch::optim::Optimizer& optimizer) {
  const auto saved = r.dict(root, "optimizer");
  const auto& groups_value = r.get(saved, "param_groups", "optimizer.");
  if (!groups_value.isList()) r.damaged("optimizer.param_groups", "is not a list");
  const auto groups = groups_value.toListRef();
  TESSERA_CHECK(groups.size() == optimizer.param_groups().size(), "checkpoint '", path, "' holds ", groups.size(),
                " parameter groups but the optimiser has ", optimizer.param_groups().size(),
                "; was it written with a different config?");
  const auto states = r.dict(saved, "state", "optimizer.");
  const auto names = parameter_names(model);
  for (size_t i = 0; i < groups.size(); ++i) {
    const std::string where = "optimizer.param_groups." + std::to_string(i) + ".";
    if (!groups[i].isGenericDict()) r.damaged(where, "is not a dictionary");
    const auto g = groups[i].toGenericDict();
    auto& group = optimizer.param_groups()[i];
    auto* options = dynamic_cast<torch::optim::AdamWOptions*>(&group.options());
    TESSERA_ASSERT(options, "checkpoints hold AdamW's state; another optimiser needs its own fields");
    const auto& betas = r.get(g, "betas", where);
    if (!betas.isList() || betas.toListRef().size() != 2 || !betas.toListRef()[0].isDouble() || !betas.toListRef()[1].isDouble())
      r.damaged(where + "betas", "is not two numbers");
    options->lr(r.real(g, "lr", where)).eps(r.real(g, "eps", where)).weight_decay(r.real(g, "weight_decay", where));
    options->betas({betas.toListRef()[0].toDouble(), betas.toListRef()[1].toDouble()});
    options->amsgrad(r.integer(g, "amsgrad", where) != 0);
    const auto& params = r.get(g, "params", where);
    if (!params.isList()) r.damaged(where + "params", "is not a list");
    TESSERA_CHECK(params.toListRef().size() == group.params().size(), "checkpoint '", path, "' optimises ",
                  params.toListRef().size(), " tensors in group ", i, " but the model has ", group.params().size(),
                  "; was it written with a different config?");
    for (size_t j = 0; j < group.params().size(); ++j) {
      const auto& p = group.params()[j];
      const auto name = names.at(p.unsafeGetTensorImpl());
      if (!params.toListRef()[j].isString() || params.toListRef()[j].toStringRef() != name)
        r.damaged(where + "params." + std::to_string(j), "does not name '" + name + "'");
      const auto key = state_key(p);
      const auto it = states.find(c10::IValue(name));
      if (it == states.end()) {
        optimizer.state().erase(key);
        continue;
      }
      const std::string at = "optimizer.state." + name + ".";
      if (!it->value().isGenericDict()) r.damaged(at, "is not a dictionary");
      const auto e = it->value().toGenericDict();
      auto state = std::make_unique<torch::optim::AdamWParamState>();
      state->step(r.integer(e, "step", at));
      const auto moment = [&](const std::string& field) {
        auto t = r.tensor(e, field, at);
        TESSERA_CHECK(t.sizes() == p.sizes(), "checkpoint '", path, "' holds ", at, field, " of shape ", t.sizes(),
                      " for a parameter of shape ", p.sizes(), "; was it written with a different config?");
        return t.to(p.options().dtype(t.scalar_type())).contiguous();
      };
      state->exp_avg(moment("exp_avg"));
      state->exp_avg_sq(moment("exp_avg_sq"));
      if (e.contains(c10::IValue("max_exp_avg_sq"))) state->max_exp_avg_sq(moment("max_exp_avg_sq"));
      optimizer.state()[key] = std::move(state);
    }
  }
}

void restore_rng(const Generic& root, const Reader& r) {
  const auto rng = r.dict(root, "rng");
  const auto t = r.tensor(rng, "cpu", "rng.");
  auto generator = at::detail::getDefaultCPUGenerator();
  if (t.scalar_type() != torch::kByte || t.dim() != 1 || t.numel() != generator.get_state().numel())
    r.damaged("rng.cpu", "is not a CPU generator state");
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(t);
}

}  // namespace

void save_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer,
                     const TrainState& state, const std::string& config_yaml, const std::string& spec_json) {
  Dict root = new_dict();
  root.insert("format_version", kFormatVersion);
  c10::Dict<std::string, torch::Tensor> tensors;
  for (const auto& p : model.named_parameters()) tensors.insert(p.key(), p.value().detach());
  for (const auto& b : model.named_buffers()) tensors.insert(b.key(), b.value().detach());
  root.insert("model", tensors);
  if (optimizer) root.insert("optimizer", optimizer_dict(model, *optimizer));
  Dict s = new_dict();
  s.insert("epoch", state.epoch);
  s.insert("step", state.step);
  s.insert("batch_in_epoch", state.batch_in_epoch);
  s.insert("train_seconds", state.train_seconds);
  s.insert("samples_in_epoch", state.samples_in_epoch);
  s.insert("world_size", state.world_size);
  s.insert("loss_scale", state.loss_scale);
  s.insert("scale_growth_tracker", state.scale_growth_tracker);
  s.insert("skipped_steps", state.skipped_steps);
  root.insert("state", s);
  Dict rng = new_dict();
  rng.insert("cpu", at::detail::getDefaultCPUGenerator().get_state());
  root.insert("rng", rng);
  root.insert("config", config_yaml);
  root.insert("spec", spec_json);
  std::vector<char> bytes;
  try {
    bytes = torch::pickle_save(root);
  } catch (const c10::Error& e) {
    fail("cannot serialise checkpoint '", path, "': ", e.what_without_backtrace(), "; the previous checkpoint is kept");
  }
  write_atomically(path, bytes);
}

CheckpointFile::CheckpointFile(const std::string& path)
    : path_(path), root_(read_root(path)), info_(read_info(root_, Reader(path), path)) {}

void CheckpointFile::load(torch::nn::Module& model, torch::optim::Optimizer* optimizer) const {
  const Reader r(path_);
  try {
    load_model(root_, r, path_, model);
    if (optimizer && info_.has_optimizer) load_optimizer(root_, r, path_, model, *optimizer);
    if (optimizer) restore_rng(root_, r);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail("checkpoint '", path_, "' does not match this model (", std::string(e.what()).substr(0, 160),
         "); was it written with a different config?");
  }
}

Checkpoint read_checkpoint_info(const std::string& path) { return CheckpointFile(path).info(); }

Checkpoint load_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer* optimizer) {
  const CheckpointFile file(path);
  file.load(model, optimizer);
  return file.info();
}

// --- formats 1 and 2, only through upgrade_checkpoint ----------------------------------------------------
namespace legacy {
namespace {

int64_t read_int(torch::serialize::InputArchive& a, const std::string& key) {
  torch::Tensor t;
  a.read(key, t);
  return t.item<int64_t>();
}

}  // namespace

Checkpoint load(const std::string& path, torch::nn::Module* model, torch::optim::Optimizer* optimizer) {
  TESSERA_CHECK(std::filesystem::exists(path), "checkpoint '", path, "' does not exist; check --run or the path");
  TESSERA_CHECK(is_legacy_archive(path), "'", path, "' is not a checkpoint of tessera's format 1 or 2; nothing to upgrade");
  torch::serialize::InputArchive archive;
  Checkpoint c;
  try {
    archive.load_from(path);
    c.format_version = read_int(archive, "format_version");
    TESSERA_CHECK(c.format_version == 1 || c.format_version == 2, "checkpoint '", path, "' has format version ",
                  c.format_version, ", not 1 or 2; nothing to upgrade");
    c.has_optimizer = read_int(archive, "has_optimizer") != 0;
    c.state.epoch = read_int(archive, "state.epoch");
    c.state.step = read_int(archive, "state.step");
    c.state.batch_in_epoch = read_int(archive, "state.batch_in_epoch");
    const auto optional = [&](const std::string& key) {
      torch::Tensor t;  // a fresh tensor each: reading into a defined one converts to its dtype
      return archive.try_read(key, t) ? c10::optional<torch::Tensor>(t) : c10::nullopt;
    };
    if (const auto t = optional("state.train_seconds")) c.state.train_seconds = t->item<double>();
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
    if (!model) return c;
    std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
    for (const auto& p : model->named_parameters()) shapes.emplace_back(p.key(), p.value().sizes().vec());
    for (const auto& b : model->named_buffers()) shapes.emplace_back(b.key(), b.value().sizes().vec());
    torch::serialize::InputArchive model_archive;
    archive.read("model", model_archive);
    model->load(model_archive);
    auto tensors = model->named_parameters();
    for (const auto& b : model->named_buffers()) tensors.insert(b.key(), b.value());
    for (const auto& [name, shape] : shapes) {
      TESSERA_CHECK(tensors[name].sizes().vec() == shape, "checkpoint '", path, "' holds '", name, "' of shape ",
                    tensors[name].sizes(), " but the model has ", c10::IntArrayRef(shape));
    }
    if (optimizer && c.has_optimizer) {
      torch::serialize::InputArchive opt_archive;
      archive.read("optimizer", opt_archive);
      optimizer->load(opt_archive);
    }
    torch::Tensor rng;
    archive.read("rng.cpu", rng);
    auto generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    generator.set_state(rng);
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {  // c10::Error, or the TorchScript parser's errors
    fail("checkpoint '", path, "' cannot be read as tessera's format 1 or 2 (",
         std::string(e.what()).substr(0, 160), "); it is damaged");
  }
  return c;
}

}  // namespace legacy

}  // namespace tessera::train
