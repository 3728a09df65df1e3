#include "tessera/slides/geojson.h"

#include <torch/torch.h>

#include "tessera/core/error.h"
#include "tessera/core/run_dir.h"
#include "tessera/slides/heatmap.h"

namespace tessera::slides {

nlohmann::json scores_geojson(const PatchCoords& grid, const torch::Tensor& scores, const torch::Tensor& selected,
                              const std::string& measurement, const nlohmann::json& prediction) {
  const int64_t side = grid.footprint;
  auto features = nlohmann::json::array();
  for_each_patch_score(grid, scores, selected, [&](int64_t x, int64_t y, double score, bool chosen) {
    // One closed ring, counter-clockwise in image coordinates (y down), as QuPath writes rectangles.
    const nlohmann::json ring = {{x, y}, {x + side, y}, {x + side, y + side}, {x, y + side}, {x, y}};
    nlohmann::json properties = {{"objectType", "detection"}, {"measurements", {{measurement, score}}}};
    if (chosen) properties["classification"] = {{"name", "Selected"}, {"color", {230, 40, 40}}};
    features.push_back({{"type", "Feature"},
                        {"geometry", {{"type", "Polygon"}, {"coordinates", {ring}}}},
                        {"properties", std::move(properties)}});
  });
  nlohmann::json out{{"type", "FeatureCollection"}, {"features", std::move(features)}};
  if (!prediction.is_null()) out["properties"] = prediction;  // a foreign member: QuPath reads the features
  return out;
}

void write_scores_geojson(const std::string& path, const PatchCoords& grid, const torch::Tensor& scores,
                          const torch::Tensor& selected, const std::string& measurement, const nlohmann::json& prediction) {
  write_file_atomic(path, scores_geojson(grid, scores, selected, measurement, prediction).dump() + "\n");
}

}  // namespace tessera::slides
