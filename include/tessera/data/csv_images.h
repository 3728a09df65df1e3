// A data set of ordinary image files listed in a CSV (header line, then "path,label" rows with paths
// relative to the CSV; labels are class indices or class names, see data/classes.h), e.g. PANDA slides after `tessera prepare-images`. Every image must already
// have the configured size; normalisation is per channel.
#pragma once
#include <string>
#include <vector>

#include "tessera/data/classes.h"
#include "tessera/data/dataset.h"

namespace tessera::data {

struct CsvImagesOptions {
  std::string csv;
  int64_t height = 512, width = 512;
  int64_t channels = 3;
  std::string key = "data.train_csv";  // the setting naming the list, for errors
  ClassList classes;                  // resolved over every split (labels as indices or names)
  bool ordinal = false;
  std::vector<float> mean, std;  // empty: no normalisation
};

class CsvImages final : public Dataset {
 public:
  explicit CsvImages(CsvImagesOptions options);
  int64_t size() const override { return static_cast<int64_t>(paths_.size()); }
  Sample get(int64_t index) const override;
  std::vector<Task> tasks() const override;
  std::map<std::string, std::vector<int64_t>> class_counts() const override;
  void check_inputs(int64_t threads) const override;
  std::string source() const override;
  torch::Tensor picture(int64_t index) const override;
  Normalization normalization() const override { return {options_.mean, options_.std}; }
  const std::string& path(int64_t index) const { return paths_.at(index); }
  int64_t label(int64_t index) const { return labels_.at(index); }

 private:
  CsvImagesOptions options_;
  std::vector<std::string> paths_;
  std::vector<int64_t> labels_;
  std::vector<int64_t> lines_;  // each image's line in the CSV, for errors
};

// "0.977, 0.955,0.9667" -> {0.977, 0.955, 0.9667}; empty -> {}. key names the setting in errors.
std::vector<float> parse_floats(const std::string& text, const std::string& key);

// The registry's entry (train/registry.h).
DatasetInfo csv_dataset();

}  // namespace tessera::data
