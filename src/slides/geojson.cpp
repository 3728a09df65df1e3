#include "tessera/slides/geojson.h"

#include <torch/torch.h>

#include "tessera/core/error.h"
#include "tessera/core/run_dir.h"

namespace tessera::slides {

nlohmann::json scores_geojson(const PatchCoords& grid, const torch::Tensor& scores, const torch::Tensor& selected,
                              const std::string& measurement) {
  TESSERA_ASSERT(scores.dim() == 1 && scores.size(0) == grid.count(), "one score per patch: ", scores.sizes(), " for ",
                 grid.count(), " patches");
  TESSERA_ASSERT(!selected.defined() || selected.numel() == grid.count(), "one selection flag per patch");
  const auto c = grid.coords.to(torch::kLong).contiguous();
  const auto s = scores.to(torch::kDouble).contiguous();
  const auto sel = selected.defined() ? selected.to(torch::kBool).contiguous() : torch::Tensor();
  const auto* cp = c.data_ptr<int64_t>();
  const auto* sp = s.data_ptr<double>();
  const bool* selp = sel.defined() ? sel.data_ptr<bool>() : nullptr;
  const int64_t side = grid.footprint;
  auto features = nlohmann::json::array();
  for (int64_t i = 0; i < grid.count(); ++i) {
    const int64_t x = cp[2 * i], y = cp[2 * i + 1];
    // One closed ring, counter-clockwise in image coordinates (y down), as QuPath writes rectangles.
    const nlohmann::json ring = {{x, y}, {x + side, y}, {x + side, y + side}, {x, y + side}, {x, y}};
    nlohmann::json properties = {{"objectType", "detection"}, {"measurements", {{measurement, sp[i]}}}};
    if (selp && selp[i]) properties["classification"] = {{"name", "Selected"}, {"color", {230, 40, 40}}};
    features.push_back({{"type", "Feature"},
                        {"geometry", {{"type", "Polygon"}, {"coordinates", {ring}}}},
                        {"properties", std::move(properties)}});
  }
  return {{"type", "FeatureCollection"}, {"features", std::move(features)}};
}

void write_scores_geojson(const std::string& path, const PatchCoords& grid, const torch::Tensor& scores,
                          const torch::Tensor& selected, const std::string& measurement) {
  write_file_atomic(path, scores_geojson(grid, scores, selected, measurement).dump() + "\n");
}

}  // namespace tessera::slides
