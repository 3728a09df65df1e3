// CSV files: the generic reader, slide manifests and the csv data set's image lists.
#include "fuzz.h"
#include "tessera/core/csv.h"
#include "tessera/data/csv_images.h"
#ifdef TESSERA_WITH_SLIDES
#include "tessera/slides/manifest.h"
#endif

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = tessera::fuzz::scratch(data, size, ".csv");
  tessera::fuzz::clear_errors_only([&] { tessera::read_csv(path, "fuzzed table"); });
#ifdef TESSERA_WITH_SLIDES
  tessera::fuzz::clear_errors_only([&] { tessera::slides::read_manifest(path); });
#endif
  return tessera::fuzz::clear_errors_only([&] {
    tessera::data::CsvImagesOptions o;
    o.csv = path;
    tessera::data::CsvImages images(o);
  });
}
