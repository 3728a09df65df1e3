// QuPath GeoJSON annotations, then the region arithmetic on a small patch grid.
#include <torch/torch.h>

#include "fuzz.h"
#include "tessera/slides/annotations.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = tessera::fuzz::scratch(data, size, ".geojson");
  return tessera::fuzz::clear_errors_only([&] {
    const auto a = tessera::slides::read_annotations(path);
    const auto coords = torch::tensor({0, 0, 256, 0, 0, 256, 256, 256}, torch::kLong).view({4, 2});
    tessera::slides::annotated_fraction(a, coords, 256, 4);
    tessera::slides::overlapping_patches(a, coords, 256);
  });
}
