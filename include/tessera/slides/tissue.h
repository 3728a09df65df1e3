// Which patches of a slide hold tissue: an Otsu mask on a low-resolution level, then a regular patch
// grid at the reading resolution keeping the patches whose tissue fraction passes a threshold.
#pragma once
#include <torch/types.h>

#include <string>

#include "tessera/slides/reader.h"

namespace tessera::slides {

struct TissueOptions {
  // otsu: the reference's grey transform R + B - (R + G + B) / 1.5; saturation: HSV saturation (CLAM).
  std::string method = "otsu";
  double min_fraction = 0.5;  // keep patches at least this much tissue
  double floor = 0;           // minimum score counted as tissue (0: the method's default, so blank glass is never tissue)
};

struct PatchGridOptions {
  int64_t patch = 256;  // patch side in pixels at the reading resolution
  int64_t stride = 0;   // 0: the patch side (no overlap)
  int level = 0;        // pyramid level patches are read at ...
  double mpp = 0;       // ... or this resolution when > 0 (nearest finer level + resampling)
  TissueOptions tissue;
  // Folder of QuPath GeoJSON exports, <slide id>.geojson: only patches at least half inside the drawn
  // regions are kept (annotations.h). Empty: every tissue patch.
  std::string annotations;
};

// Checks the grid settings before any slide is read (errors say which setting and its valid range).
void check_grid_options(const PatchGridOptions& options);

struct TissueMask {
  torch::Tensor mask;      // (h, w) bool
  torch::Tensor score;     // (h, w) float, the transform Otsu thresholded
  double downsample = 1;   // level-0 pixels per mask pixel
  double threshold = 0;
};

struct PatchCoords {
  torch::Tensor coords;         // (N, 2) int64 level-0 top-left (x, y), row-major grid order
  int64_t patch = 0;            // side read at the reading resolution
  int64_t footprint = 0;        // side in level-0 pixels
  int64_t stride = 0;           // grid step in level-0 pixels
  int level = 0;                // level read (with mpp: the level resampled from)
  double mpp = 0;               // > 0: patches are resampled to this resolution
  int64_t count() const { return coords.defined() ? coords.size(0) : 0; }
};

// Per-pixel tissue score of an RGB image (h, w, 3) uint8.
torch::Tensor tissue_score(const torch::Tensor& rgb, const std::string& method);
// Otsu's threshold of values (any shape) over a 256-bin histogram.
double otsu_threshold(const torch::Tensor& values);
// The mask on the level nearest `downsample` (coarsest level at or below it).
TissueMask detect_tissue(const SlideReader& slide, const TissueOptions& options, double downsample);
// Tissue patches of the slide; throws (naming the slide) when none pass.
PatchCoords tissue_patches(const SlideReader& slide, const PatchGridOptions& options, TissueMask* mask_out = nullptr);
// One patch (patch, patch, 3) uint8 at the grid's resolution, top-left (x, y) in level-0 pixels.
torch::Tensor read_patch(const SlideReader& slide, const PatchCoords& grid, int64_t x, int64_t y);

// Stable text of the settings that determine the coordinates (for cache keys; the annotation files'
// identity is in preprocess.h's settings_hash).
std::string settings_key(const PatchGridOptions& options);

}  // namespace tessera::slides
