#include "tessera/train/preflight.h"

#include <fmt/format.h>

#include <algorithm>

#include "tessera/core/error.h"
#include "tessera/train/registry.h"

namespace tessera::train {
namespace {

void check_classes(const data::Dataset& set, const std::string& split) {
  const auto counts = set.class_counts();
  for (const auto& task : set.tasks()) {
    const auto it = counts.find(task.name);
    if (it == counts.end()) continue;  // the data set cannot say without generating its samples
    std::string present;
    int64_t classes = 0;
    for (size_t k = 0; k < it->second.size(); ++k) {
      if (it->second[k] == 0) continue;
      ++classes;
      present += fmt::format("{}{} {}", present.empty() ? "" : ", ", it->second[k], task.class_name(static_cast<int64_t>(k)));
    }
    const std::string where = set.source().empty() ? "the " + split + " split" : "the " + split + " split (" + set.source() + ")";
    TESSERA_CHECK(classes >= 2, where, " holds one class of task '", task.name, "' (", present.empty() ? "no samples" : present,
                  split == "training" ? "): a classifier learns nothing from it; add samples of the other classes"
                                      : "): its AUC is undefined and its accuracy says nothing of the classifier; put "
                                        "samples of every class in the test split (make-slides: --test-count 2 or more)");
  }
}

}  // namespace

void check_data(const Config& config, const data::Dataset& train_set, const data::Dataset* test_set) {
  const auto& method = find_method(config.train.method);
  if (find_dataset(config.data.dataset).input == "image" && method.validate_grid) {
    method.validate_grid(config, data::PatchGrid::fit(config.data.height, config.data.width, config.data.patch,
                                                       config.data.stride));
  }
  check_classes(train_set, "training");
  if (test_set && test_set->size() > 0) check_classes(*test_set, "test");
  const int64_t threads = std::max<int64_t>(2, config.data.workers);
  train_set.check_inputs(threads);
  if (test_set) test_set->check_inputs(threads);
}

}  // namespace tessera::train
