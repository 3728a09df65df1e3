// HDF5 feature bags and coordinate files (CLAM/TRIDENT layout).
#include "fuzz.h"
#include "tessera/slides/h5.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = tessera::fuzz::scratch(data, size, ".h5");
  tessera::fuzz::clear_errors_only([&] { tessera::slides::read_coords(path); });
  return tessera::fuzz::clear_errors_only([&] {
    tessera::slides::FeatureBag bag(path);
    if (bag.size() > 0) bag.range(0, std::min<int64_t>(bag.size(), 4));
  });
}
