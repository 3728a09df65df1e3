#include "tessera/app/export_data.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "tessera/core/error.h"
#include "tessera/core/run_dir.h"
#include "tessera/core/runtime.h"
#include "tessera/data/image_io.h"
#include "tessera/train/experiment.h"

namespace tessera::app {

int64_t export_data(const Config& config, const ExportOptions& o) {
  TESSERA_CHECK(o.split == "train" || o.split == "test", "--split must be train or test, got '", o.split, "'");
  train::apply_runtime(config);
  runtime::ScopedThreads threads(config.train.threads);
  const auto sets = train::make_datasets(config, {o.split == "train", o.split == "test"});
  const auto& set = o.split == "train" ? sets.first : sets.second;
  TESSERA_CHECK(set, "no ", o.split, " set configured");
  RunDir dir(o.out);
  const auto tasks = set->tasks();
  std::string csv = "file";
  for (const auto& t : tasks) csv += "," + t.name;
  csv += "\n";
  const int64_t n = std::min(o.count, set->size());
  for (int64_t i = 0; i < n; ++i) {
    const auto sample = set->get(i);
    const auto name = fmt::format("{}_{:05d}.png", o.split, i);
    data::write_png(dir.file(name), set->picture(i));
    csv += name;
    for (const auto& t : tasks) {
      const auto& label = sample.labels.at(t.name);
      if (t.activation == "softmax") {
        csv += fmt::format(",{}", label.item<int64_t>());
      } else {
        const auto on = label.nonzero().view(-1).contiguous();
        csv += "," + fmt::format("{}", fmt::join(std::vector<int64_t>(on.data_ptr<int64_t>(), on.data_ptr<int64_t>() + on.numel()), " "));
      }
    }
    csv += "\n";
  }
  dir.write_text("labels.csv", csv);
  return n;
}

}  // namespace tessera::app
