#include "tessera/train/run_spec.h"

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "tessera/core/error.h"
#include "tessera/models/encoder_registry.h"
#include "tessera/core/version.h"
#include "tessera/train/registry.h"

namespace tessera::train {
namespace {

// Config keys that describe the network and the method (not the data, the run or the machine): the
// model section, the method's own sections, and how slide patches are found and read.
// model.weights and model.init_from only initialise training: a finished run never reads them again.
bool is_model_key(const std::string& key, const methods::MethodInfo& method, const std::string& input) {
  if (key.rfind("model.", 0) == 0) return key != "model.weights" && key != "model.init_from";
  for (const auto& section : method.config_sections) {
    if (key.rfind(section + ".", 0) == 0) return true;
  }
  if (input == "slide" && (key == "slide.backend" || key == "slide.tissue" || key == "slide.min_tissue" ||
                           key == "slide.read_workers")) {
    return true;
  }
  return key == "train.method" || key == "train.seed";
}

std::string join_floats(const std::vector<float>& v) {
  std::string out;
  for (float x : v) out += (out.empty() ? "" : ",") + nlohmann::json(x).dump();
  return out;
}

void emit(YAML::Emitter& out, const nlohmann::json& j) {
  if (j.is_object()) {
    out << YAML::BeginMap;
    for (const auto& [k, v] : j.items()) {
      out << YAML::Key << k << YAML::Value;
      emit(out, v);
    }
    out << YAML::EndMap;
  } else if (j.is_array()) {
    out << YAML::BeginSeq;
    for (const auto& v : j) emit(out, v);
    out << YAML::EndSeq;
  } else if (j.is_string()) {
    out << j.get<std::string>();
  } else {
    out << j.dump();
  }
}

template <typename T>
T field(const nlohmann::json& j, const char* key, const std::string& origin) {
  TESSERA_CHECK(j.contains(key), origin, ": the run spec has no '", key, "' field; was it edited by hand?");
  try {
    return j.at(key).get<T>();
  } catch (const nlohmann::json::exception&) {
    fail(origin, ": the run spec's '", key, "' field has the wrong type (", j.at(key).dump(), ")");
  }
}

}  // namespace

Config RunSpec::config() const {
  Config c;
  for (const auto& [key, value] : options) c.set(key, value);
  c.data.dataset = dataset;
  if (input.height > 0) c.data.height = input.height;
  if (input.width > 0) c.data.width = input.width;
  c.data.patch = input.patch;
  c.data.stride = input.stride;
  if (input.channels > 0) c.data.channels = input.channels;
  c.slide.level = input.level;
  c.slide.mpp = input.mpp;
  c.data.mean = join_floats(input.normalization.mean);
  c.data.std = join_floats(input.normalization.std);
  return c;
}

RunSpec make_run_spec(const Config& config, const std::vector<Task>& tasks, const data::Normalization& normalization) {
  RunSpec s;
  s.tessera_version = version();
  s.commit = commit();
  s.libtorch_version = libtorch_version();
  s.method = config.train.method;
  s.dataset = config.data.dataset;
  s.tasks = tasks;
  s.input.kind = find_dataset(config.data.dataset).input;
  s.input.channels = s.input.kind == "features" ? 0 : config.model.in_channels;
  if (s.input.kind == "image") {
    s.input.height = config.data.height;
    s.input.width = config.data.width;
  }
  s.input.patch = config.data.patch;
  s.input.stride = config.data.stride;
  if (s.input.kind == "slide") {
    s.input.level = config.slide.level;
    s.input.mpp = config.slide.mpp;
  }
  if (s.input.kind == "features") s.input.features = config.model.in_features;
  s.input.normalization = normalization;
  Config copy = config;  // fields() binds to the object it is called on
  if (copy.model.encoder != "projector") {
    // A model folder is recorded by what it holds (architecture and arguments), so the run reopens
    // without it; a folder's weights were loaded before the first step.
    const auto encoder = models::resolve_encoder(copy.model.encoder, copy.model.encoder_args);
    if (!encoder.weights.empty()) {
      copy.model.encoder = encoder.architecture;
      copy.model.encoder_args = encoder.args.dump();
    }
  }
  const auto& method = find_method(config.train.method);
  for (auto& f : copy.fields()) {
    if (is_model_key(f.key, method, s.input.kind)) s.options.emplace_back(f.key, f.get());
  }
  return s;
}

nlohmann::json to_json(const RunSpec& s) {
  nlohmann::json tasks = nlohmann::json::array();
  for (const auto& t : s.tasks) {
    nlohmann::json task{{"name", t.name}, {"activation", t.activation}, {"classes", t.outputs}, {"ordinal", t.ordinal}};
    if (!t.classes.empty()) task["class_names"] = t.classes;  // labels given as names, in index order
    tasks.push_back(task);
  }
  nlohmann::json options = nlohmann::json::object();
  for (const auto& [k, v] : s.options) options[k] = v;
  return {{"format_version", s.format_version},
          {"tessera_version", s.tessera_version},
          {"commit", s.commit},
          {"libtorch_version", s.libtorch_version},
          {"method", s.method},
          {"dataset", s.dataset},
          {"tasks", tasks},
          {"input",
           {{"kind", s.input.kind},
            {"channels", s.input.channels},
            {"height", s.input.height},
            {"width", s.input.width},
            {"patch", s.input.patch},
            {"stride", s.input.stride},
            {"level", s.input.level},
            {"mpp", s.input.mpp},
            {"features", s.input.features},
            {"mean", s.input.normalization.mean},
            {"std", s.input.normalization.std}}},
          {"options", options}};
}

RunSpec spec_from_json(const nlohmann::json& j, const std::string& origin) {
  TESSERA_CHECK(j.is_object(), origin, ": the run spec is not a mapping");
  RunSpec s;
  s.format_version = field<int64_t>(j, "format_version", origin);
  TESSERA_CHECK(s.format_version <= RunSpec::kFormatVersion, origin, ": the run spec has format version ",
                s.format_version, " but this tessera (", version_line(), ") reads up to ", RunSpec::kFormatVersion,
                "; use the tessera that wrote it (", j.value("tessera_version", "?"), ", commit ", j.value("commit", "?"),
                ") or a newer one");
  s.tessera_version = j.value("tessera_version", "");
  s.commit = j.value("commit", "");
  s.libtorch_version = j.value("libtorch_version", "");
  s.method = field<std::string>(j, "method", origin);
  s.dataset = field<std::string>(j, "dataset", origin);
  for (const auto& t : field<nlohmann::json>(j, "tasks", origin)) {
    Task task{field<std::string>(t, "name", origin), field<std::string>(t, "activation", origin),
              field<int64_t>(t, "classes", origin), t.value("ordinal", false)};
    TESSERA_CHECK(task.activation == "softmax" || task.activation == "sigmoid", origin, ": task '", task.name,
                  "' has activation '", task.activation, "'; expected softmax or sigmoid");
    TESSERA_CHECK(task.outputs > 0, origin, ": task '", task.name, "' has ", task.outputs, " classes");
    if (t.contains("class_names")) {
      task.classes = field<std::vector<std::string>>(t, "class_names", origin);
      const size_t expected = task.activation == "sigmoid" ? 2 : static_cast<size_t>(task.outputs);
      TESSERA_CHECK(task.classes.size() == expected, origin, ": task '", task.name, "' names ", task.classes.size(),
                    " classes but has ", expected);
    }
    s.tasks.push_back(task);
  }
  TESSERA_CHECK(!s.tasks.empty(), origin, ": the run spec lists no tasks");
  const auto in = field<nlohmann::json>(j, "input", origin);
  s.input.kind = field<std::string>(in, "kind", origin);
  s.input.channels = field<int64_t>(in, "channels", origin);
  s.input.height = field<int64_t>(in, "height", origin);
  s.input.width = field<int64_t>(in, "width", origin);
  s.input.patch = field<int64_t>(in, "patch", origin);
  s.input.stride = field<int64_t>(in, "stride", origin);
  s.input.level = in.value("level", int64_t{0});
  s.input.mpp = in.value("mpp", 0.0);
  s.input.features = in.value("features", int64_t{0});
  s.input.normalization.mean = field<std::vector<float>>(in, "mean", origin);
  s.input.normalization.std = field<std::vector<float>>(in, "std", origin);
  TESSERA_CHECK(s.input.normalization.mean.size() == s.input.normalization.std.size(), origin,
                ": the run spec's input.mean and input.std differ in length");
  const auto options = field<nlohmann::json>(j, "options", origin);
  for (const auto& [k, v] : options.items()) {
    TESSERA_CHECK(v.is_string(), origin, ": run spec option '", k, "' must be a string");
    s.options.emplace_back(k, v.get<std::string>());
  }
  try {
    validate_model(s.config());
  } catch (const Error& e) {
    fail(origin, ": the run spec does not describe a valid run: ", e.what());
  }
  return s;
}

std::string config_with_spec_yaml(Config config, const RunSpec& spec) {
  YAML::Emitter out;
  emit(out, nlohmann::json{{"spec", to_json(spec)}});
  return config.to_yaml() + out.c_str() + "\n";
}

}  // namespace tessera::train
