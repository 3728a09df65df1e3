#include "tessera/slides/manifest.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "tessera/core/csv.h"
#include "tessera/core/error.h"

namespace tessera::slides {
namespace fs = std::filesystem;

std::vector<ManifestEntry> read_manifest(const std::string& csv) {
  TESSERA_CHECK(fs::exists(csv), "slide manifest '", csv, "' cannot be opened; set data.manifest to a CSV with a 'slide' column");
  const auto table = read_csv(csv, "slide manifest");
  const auto& header = table.header;
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
  TESSERA_CHECK(slide_col >= 0, csv, ": no 'slide' column in the header");
  const fs::path root = fs::path(csv).parent_path();
  std::vector<ManifestEntry> out;
  std::set<std::string> ids;
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto& cells = table.rows[r];
    const int64_t row = table.lines[r];
    TESSERA_CHECK(cells.size() == header.size(), csv, ":", row, ": ", cells.size(), " columns but the header has ",
                  header.size());
    ManifestEntry e;
    const fs::path p(cells[slide_col]);
    e.path = p.is_absolute() ? p.string() : (root / p).string();
    e.id = id_col >= 0 && !cells[id_col].empty() ? cells[id_col] : p.stem().string();
    if (split_col >= 0) e.split = cells[split_col];
    for (const auto& [c, task] : label_cols) {
      if (cells[c].empty()) continue;
      e.labels[task] = cells[c];
      e.label_lines[task] = row;
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
