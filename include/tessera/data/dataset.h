// Data sets yield one image with its per-task labels by index; batches stack them.
#pragma once
#include <torch/types.h>

#include <memory>
#include <vector>

#include "tessera/core/task.h"
#include "tessera/data/patches.h"

namespace tessera::data {

// An image in memory, or (whole slides, feature bags) a bag of patches read on demand.
struct Sample {
  torch::Tensor image;  // (C, H, W) float; undefined for bag samples
  PatchBagPtr bag;      // slides and feature bags: patches streamed from disk
  TaskTensors labels;   // per task: () int64 class or (K) float multi-hot
};

struct Batch {
  torch::Tensor images;           // (B, C, H, W); undefined for bag batches
  std::vector<PatchBagPtr> bags;  // one per sample for bag batches (their patch counts may differ)
  TaskTensors labels;             // per task: (B) int64 or (B, K) float
  std::vector<int64_t> indices;
  int64_t size() const { return images.defined() ? images.size(0) : static_cast<int64_t>(bags.size()); }
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Sample get(int64_t index) const = 0;
  virtual std::vector<Task> tasks() const = 0;
  // The image as a picture in [0, 1] (before normalisation), for export and figures.
  virtual torch::Tensor picture(int64_t index) const { return get(index).image; }
};
using DatasetPtr = std::shared_ptr<const Dataset>;

// Stacks samples of equal image size; errors name the first mismatching sample.
Batch collate(std::vector<Sample> samples, std::vector<int64_t> indices);

}  // namespace tessera::data
