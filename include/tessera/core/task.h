// A prediction task of a data set: its name, output activation and number of outputs.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <torch/types.h>

namespace tessera {

struct Task {
  std::string name;
  std::string activation;  // softmax (class index labels) | sigmoid (multi-hot float labels)
  int64_t outputs = 10;
  bool ordinal = false;  // softmax classes are ordered grades (e.g. ISUP): metrics add quadratic weighted kappa
  // Class names in index order, when the labels were given as names (e.g. normal, tumor; a binary sigmoid
  // task: negative, positive); empty when they were class indices.
  std::vector<std::string> classes = {};
  // The name of class k, or k as text without names.
  std::string class_name(int64_t k) const {
    return k >= 0 && k < static_cast<int64_t>(classes.size()) ? classes[static_cast<size_t>(k)] : std::to_string(k);
  }
};

// Labels or outputs per task name: labels are (B) int64 for softmax tasks, (B, K) float for sigmoid.
using TaskTensors = std::map<std::string, torch::Tensor>;

}  // namespace tessera
