// The run spec: what a trained run is, recorded so that every later command (eval, predict, import,
// extract-features, model.init_from) rebuilds the network and its input pipeline without a data set.
// Saved as the `spec:` section of <run>/config.yaml and inside checkpoint.pt.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <string>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/core/task.h"
#include "tessera/data/dataset.h"

namespace tessera::train {

// What the model reads and how training prepared it.
struct InputSpec {
  std::string kind = "image";  // image (whole images) | slide (patches read from slides) | features (feature bags)
  int64_t channels = 1;
  int64_t height = 0, width = 0;  // images: the size every input must have
  int64_t patch = 0, stride = 0;
  int64_t level = 0;              // slides: pyramid level ...
  double mpp = 0;                 // ... or resolution in um/px when > 0
  int64_t features = 0;           // feature bags: width of a row
  data::Normalization normalization;  // applied to images in [0, 1]
};

struct RunSpec {
  static constexpr int64_t kFormatVersion = 2;
  int64_t format_version = kFormatVersion;
  std::string tessera_version, commit, libtorch_version;  // of the build that wrote it
  std::string method;   // a registered method (train/registry.h)
  std::string dataset;  // the data set it was trained on (informational: nothing is read from it)
  std::vector<Task> tasks;  // in query-token / output order
  InputSpec input;
  // Model and method settings (the model.*, ips.*, patchgd.*, gd.* keys and train.method) as strings.
  std::vector<std::pair<std::string, std::string>> options;

  // A config holding this spec's method, model, geometry and normalisation over the defaults.
  Config config() const;
};

// The spec of a run about to train with `config` on a data set with these tasks and normalisation.
RunSpec make_run_spec(const Config& config, const std::vector<Task>& tasks, const data::Normalization& normalization);

nlohmann::json to_json(const RunSpec& spec);
// origin names the file in errors (a missing field, a format from a newer tessera).
RunSpec spec_from_json(const nlohmann::json& json, const std::string& origin);
// YAML for config.yaml: the config's sections, then `spec:`.
std::string config_with_spec_yaml(Config config, const RunSpec& spec);

}  // namespace tessera::train
