// Slide data sets for IPS: each sample is a bag of tissue patches read from the slide file on demand
// (SlideBag), or a bag of pre-extracted feature rows read from an HDF5 file (FeatureBag). Nothing
// N-sized stays in memory between steps: coordinates come from the cache file when a slide is used.
#pragma once
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tessera/core/thread_pool.h"

#include "tessera/data/dataset.h"
#include "tessera/slides/manifest.h"
#include "tessera/slides/preprocess.h"
#include "tessera/slides/reader.h"

namespace tessera {
struct Config;
}

namespace tessera::slides {

// Patches of a slide at the grid's coordinates: (k, 3, patch, patch) float in [0, 1] (then
// normalised), read by `workers` threads at once.
class SlideBag final : public data::PatchBag {
 public:
  SlideBag(SlideReaderPtr reader, PatchCoords grid, int64_t workers, std::vector<float> mean = {},
           std::vector<float> std = {});
  int64_t size() const override { return grid_.count(); }
  torch::Tensor gather(const torch::Tensor& idx) const override;
  bool on_disk() const override { return true; }
  const PatchCoords& grid() const { return grid_; }
  const SlideReader& reader() const { return *reader_; }

 private:
  SlideReaderPtr reader_;
  PatchCoords grid_;
  int64_t workers_;
  torch::Tensor mean_, std_;
  mutable std::mutex pool_mutex_;
  mutable std::unique_ptr<ThreadPool> pool_;  // reader threads, started at the first gather
};

struct SlideDataOptions {
  std::string manifest, split;      // split: train | test | "" (all)
  bool features = false;            // feature bags (features_dir/<id>.h5) instead of slide patches
  std::string features_dir;
  std::string cache_dir;            // coordinates; empty: <manifest folder>/tessera-cache
  std::string backend = "auto";
  PatchGridOptions grid;
  bool skip_errors = false;
  int64_t read_workers = 2;
  std::vector<float> mean, std;
  std::vector<Task> tasks;  // fixed tasks (a run's spec); empty: from the manifest
  std::string classes;      // data.classes: class names (or their number) of the one label column
};
SlideDataOptions slide_data_options(const Config& config, const std::string& split);
// One task per label column over the whole manifest: a binary column (labels 0 and 1) is one sigmoid
// output trained with binary cross-entropy, as the IPS reference's CAMELYON16 setting; more classes
// are a softmax over max label + 1. Labels may be class names (sorted, or in the order `classes` lists
// them; data/classes.h). A column with one class only is an error naming it.
std::vector<Task> manifest_tasks(const std::vector<ManifestEntry>& entries, const std::string& manifest,
                                 const std::string& classes = "");

class SlideDataset final : public data::Dataset {
 public:
  // Checks every slide up front (opens it, finds or computes its coordinates). A bad slide is an
  // error naming it, or with skip_errors a recorded failure the data set leaves out.
  explicit SlideDataset(SlideDataOptions options);
  int64_t size() const override { return static_cast<int64_t>(entries_.size()); }
  data::Sample get(int64_t index) const override;
  std::vector<Task> tasks() const override { return tasks_; }
  torch::Tensor picture(int64_t index) const override;  // a thumbnail
  data::Normalization normalization() const override { return {options_.mean, options_.std}; }
  std::map<std::string, std::vector<int64_t>> class_counts() const override;
  std::string source() const override;
  // The class index of a slide's label for `task`, or -1 when it has none.
  int64_t label(int64_t index, const std::string& task) const;
  const ManifestEntry& entry(int64_t index) const { return entries_.at(index); }
  const std::vector<SlideOutcome>& failures() const { return failures_; }
  // The bag of one slide (what get() puts in its sample).
  data::PatchBagPtr bag(int64_t index) const;

 private:
  SlideDataOptions options_;
  std::vector<ManifestEntry> entries_;
  std::vector<std::map<std::string, int64_t>> labels_;  // per entry: task -> class index
  std::vector<SlideOutcome> failures_;
  std::vector<Task> tasks_;
};

// The registry's entries (train/registry.h).
data::DatasetInfo slides_dataset();
data::DatasetInfo feature_bags_dataset();

}  // namespace tessera::slides
