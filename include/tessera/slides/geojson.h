// GeoJSON the way QuPath writes and reads it: a FeatureCollection whose features are detections, one
// square polygon per patch in level-0 pixels, with the patch's score under properties.measurements and,
// for the patches a model selected, properties.classification. QuPath's File > Import objects reads the
// file and colours the detections by the measurement.
#pragma once
#include <nlohmann/json.hpp>
#include <torch/types.h>

#include <string>

#include "tessera/slides/tissue.h"

namespace tessera::slides {

// scores (N) one per patch of grid; selected (N) bool, or undefined for none. measurement: the name the
// score is stored under (e.g. "attention"). prediction, when not null, is the slide's predicted classes
// (predicted, predicted_class: class names when the run has them), kept as the collection's "properties".
nlohmann::json scores_geojson(const PatchCoords& grid, const torch::Tensor& scores, const torch::Tensor& selected,
                              const std::string& measurement, const nlohmann::json& prediction = nullptr);
// The same, written atomically to path.
void write_scores_geojson(const std::string& path, const PatchCoords& grid, const torch::Tensor& scores,
                          const torch::Tensor& selected, const std::string& measurement,
                          const nlohmann::json& prediction = nullptr);

}  // namespace tessera::slides
