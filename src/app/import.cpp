#include "tessera/app/import.h"

#include <torch/torch.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <map>
#include <regex>

#include "tessera/core/error.h"
#include "tessera/models/encoder_registry.h"
#include "tessera/core/pickle.h"
#include "tessera/data/csv_images.h"
#include "tessera/data/megapixel_mnist.h"
#include "tessera/data/patches.h"
#include "tessera/models/state_dict.h"
#include "tessera/train/experiment.h"
#include "tessera/train/registry.h"

namespace tessera::app {
namespace {

YAML::Node required(const YAML::Node& root, const std::string& key, const std::string& path) {
  const auto node = root[key];
  TESSERA_CHECK(node && !node.IsNull(), "reference config '", path, "' has no '", key, "'");
  return node;
}

template <typename T>
T scalar(const YAML::Node& root, const std::string& key, const std::string& path) {
  try {
    return required(root, key, path).as<T>();
  } catch (const YAML::Exception&) {
    fail("reference config '", path, "': '", key, "' has an unexpected value");
  }
}

// patch_size / patch_stride: one number, or [h, w] with h == w.
int64_t square(const YAML::Node& root, const std::string& key, const std::string& path) {
  const auto node = required(root, key, path);
  if (node.IsScalar()) return scalar<int64_t>(root, key, path);
  TESSERA_CHECK(node.IsSequence() && node.size() == 2, "reference config '", path, "': '", key,
                "' must be a number or [h, w]");
  const auto h = node[0].as<int64_t>(), w = node[1].as<int64_t>();
  TESSERA_CHECK(h == w, "reference config '", path, "': '", key, "' is ", h, "x", w,
                "; tessera's patch grids are square (use one side)");
  return h;
}

// Output width of the reference's encoder (layer2 or layer4 of a torchvision ResNet), from the registry.
int64_t encoder_dim(const ModelConfig& m) {
  models::BackboneOptions o;
  o.arch = m.encoder;
  o.in_channels = m.in_channels;
  o.stages = m.stages;
  o.width = m.width;
  return models::make_backbone(o)->feature_dim();
}

void apply_input(Config& config, const InputFlags& input) {
  if (!input.mean.empty() || !input.std.empty()) {
    TESSERA_CHECK(!input.mean.empty() && !input.std.empty(), "--mean and --std go together");
    config.data.mean = input.mean;
    config.data.std = input.std;
  }
  if (input.height > 0) config.data.height = input.height;
  if (input.width > 0) config.data.width = input.width;
}

data::Normalization normalization_of(const Config& config) {
  data::Normalization n{data::parse_floats(config.data.mean, "--mean"), data::parse_floats(config.data.std, "--std")};
  TESSERA_CHECK(n.mean.size() == n.std.size(), "--mean and --std need the same number of values");
  const int64_t channels = config.model.encoder == "projector" ? 0 : config.model.in_channels;
  TESSERA_CHECK(n.mean.empty() || channels == 0 || static_cast<int64_t>(n.mean.size()) == channels, "--mean has ",
                n.mean.size(), " values but the model reads ", channels, " channels");
  return n;
}

// Loads every tensor or throws with the context; returns how many were loaded.
int64_t load_all(torch::nn::Module& module, const models::StateDict& dict, const std::string& file) {
  try {
    return static_cast<int64_t>(models::load_state_dict(module, dict, /*strict=*/true).loaded.size());
  } catch (const Error& e) {
    fail("'", file, "' does not fit the model its settings describe: ", e.what());
  }
}

}  // namespace

std::pair<Config, std::vector<Task>> read_reference_ips_config(const std::string& path, Config config) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail("reference config '", path, "' cannot be opened; check the path");
  } catch (const YAML::Exception& e) {
    fail("reference config '", path, "' is not valid YAML: ", e.what());
  }
  const bool image = scalar<bool>(root, "is_image", path);
  const int64_t classes = scalar<int64_t>(root, "n_class", path);
  // Tasks in query-token order: the task with id k reads token k.
  const auto tasks_node = required(root, "tasks", path);
  TESSERA_CHECK(tasks_node.IsMap() && tasks_node.size() > 0, "reference config '", path, "': 'tasks' must map task keys to {id, name, act_fn}");
  std::map<int64_t, Task> by_id;
  for (const auto& kv : tasks_node) {
    const auto key = kv.first.as<std::string>();
    const auto id = scalar<int64_t>(kv.second, "id", path + " tasks." + key);
    const auto name = scalar<std::string>(kv.second, "name", path + " tasks." + key);
    const auto act = scalar<std::string>(kv.second, "act_fn", path + " tasks." + key);
    TESSERA_CHECK(act == "softmax" || act == "sigmoid", "reference config '", path, "': task '", name, "' has act_fn '", act,
                  "'; the reference knows softmax and sigmoid");
    TESSERA_CHECK(!by_id.count(id), "reference config '", path, "': two tasks have id ", id);
    by_id[id] = Task{name, act, classes, false};
  }
  const int64_t tokens = scalar<int64_t>(root, "n_token", path);
  std::vector<Task> tasks;
  for (const auto& [id, task] : by_id) {
    TESSERA_CHECK(id == static_cast<int64_t>(tasks.size()), "reference config '", path, "': task ids must be 0..",
                  by_id.size() - 1, " (one per query token); found id ", id);
    tasks.push_back(task);
  }
  TESSERA_CHECK(tokens == static_cast<int64_t>(tasks.size()), "reference config '", path, "': n_token is ", tokens,
                " but ", tasks.size(), " tasks are listed; every query token needs a task");

  auto& m = config.model;
  const int64_t D = scalar<int64_t>(root, "D", path);
  if (image) {
    m.encoder = scalar<std::string>(root, "enc_type", path);
    const auto known = models::list_encoders();
    const bool cnn = std::any_of(known.begin(), known.end(), [&](const auto& e) { return e.name == m.encoder; }) &&
                     !models::resolve_encoder(m.encoder).is_vit();
    TESSERA_CHECK(cnn, "reference config '", path, "': enc_type '", m.encoder,
                  "' is not supported; the reference's encoders are torchvision ResNets");
    m.in_channels = scalar<int64_t>(root, "n_chan_in", path);
    m.stages = scalar<int64_t>(root, "n_res_blocks", path);
    TESSERA_CHECK(m.stages == 2 || m.stages == 4, "reference config '", path, "': n_res_blocks must be 2 or 4, got ", m.stages);
    m.width = 64;
    TESSERA_CHECK(D == encoder_dim(m), "reference config '", path, "': D is ", D, " but a ", m.encoder, " with ", m.stages,
                  " stages gives ", encoder_dim(m), "-d patch embeddings");
    config.data.dataset = "csv";  // the user's own images
    config.data.channels = m.in_channels;
  } else {
    m.encoder = "projector";
    m.in_features = scalar<int64_t>(root, "n_chan_in", path);
    m.dim = D;
    config.data.dataset = "feature_bags";
  }
  m.pos_enc = scalar<bool>(root, "use_pos", path);
  m.heads = scalar<int64_t>(root, "H", path);
  m.d_k = scalar<int64_t>(root, "D_k", path);
  m.d_v = scalar<int64_t>(root, "D_v", path);
  m.d_inner = scalar<int64_t>(root, "D_inner", path);
  m.dropout = scalar<double>(root, "dropout", path);
  m.attn_dropout = scalar<double>(root, "attn_dropout", path);
  config.ips.M = scalar<int64_t>(root, "M", path);
  config.ips.I = scalar<int64_t>(root, "I", path);
  config.data.patch = square(root, "patch_size", path);
  config.data.stride = square(root, "patch_stride", path);
  const bool shuffle = scalar<bool>(root, "shuffle", path);
  config.ips.shuffle = shuffle ? scalar<std::string>(root, "shuffle_style", path) : "none";
  const int64_t B = scalar<int64_t>(root, "B", path), B_seq = scalar<int64_t>(root, "B_seq", path);
  config.train.batch_size = B;
  config.ips.seq_batch = B_seq;
  config.ips.loading = scalar<bool>(root, "eager", path) ? (B_seq < B ? "eager_sequential" : "eager") : "lazy";
  config.train.method = "ips";
  return {config, tasks};
}

ImportReport import_ips(const ImportIpsOptions& o) {
  Config config = o.config;
  std::vector<Task> tasks = data::megapixel_mnist_tasks();
  if (!o.reference_config.empty()) std::tie(config, tasks) = read_reference_ips_config(o.reference_config, config);
  apply_input(config, o.input);
  config.model.weights.clear();
  config.model.init_from.clear();
  const bool features = config.model.encoder == "projector";
  TESSERA_CHECK(features || (config.data.height > 0 && config.data.width > 0),
                "pass --height and --width: the reference config does not record the image size");
  train::validate_model(config);
  const auto normalization = normalization_of(config);

  const auto mapped = models::map_reference_ips(models::read_state_dict(o.state_dict, o.key), features);
  // Every task needs its output layer, and every output layer a task: say which, by name.
  std::set<std::string> heads;
  static const std::regex head_key(R"(^heads\.([^.]+)\.weight$)");
  for (const auto& [name, t] : mapped) {
    std::smatch m;
    if (std::regex_match(name, m, head_key)) heads.insert(m[1]);
  }
  for (const auto& t : tasks) {
    TESSERA_CHECK(heads.count(t.name), "state dict '", o.state_dict, "' has no output layer for task '", t.name,
                  "' of ", o.reference_config.empty() ? "the Megapixel MNIST task list" : o.reference_config);
    heads.erase(t.name);
  }
  TESSERA_CHECK(heads.empty(), "state dict '", o.state_dict, "' has an output layer '", heads.empty() ? "" : *heads.begin(),
                "' that no task of ", o.reference_config.empty() ? "the Megapixel MNIST task list" : o.reference_config,
                " names");
  auto method = train::find_method("ips").make(config, tasks);
  ImportReport report;
  report.tensors = load_all(method->module(), mapped, o.state_dict);
  report.spec = train::make_run_spec(config, tasks, normalization);
  report.run_dir = config.run_dir;
  train::save_run(config.run_dir, config, report.spec, method->module());
  return report;
}

ImportReport import_patchgd(const ImportPatchGdOptions& o) {
  TESSERA_CHECK(o.input.height > 0 && o.input.width > 0 && o.patch > 0,
                "import-patchgd needs --height, --width and --patch: the checkpoint records no image geometry");
  const auto root = read_pickle(o.checkpoint);
  TESSERA_CHECK(root.isGenericDict(), "'", o.checkpoint, "' does not hold a dict; expected the PatchGD reference's "
                "torch.save({'model1_weights': ..., 'model2_weights': ...})");
  const auto outer = root.toGenericDict();
  const auto part = [&](const std::string& key) {
    TESSERA_CHECK(outer.contains(key), "'", o.checkpoint, "' has no '", key, "' entry; is it a PatchGD reference checkpoint?");
    const auto value = outer.at(key);
    TESSERA_CHECK(value.isGenericDict(), "entry '", key, "' of '", o.checkpoint, "' is not a state dict");
    models::StateDict dict;
    for (const auto& item : value.toGenericDict()) {
      if (item.value().isTensor()) dict[item.key().toStringRef()] = item.value().toTensor();
    }
    return dict;
  };
  const auto backbone_ref = part("model1_weights");
  const auto head_ref = part("model2_weights");
  const auto get = [&](const models::StateDict& d, const std::string& key, const char* which) {
    const auto it = d.find(key);
    TESSERA_CHECK(it != d.end(), "'", o.checkpoint, "' ", which, " has no '", key, "'");
    return it->second;
  };

  models::StateDict dict;
  for (const auto& [name, t] : backbone_ref) {
    TESSERA_CHECK(name.rfind("encoder.", 0) == 0, "'", o.checkpoint, "' model1_weights entry '", name,
                  "' is not under encoder.; expected the reference's Backbone (a torchvision ResNet-50)");
    dict["backbone." + name.substr(8)] = t;
  }
  TESSERA_CHECK(backbone_ref.count("encoder.layer4.0.conv3.weight"), "'", o.checkpoint,
                "' model1_weights is not a ResNet-50 (no layer4 bottleneck); the reference's backbone is ResNet-50");
  const auto conv1 = get(backbone_ref, "encoder.conv1.weight", "model1_weights");
  const auto fc = get(backbone_ref, "encoder.fc.weight", "model1_weights");
  const int64_t latent = fc.size(0);

  // Head: layers.<i>.0 Conv2d(3x3), layers.<i>.2 BatchNorm2d, then linear.
  int64_t blocks = 0;
  while (head_ref.count("layers." + std::to_string(blocks) + ".0.weight")) ++blocks;
  const auto first = get(head_ref, "layers.0.0.weight", "model2_weights");
  const int64_t width = first.size(0);
  TESSERA_CHECK(first.size(1) == latent, "'", o.checkpoint, "': the head reads ", first.size(1),
                " channels but the backbone writes ", latent);
  std::string variant;
  if (blocks == 3 && width == 256) variant = "smaller";
  else if (blocks == 5 && width == 256) variant = "larger";
  else if (blocks == 4 && width == 128) variant = "smaller_feat";
  else if (blocks == 4 && width == 256) variant = "original";
  else if (blocks == 4 && width == 512) variant = "larger_feat";
  TESSERA_CHECK(!variant.empty(), "'", o.checkpoint, "': a head of ", blocks, " blocks of width ", width,
                " is none of the reference's variants (original, smaller, larger, smaller_feat, larger_feat)");
  const int64_t reductions = variant == "larger" ? 4 : 3;
  const auto linear = get(head_ref, "linear.weight", "model2_weights");
  const int64_t classes = linear.size(0);

  const auto grid = data::PatchGrid::fit(o.input.height, o.input.width, o.patch, o.patch);
  int64_t rows = grid.rows, cols = grid.cols;
  for (int64_t i = 0; i < reductions; ++i) {
    rows = (rows + 1) / 2;
    cols = (cols + 1) / 2;
  }
  TESSERA_CHECK(linear.size(1) == width * rows * cols, "'", o.checkpoint, "': the head's linear layer reads ",
                linear.size(1), " values but a ", o.input.height, "x", o.input.width, " image in patches of ", o.patch,
                " gives a ", grid.rows, "x", grid.cols, " grid -> ", width * rows * cols,
                "; check --height, --width and --patch");
  // The reference's Z is transposed: transpose every kernel, and reorder the linear layer's inputs from
  // (C, cols', rows') to (C, rows', cols').
  for (const auto& [name, t] : head_ref) {
    std::smatch m;
    static const std::regex layer(R"(^layers\.(\d+)\.(\d+)\.(.+)$)");
    if (std::regex_match(name, m, layer)) {
      const auto value = m[2] == "0" && m[3] == "weight" ? t.transpose(2, 3).contiguous() : t;
      dict["head.blocks." + std::string(m[1]) + "." + std::string(m[2]) + "." + std::string(m[3])] = value;
    } else if (name == "linear.weight") {
      dict["head.fc.weight"] = t.view({classes, width, cols, rows}).transpose(2, 3).reshape({classes, -1});
    } else if (name == "linear.bias") {
      dict["head.fc.bias"] = t;
    } else {
      fail("'", o.checkpoint, "' model2_weights entry '", name, "' is not part of the reference's CNN_Block head");
    }
  }

  Config config = o.config;
  config.train.method = "patchgd";
  config.data.dataset = "csv";  // the user's own images
  config.model.encoder = "resnet50";
  config.model.stages = 4;
  config.model.width = 64;
  config.model.in_channels = conv1.size(1);
  config.model.weights.clear();
  config.model.init_from.clear();
  config.data.channels = conv1.size(1);
  config.data.patch = config.data.stride = o.patch;
  config.patchgd.latent = latent;
  config.patchgd.head = variant;
  apply_input(config, o.input);
  train::validate_model(config);
  const std::vector<Task> tasks = {{o.task, "softmax", classes, false}};
  auto method = train::find_method("patchgd").make(config, tasks);
  ImportReport report;
  report.tensors = load_all(method->module(), dict, o.checkpoint);
  report.spec = train::make_run_spec(config, tasks, normalization_of(config));
  report.run_dir = config.run_dir;
  train::save_run(config.run_dir, config, report.spec, method->module());
  return report;
}

}  // namespace tessera::app
