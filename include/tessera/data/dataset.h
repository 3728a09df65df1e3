// Data sets yield one image with its per-task labels by index; batches stack them.
#pragma once
#include <torch/types.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/core/task.h"
#include "tessera/data/patches.h"

namespace tessera {
struct Config;
}

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

// Per-channel (x - mean) / std applied to images in [0, 1] (empty: none), exactly as get() applies it.
struct Normalization {
  std::vector<float> mean, std;
  bool empty() const { return mean.empty(); }
  // image (C, H, W) or (B, C, H, W) in [0, 1] -> normalised; errors name `what` on a channel mismatch.
  torch::Tensor apply(const torch::Tensor& image, const std::string& what) const;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Sample get(int64_t index) const = 0;
  virtual std::vector<Task> tasks() const = 0;
  // The image as a picture in [0, 1] (before normalisation), for export and figures.
  virtual torch::Tensor picture(int64_t index) const { return get(index).image; }
  // What get() applies to picture(): saved in the run spec so prediction repeats it.
  virtual Normalization normalization() const { return {}; }
  // Per task, how many samples hold each class (index order; a binary sigmoid task: negative, positive),
  // from the labels alone; empty when the data set cannot say without generating its samples.
  virtual std::map<std::string, std::vector<int64_t>> class_counts() const { return {}; }
  // Checks, before training, every file the samples will read (it exists and its header opens) with
  // `threads` threads; an error names the file and the row listing it. Generated sets have none.
  virtual void check_inputs(int64_t threads) const { (void)threads; }
  // Where the samples are listed, for errors (e.g. "data.test_csv 'test.csv'"); empty for generated sets.
  virtual std::string source() const { return {}; }
};
using DatasetPtr = std::shared_ptr<const Dataset>;

// Which splits a data set factory builds (evaluation needs only the test set).
struct Splits {
  bool train = true, test = true;
};

// A data set as the registry lists it (train/registry.h): its input kind, capabilities and factory.
struct DatasetInfo {
  std::string name;
  std::string summary;
  std::string input = "image";  // image | slide | features: what each sample gives the model
  bool multitask = false;       // several tasks (methods that train one softmax task cannot use it)
  // Train and test sets of `config` (either null when not asked for or not configured). tasks, when
  // given (a run's spec), fixes the class counts instead of reading them from the data.
  std::function<std::pair<DatasetPtr, DatasetPtr>(const Config& config, Splits splits, const std::vector<Task>* tasks)>
      make;
  std::function<void(const Config&)> validate;  // data-set-specific checks; may be empty
  // Tasks and normalisation from the config alone, for data sets that define them (generated sets);
  // empty otherwise. Used to describe runs written before run specs existed.
  std::function<std::pair<std::vector<Task>, Normalization>(const Config&)> describe;
};

// Stacks samples of equal image size; errors name the first mismatching sample.
Batch collate(std::vector<Sample> samples, std::vector<int64_t> indices);

}  // namespace tessera::data
