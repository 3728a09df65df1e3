// Importing models trained by the reference implementations into tessera runs that predict what the
// reference modules predict.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "tessera/core/config.h"
#include "tessera/core/task.h"
#include "tessera/train/run_spec.h"

namespace tessera::app {

// The reference files record neither the input normalisation nor the image size: these say them.
struct InputFlags {
  std::string mean, std;        // per channel, e.g. "0.485,0.456,0.406" (empty: none)
  int64_t height = 0, width = 0;  // image size (0: the config's)
};

struct ImportIpsOptions {
  std::string state_dict;        // torch.save(ips_net.state_dict()), possibly saved on a GPU
  std::string key;               // entry holding the state dict inside the file, if nested
  std::string reference_config;  // the reference's YAML (config/*.yml); empty: `config` describes the model
  Config config;                 // base settings (--config and overrides): run.dir, and the model without a reference config
  InputFlags input;
};

struct ImportPatchGdOptions {
  std::string checkpoint;  // the reference's torch.save dict: model1_weights (backbone), model2_weights (head)
  Config config;           // base settings: run.dir
  InputFlags input;        // height and width required
  int64_t patch = 0;       // patch side (required: a state dict holds no strides)
  std::string task = "label";
};

struct ImportReport {
  std::string run_dir;
  int64_t tensors = 0;
  train::RunSpec spec;
};

// The reference IPS YAML as a tessera config over `base` and its tasks in query-token order (by id).
// Errors name the file and the key.
std::pair<Config, std::vector<Task>> read_reference_ips_config(const std::string& path, Config base);

// Writes <run.dir>/checkpoint.pt and config.yaml; nothing is written unless every tensor loads.
ImportReport import_ips(const ImportIpsOptions& options);
// The reference stores its latent grid transposed (Z[:, :, col, row]); the import transposes the
// head's convolution kernels and permutes its Linear's inputs so tessera's Z[:, :, row, col] gives
// the same outputs.
ImportReport import_patchgd(const ImportPatchGdOptions& options);

}  // namespace tessera::app
