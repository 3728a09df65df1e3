// Slide manifests: a CSV with a header naming the columns. `slide` (path, relative to the CSV) is
// required; `label` (one task) or `label_<task>` columns (several) hold class indices or class names; `split`
// (train / val / test) and `id` (default: the file name without extension) are optional.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tessera::slides {

struct ManifestEntry {
  std::string id, path, split;
  std::map<std::string, std::string> labels;  // task -> label as written (a class index or a class name)
  std::map<std::string, int64_t> label_lines;  // task -> the CSV line holding it, for errors
};

// Errors name the file and row. Labels are optional (inference manifests).
std::vector<ManifestEntry> read_manifest(const std::string& csv);
// Entries of one split; "" keeps every entry, "train" also keeps entries without a split.
std::vector<ManifestEntry> select_split(const std::vector<ManifestEntry>& entries, const std::string& split);

}  // namespace tessera::slides
