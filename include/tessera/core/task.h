// A prediction task of a data set: its name, output activation and number of outputs.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include <torch/types.h>

namespace tessera {

struct Task {
  std::string name;
  std::string activation;  // softmax (class index labels) | sigmoid (multi-hot float labels)
  int64_t outputs = 10;
  bool ordinal = false;  // softmax classes are ordered grades (e.g. ISUP): metrics add quadratic weighted kappa
};

// Labels or outputs per task name: labels are (B) int64 for softmax tasks, (B, K) float for sigmoid.
using TaskTensors = std::map<std::string, torch::Tensor>;

}  // namespace tessera
