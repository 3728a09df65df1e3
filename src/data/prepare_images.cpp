#include "tessera/data/prepare_images.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/progress.h"
#include "tessera/core/csv.h"
#include "tessera/core/run_dir.h"
#include "tessera/data/image_io.h"
#include "tessera/data/random.h"

namespace tessera::data {
namespace fs = std::filesystem;
PrepareImagesSummary prepare_images(const PrepareImagesOptions& o) {
  TESSERA_CHECK(o.size > 0 && o.folds >= 2, "prepare-images needs --size > 0 and --folds >= 2");
  const auto table = read_csv(o.manifest, "manifest");
  const auto column = [&](const std::string& name) {
    const int c = table.column(name);
    TESSERA_CHECK(c >= 0, "manifest '", o.manifest, "' has no column '", name, "'; its columns are ",
                  fmt::format("{}", fmt::join(table.header, ", ")));
    return static_cast<size_t>(c);
  };
  const size_t id_col = column(o.id_column), label_col = column(o.label_column);
  std::vector<std::pair<std::string, int64_t>> rows;
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto& cells = table.rows[r];
    const int64_t row = table.lines[r];
    TESSERA_CHECK(cells.size() > std::max(id_col, label_col), o.manifest, ":", row, ": too few columns");
    const auto label = parse_integer(cells[label_col]).value_or(-1);  // "2.5" or "2x" is no class
    TESSERA_CHECK(label >= 0, o.manifest, ":", row, ": label '", cells[label_col], "' is not a class index >= 0");
    rows.emplace_back(cells[id_col], label);
  }
  TESSERA_CHECK(!rows.empty(), "manifest '", o.manifest, "' has no rows");

  RunDir out(o.out);
  PrepareImagesSummary summary;
  Progress progress("prepare-images", static_cast<int64_t>(rows.size()));
  for (const auto& [id, label] : rows) {
    const auto target = out.file(id + ".png");
    if (fs::exists(target)) {
      ++summary.skipped;
    } else {
      const auto source = (fs::path(o.images) / (id + o.extension)).string();
      write_png(target, read_fit_square(source, o.size, o.level));
      ++summary.written;
    }
    progress.advance(1, id);
  }
  progress.finish(fmt::format("{} written, {} already there", summary.written, summary.skipped));

  // Stratified folds: each class shuffled with the seed, then dealt round-robin.
  std::map<int64_t, std::vector<size_t>> by_class;
  for (size_t i = 0; i < rows.size(); ++i) by_class[rows[i].second].push_back(i);
  std::vector<int64_t> fold(rows.size());
  Rng rng(static_cast<uint64_t>(o.seed), 0);
  for (auto& [label, members] : by_class) {
    for (size_t i = members.size(); i > 1; --i) std::swap(members[i - 1], members[rng.integer(0, static_cast<int64_t>(i) - 1)]);
    for (size_t i = 0; i < members.size(); ++i) fold[members[i]] = static_cast<int64_t>(i) % o.folds;
  }
  std::string all = "path,label,fold\n", train = "path,label\n", val = "path,label\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto entry = fmt::format("{}.png,{}", rows[i].first, rows[i].second);
    all += fmt::format("{},{}\n", entry, fold[i]);
    (fold[i] == 0 ? val : train) += entry + "\n";
  }
  out.write_text("folds.csv", all);
  out.write_text("train.csv", train);
  out.write_text("val.csv", val);
  return summary;
}

}  // namespace tessera::data
