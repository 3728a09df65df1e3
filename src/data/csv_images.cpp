#include "tessera/data/csv_images.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tessera/core/csv.h"
#include "tessera/core/thread_pool.h"
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

namespace {

// The rows of an image list: (path as written, label as written, line), checked for their shape.
struct ListRow {
  std::string path, label;
  int64_t line = 0;
};
std::vector<ListRow> read_image_list(const std::string& csv, const std::string& key) {
  TESSERA_CHECK(fs::exists(csv), "image list '", csv, "' cannot be opened; set ", key, " to a CSV of path,label rows");
  const auto table = read_csv(csv, "image list");
  std::vector<ListRow> rows;
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto& cells = table.rows[r];
    TESSERA_CHECK(cells.size() >= 2, csv, ":", table.lines[r], ": expected 'path,label', got ", cells.size(), " column(s)");
    rows.push_back({cells[0], cells[1], table.lines[r]});
  }
  TESSERA_CHECK(!rows.empty(), "image list '", csv, "' has no rows; it needs a header and 'path,label' rows");
  return rows;
}

}  // namespace

CsvImages::CsvImages(CsvImagesOptions options) : options_(std::move(options)) {
  const auto& o = options_;
  const fs::path root = fs::path(o.csv).parent_path();
  for (const auto& row : read_image_list(o.csv, o.key)) {
    labels_.push_back(class_index(o.classes, row.label, o.csv + ":" + std::to_string(row.line)));
    paths_.push_back((root / row.path).string());
    lines_.push_back(row.line);
  }
  TESSERA_ASSERT(o.classes.count >= 2, "the class list is resolved before the image lists are read");
  TESSERA_CHECK(o.mean.size() == o.std.size() && (o.mean.empty() || static_cast<int64_t>(o.mean.size()) == o.channels),
                "data.mean and data.std need one value per channel (", o.channels, ")");
}

std::vector<Task> CsvImages::tasks() const {
  return {{"label", "softmax", options_.classes.count, options_.ordinal, options_.classes.names}};
}

std::map<std::string, std::vector<int64_t>> CsvImages::class_counts() const {
  std::vector<int64_t> counts(static_cast<size_t>(options_.classes.count), 0);
  for (const int64_t label : labels_) ++counts.at(static_cast<size_t>(label));
  return {{"label", counts}};
}

void CsvImages::check_inputs(int64_t threads) const {
  ThreadPool pool(std::max<int64_t>(1, threads)
#ifdef TESSERA_WITH_VIPS
                      , release_vips_thread
#endif
  );
  const int64_t n = size(), parts = std::min<int64_t>(n, 64);
  std::vector<std::string> errors(static_cast<size_t>(parts));
  pool.parallel_for(parts, [&](int64_t part) {
    for (int64_t i = n * part / parts; i < n * (part + 1) / parts && errors[part].empty(); ++i) {
      try {
        check_image_header(read_image_header(paths_[i]), options_.channels, options_.height, options_.width,
                           "image '" + paths_[i] + "'");
      } catch (const Error& e) {
        errors[part] = fmt::format("{}:{}: {}", options_.csv, lines_[i], e.what());
      }
    }
  });
  for (const auto& e : errors) TESSERA_CHECK(e.empty(), e);
}

std::string CsvImages::source() const { return options_.key + " '" + options_.csv + "'"; }

torch::Tensor CsvImages::picture(int64_t index) const {
  const auto& path = paths_.at(index);
  return conform_image(read_image(path), options_.channels, options_.height, options_.width, "image '" + path + "'");
}

Sample CsvImages::get(int64_t index) const {
  Sample s;
  s.image = normalization().apply(picture(index), "image '" + paths_.at(index) + "'");
  s.labels["label"] = torch::tensor(labels_.at(index));
  return s;
}

namespace {

// Classes over both lists: names sorted over every split unless data.classes lists them; indices up to
// the largest one unless data.classes gives the number. A run's spec fixes them instead.
ClassList csv_classes(const Config& c, const std::vector<Task>* tasks) {
  if (tasks) return task_classes(tasks->front().classes, tasks->front().outputs);
  std::vector<std::string> labels;
  for (const auto* key : {"data.train_csv", "data.test_csv"}) {
    const auto& csv = std::string(key) == "data.train_csv" ? c.data.train_csv : c.data.test_csv;
    if (csv.empty()) continue;
    for (const auto& row : read_image_list(csv, key)) labels.push_back(row.label);
  }
  auto classes = resolve_classes(c.data.classes, labels, "data.train_csv '" + c.data.train_csv + "'");
  if (classes.count == 0) {  // indices: up to the largest over both lists
    const auto open = classes;
    for (const auto& l : labels) classes.count = std::max(classes.count, class_index(open, l, "data.train_csv '" + c.data.train_csv + "'") + 1);
    classes.source = "the largest label of the lists";
  }
  TESSERA_CHECK(classes.count >= 2, "the image lists (data.train_csv '", c.data.train_csv, "'",
                c.data.test_csv.empty() ? "" : ", data.test_csv '" + c.data.test_csv + "'", ") hold only class ",
                labels.empty() ? "?" : labels.front(),
                "; a classifier needs at least two classes (set data.classes if the others exist elsewhere)");
  return classes;
}

}  // namespace

DatasetInfo csv_dataset() {
  DatasetInfo info;
  info.name = "csv";
  info.summary = "your own images: CSV files of path,label rows";
  info.make = [](const Config& c, Splits splits, const std::vector<Task>* tasks) {
    const auto& d = c.data;
    TESSERA_CHECK(!splits.train || !d.train_csv.empty(), "data.dataset csv needs data.train_csv (a CSV of path,label rows)");
    const auto classes = csv_classes(c, tasks);
    const auto make = [&](const std::string& csv, const char* key) -> DatasetPtr {
      if (csv.empty()) return nullptr;
      CsvImagesOptions o;
      o.csv = csv;
      o.key = key;
      o.height = d.height;
      o.width = d.width;
      o.channels = d.channels;
      o.classes = classes;
      o.ordinal = d.ordinal;
      o.mean = parse_floats(d.mean, "data.mean");
      o.std = parse_floats(d.std, "data.std");
      return std::make_shared<CsvImages>(o);
    };
    auto train = splits.train ? make(d.train_csv, "data.train_csv") : nullptr;
    auto test = splits.test ? make(d.test_csv, "data.test_csv") : nullptr;
    return std::pair<DatasetPtr, DatasetPtr>{train, test};
  };
  return info;
}

}  // namespace tessera::data
