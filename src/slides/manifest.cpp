#include "tessera/slides/manifest.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "tessera/core/error.h"

namespace tessera::slides {
namespace fs = std::filesystem;

namespace {
std::vector<std::string> split_csv_line(std::string line) {
  if (!line.empty() && line.back() == '\r') line.pop_back();
  std::vector<std::string> out;
  std::stringstream in(line);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(item);
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}
}  // namespace

std::vector<ManifestEntry> read_manifest(const std::string& csv) {
  std::ifstream in(csv);
  TESSERA_CHECK(in, "slide manifest '", csv, "' cannot be opened; set data.manifest to a CSV with a 'slide' column");
  std::string line;
  TESSERA_CHECK(std::getline(in, line), "slide manifest '", csv, "' is empty; it needs a header line");
  const auto header = split_csv_line(line);
  int slide_col = -1, split_col = -1, id_col = -1;
  std::map<int, std::string> label_cols;
  for (int c = 0; c < static_cast<int>(header.size()); ++c) {
    const auto& h = header[c];
    if (h == "slide") slide_col = c;
    else if (h == "split") split_col = c;
    else if (h == "id") id_col = c;
    else if (h == "label") label_cols[c] = "label";
    else if (h.rfind("label_", 0) == 0) label_cols[c] = h.substr(6);
  }
  TESSERA_CHECK(slide_col >= 0, csv, ": no 'slide' column in the header '", line, "'");
  const fs::path root = fs::path(csv).parent_path();
  std::vector<ManifestEntry> out;
  std::set<std::string> ids;
  for (int64_t row = 2; std::getline(in, line); ++row) {
    if (line.empty() || line == "\r") continue;
    const auto cells = split_csv_line(line);
    TESSERA_CHECK(cells.size() == header.size(), csv, ":", row, ": ", cells.size(), " columns but the header has ",
                  header.size());
    ManifestEntry e;
    const fs::path p(cells[slide_col]);
    e.path = p.is_absolute() ? p.string() : (root / p).string();
    e.id = id_col >= 0 && !cells[id_col].empty() ? cells[id_col] : p.stem().string();
    if (split_col >= 0) e.split = cells[split_col];
    for (const auto& [c, task] : label_cols) {
      if (cells[c].empty()) continue;
      try {
        size_t pos = 0;
        const int64_t v = std::stoll(cells[c], &pos);
        TESSERA_CHECK(pos == cells[c].size() && v >= 0, "");
        e.labels[task] = v;
      } catch (const std::exception&) {
        fail(csv, ":", row, ": label '", cells[c], "' is not a class index >= 0");
      }
    }
    TESSERA_CHECK(ids.insert(e.id).second, csv, ":", row, ": slide id '", e.id, "' appears twice; add an 'id' column");
    out.push_back(std::move(e));
  }
  TESSERA_CHECK(!out.empty(), "slide manifest '", csv, "' lists no slides");
  return out;
}

std::vector<ManifestEntry> select_split(const std::vector<ManifestEntry>& entries, const std::string& split) {
  std::vector<ManifestEntry> out;
  for (const auto& e : entries) {
    if (split.empty() || e.split == split || (split == "train" && e.split.empty())) out.push_back(e);
  }
  return out;
}

}  // namespace tessera::slides
