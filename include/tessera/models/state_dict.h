// State dicts saved by Python's torch.save: reading them, and loading them into tessera modules
// (torchvision encoders, and the reference IPSNet through a name mapping).
#pragma once
#include <torch/nn/module.h>

#include <map>
#include <string>
#include <vector>

#include "tessera/core/pickle.h"

namespace tessera::models {

using StateDict = std::map<std::string, torch::Tensor>;

// Reads a torch.save'd dict of tensors (a state dict), or a dict holding one under `key`
// (e.g. "state_dict" or "model"). Errors name the file.
StateDict read_state_dict(const std::string& path, const std::string& key = "");
using tessera::read_pickle;

struct LoadReport {
  std::vector<std::string> loaded, missing, unexpected;
};

// Copies matching entries into the module's parameters and buffers. strict: missing or unexpected keys
// are errors. A 3-channel stem loaded into a 1-channel one is summed over input channels.
LoadReport load_state_dict(torch::nn::Module& module, const StateDict& dict, bool strict);

// Renames a reference-IPSNet state dict (encoder.0 / encoder.1 / encoder.4.. / transf.* / output_layers.*)
// to tessera's IpsNet names; features: the is_image False variant, whose encoder is the projector.
StateDict map_reference_ips(const StateDict& reference, bool features = false);

// Adds a prefix to every key ("" -> "encoder.") so a torchvision dict loads into a submodule.
StateDict with_prefix(const StateDict& dict, const std::string& prefix);

}  // namespace tessera::models
