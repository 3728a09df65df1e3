#include "tessera/data/csv_images.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tessera/core/csv.h"
#include "tessera/core/error.h"
#include "tessera/core/config.h"
#include "tessera/data/image_io.h"

namespace tessera::data {
namespace fs = std::filesystem;

std::vector<float> parse_floats(const std::string& text, const std::string& key) {
  std::vector<float> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t pos = 0;
      out.push_back(std::stof(item, &pos));
      TESSERA_CHECK(item.find_first_not_of(" \t", pos) == std::string::npos, "");
    } catch (const std::exception&) {
      fail(key, " must be comma-separated numbers, got '", text, "'");
    }
  }
  return out;
}

CsvImages::CsvImages(CsvImagesOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  TESSERA_CHECK(fs::exists(o.csv), "image list '", o.csv, "' cannot be opened; set data.train_csv / data.test_csv");
  const auto table = read_csv(o.csv, "image list");
  const fs::path root = fs::path(o.csv).parent_path();
  int64_t max_label = -1;
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto& cells = table.rows[r];
    const int64_t row = table.lines[r];
    TESSERA_CHECK(cells.size() >= 2, o.csv, ":", row, ": expected 'path,label', got ", cells.size(), " column(s)");
    const std::string& label_text = cells[1];
    const int64_t label = parse_integer(label_text).value_or(-1);
    TESSERA_CHECK(label >= 0, o.csv, ":", row, ": label '", label_text, "' is not a class index >= 0");
    paths_.push_back((root / cells[0]).string());
    labels_.push_back(label);
    max_label = std::max(max_label, label);
  }
  TESSERA_CHECK(!paths_.empty(), "image list '", o.csv, "' has no rows; it needs a header and 'path,label' rows");
  classes_ = o.classes > 0 ? o.classes : max_label + 1;
  TESSERA_CHECK(classes_ >= 2, "image list '", o.csv, "' holds only class ", max_label,
                "; a classifier needs at least two classes (set data.classes if the others exist elsewhere)");
  TESSERA_CHECK(max_label < classes_, o.csv, " has label ", max_label, " but data.classes is ", classes_);
  TESSERA_CHECK(o.mean.size() == o.std.size() && (o.mean.empty() || static_cast<int64_t>(o.mean.size()) == o.channels),
                "data.mean and data.std need one value per channel (", o.channels, ")");
}

torch::Tensor CsvImages::picture(int64_t index) const {
  const auto& path = paths_.at(index);
  return conform_image(read_image(path), options_.channels, options_.height, options_.width, path);
}

Sample CsvImages::get(int64_t index) const {
  Sample s;
  s.image = normalization().apply(picture(index), paths_.at(index));
  s.labels["label"] = torch::tensor(labels_.at(index));
  return s;
}


DatasetInfo csv_dataset() {
  DatasetInfo info;
  info.name = "csv";
  info.summary = "your own images: CSV files of path,label rows";
  info.make = [](const Config& c, Splits splits, const std::vector<Task>* tasks) {
    const auto& d = c.data;
    const auto make = [&](const std::string& csv, int64_t train_classes) -> DatasetPtr {
      if (csv.empty()) return nullptr;
      CsvImagesOptions o;
      o.csv = csv;
      o.height = d.height;
      o.width = d.width;
      o.channels = d.channels;
      o.classes = tasks ? tasks->front().outputs : d.classes > 0 ? d.classes : train_classes;
      o.ordinal = d.ordinal;
      o.mean = parse_floats(d.mean, "data.mean");
      o.std = parse_floats(d.std, "data.std");
      return std::make_shared<CsvImages>(o);
    };
    TESSERA_CHECK(!splits.train || !d.train_csv.empty(), "data.dataset csv needs data.train_csv (a CSV of path,label rows)");
    auto train = splits.train ? make(d.train_csv, 0) : nullptr;
    // The test set takes the training set's class count (a test file may lack some classes).
    auto test = splits.test ? make(d.test_csv, train ? train->tasks()[0].outputs : 0) : nullptr;
    return std::pair<DatasetPtr, DatasetPtr>{train, test};
  };
  return info;
}

}  // namespace tessera::data
