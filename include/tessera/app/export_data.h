// Writes images of a configured data set as PNG files with a labels CSV: to look at generated data,
// or to turn it into a `csv` data set.
#pragma once
#include <string>

#include "tessera/core/config.h"

namespace tessera::app {

struct ExportOptions {
  std::string out = "data/export";
  int64_t count = 8;
  std::string split = "test";  // train | test
};

// <out>/<split>_NNNNN.png and <out>/labels.csv (file, then one column per task: the class, or the
// active classes separated by spaces); returns the number of images written.
int64_t export_data(const Config& config, const ExportOptions& options);

}  // namespace tessera::app
