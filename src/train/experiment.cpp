#include "tessera/train/experiment.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <filesystem>

#include "tessera/core/error.h"
#include "tessera/core/precision.h"
#include "tessera/core/log.h"
#include "tessera/core/memory.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/runtime.h"
#include "tessera/models/encoder_registry.h"
#include "tessera/models/state_dict.h"
#include "tessera/train/registry.h"
#include "tessera/train/trainer.h"

namespace tessera::train {
namespace fs = std::filesystem;

void apply_runtime(const Config& config) {
  validate(config);
  memory::install_tracking();
  runtime::seed_everything(config.train.seed);
  runtime::set_deterministic(config.train.deterministic);
  memory::set_budget(config.train.memory_budget.empty() ? 0 : memory::parse_bytes(config.train.memory_budget));
}

std::pair<data::DatasetPtr, data::DatasetPtr> make_datasets(const Config& config, data::Splits splits,
                                                            const std::vector<Task>* tasks) {
  return find_dataset(config.data.dataset).make(config, splits, tasks);
}

namespace {

// Starts an encoder from the encoder of another run (trained at a lower resolution, or on another
// task): that run is rebuilt from its spec and loaded, and every tensor whose name and shape match is
// copied. Everything else (a head whose grid depends on the resolution) keeps its initialisation.
void init_encoder_from(torch::nn::Module& encoder, const std::string& checkpoint) {
  auto earlier = open_run(checkpoint);
  models::StateDict dict;
  auto& source = earlier.method->encoder();
  for (const auto& p : source.named_parameters()) dict[p.key()] = p.value();
  for (const auto& b : source.named_buffers()) dict[b.key()] = b.value();
  for (const auto& p : encoder.named_parameters()) {
    const auto it = dict.find(p.key());
    if (it != dict.end() && it->second.sizes() != p.value().sizes()) dict.erase(it);  // a replaced final Linear
  }
  const auto report = models::load_state_dict(encoder, dict, /*strict=*/false);
  TESSERA_CHECK(report.unexpected.empty() && !report.loaded.empty(), "model.init_from '", checkpoint,
                "' has a different encoder (", earlier.config.model.encoder, "); use the same model.encoder");
  // Debug: the planner builds the method once per trial; the trainer says it once.
  log::debug("encoder starts from {} ({} tensors)", checkpoint, report.loaded.size());
}

std::string checkpoint_file(const std::string& run_or_checkpoint) {
  return fs::is_regular_file(run_or_checkpoint) ? run_or_checkpoint
                                                : (fs::path(run_or_checkpoint) / "checkpoint.pt").string();
}

}  // namespace

std::unique_ptr<methods::Method> make_method(const Config& config, const std::vector<Task>& tasks) {
  auto method = find_method(config.train.method).make(config, tasks);
  method->set_precision(parse_precision(config.train.precision));
  if (config.model.encoder != "projector") {
    // model.weights, else a model folder's own weight file: strict for ViTs (a timm state dict names every
    // tensor), lenient for torchvision CNNs (truncated ResNets load the stages they keep).
    const auto spec = models::resolve_encoder(config.model.encoder, models::model_encoder_args(config.model));
    const auto weights = config.model.weights.empty() ? spec.weights : config.model.weights;
    if (!weights.empty()) {
      auto* backbone = dynamic_cast<models::BackboneImpl*>(&method->encoder());
      TESSERA_ASSERT(backbone, "the method's encoder is not a backbone");
      models::load_encoder_weights(*backbone, weights, /*strict=*/spec.is_vit());
    }
  } else if (!config.model.weights.empty()) {
    const auto report = models::load_state_dict(method->encoder(), models::read_state_dict(config.model.weights), false);
    TESSERA_CHECK(!report.loaded.empty(), "no entry of '", config.model.weights, "' matches the feature projector");
  }
  if (!config.model.init_from.empty()) init_encoder_from(method->encoder(), config.model.init_from);
  return method;
}

std::unique_ptr<methods::Ips> make_ips(const Config& config, const std::vector<Task>& tasks) {
  Config c = config;
  c.train.method = "ips";
  std::unique_ptr<methods::Ips> ips(static_cast<methods::Ips*>(make_method(c, tasks).release()));
  return ips;
}

RunSpec read_run_spec(const Checkpoint& checkpoint, const std::string& path) {
  if (!checkpoint.spec_json.empty()) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(checkpoint.spec_json);
    } catch (const nlohmann::json::exception& e) {
      fail("checkpoint '", path, "' holds a run spec that is not valid JSON (", e.what(), "); it is damaged");
    }
    return spec_from_json(j, path);
  }
  // Format 1: no spec; derive one from the stored config.
  Config config;
  config.load_yaml_text(checkpoint.config_yaml, path);
  if (config.patchgd.head == "default") config.patchgd.head = "original";  // renamed: the same head
  TESSERA_CHECK(config.patchgd.head != "small" && config.patchgd.head != "large", "checkpoint '", path,
                "' was written before run specs with PatchGD head '", config.patchgd.head,
                "', which no longer exists (the reference's variants replaced it); retrain it with patchgd.head "
                "original, smaller or larger");
  const auto& dataset = find_dataset(config.data.dataset);
  if (dataset.describe) {
    const auto [tasks, normalization] = dataset.describe(config);
    return make_run_spec(config, tasks, normalization);
  }
  try {
    const auto train_set = dataset.make(config, {true, false}, nullptr).first;
    auto tasks = train_set->tasks();
    // Format-1 runs trained every slide label column as a softmax, binary ones over 2 classes.
    for (auto& t : tasks) {
      if (dataset.input != "image" && t.activation == "sigmoid" && t.outputs == 1) t = {t.name, "softmax", 2, false};
    }
    return make_run_spec(config, tasks, train_set->normalization());
  } catch (const Error& e) {
    fail("checkpoint '", path, "' was written before run specs (format 1), and its tasks can only be recovered from "
         "its ", config.data.dataset, " data set, which cannot be opened (", e.what(),
         "); restore the data set at the paths of its config (the spec is then derived from it), or retrain");
  }
}

OpenedRun open_run(const std::string& run_or_checkpoint) {
  OpenedRun run;
  run.checkpoint_path = checkpoint_file(run_or_checkpoint);
  const CheckpointFile file(run.checkpoint_path);
  run.checkpoint = file.info();
  run.config.load_yaml_text(run.checkpoint.config_yaml, run.checkpoint_path);
  run.spec = read_run_spec(run.checkpoint, run.checkpoint_path);
  auto model_config = run.spec.config();
  model_config.train.device = run.config.train.device;
  run.method = find_method(run.spec.method).make(model_config, run.spec.tasks);
  run.method->set_precision(parse_precision(run.config.train.precision));  // predicts as it trained
  try {
    file.load(run.method->module(), nullptr);
  } catch (const Error& e) {
    fail("checkpoint '", run.checkpoint_path, "' does not match the network its run spec describes (", e.what(),
         "); the spec or the weights were changed after training");
  }
  return run;
}

std::string upgrade_checkpoint(const std::string& run_or_checkpoint) {
  const auto path = checkpoint_file(run_or_checkpoint);
  const auto info = legacy::load(path, nullptr, nullptr);
  Config config;
  config.load_yaml_text(info.config_yaml, path);
  const auto spec = read_run_spec(info, path);
  auto method = find_method(spec.method).make(spec.config(), spec.tasks);
  std::unique_ptr<torch::optim::AdamW> optimizer;
  if (info.has_optimizer) optimizer = make_optimizer(config, method->module());
  // The file's RNG state passes through the process's generator (where the checkpoint writer reads it);
  // the caller's state is put back afterwards, also on an error.
  struct RestoreRng {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    torch::Tensor state = generator.get_state();
    ~RestoreRng() {
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(state);
    }
  } restore_rng;
  const auto loaded = legacy::load(path, &method->module(), optimizer.get());
  const auto backup = path + ".format" + std::to_string(loaded.format_version);
  std::error_code ec;
  fs::copy_file(path, backup, fs::copy_options::overwrite_existing, ec);
  TESSERA_CHECK(!ec, "cannot keep the old checkpoint as '", backup, "': ", ec.message(), "; nothing was changed");
  save_checkpoint(path, method->module(), optimizer.get(), loaded.state, loaded.config_yaml, to_json(spec).dump());
  return backup;
}

void save_run(const std::string& dir, const Config& config, const RunSpec& spec, torch::nn::Module& model) {
  RunDir run(dir);
  save_checkpoint(run.file("checkpoint.pt"), model, nullptr, {}, Config(config).to_yaml(), to_json(spec).dump());
  run.write_text("config.yaml", config_with_spec_yaml(config, spec));
}

}  // namespace tessera::train
