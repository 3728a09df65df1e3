// Heatmaps of per-patch scores over a slide, without ever holding a full-resolution level in memory:
// a thumbnail overlay (PNG), the scores as CSV, and optionally a full-resolution pyramidal TIFF overlay
// that libvips renders tile by tile from one value per patch.
#pragma once
#include <torch/types.h>

#include <functional>
#include <string>

#include "tessera/slides/reader.h"
#include "tessera/slides/tissue.h"

namespace tessera::slides {

// Scores in [0, 1] -> RGB (..., 3) float, blue (low) through green and yellow to red (high).
torch::Tensor colour_map(const torch::Tensor& values);

// x,y,score[,selected] rows in coordinate order. selected: (N) bool or undefined.
// Calls row(x, y, score, selected) for each patch of grid in order: level-0 top-left, its score, and
// whether it is among `selected` (false for every patch when selected is undefined).
void for_each_patch_score(const PatchCoords& grid, const torch::Tensor& scores, const torch::Tensor& selected,
                          const std::function<void(int64_t x, int64_t y, double score, bool selected)>& row);

void write_scores_csv(const std::string& path, const PatchCoords& grid, const torch::Tensor& scores,
                      const torch::Tensor& selected = {});

// The slide at most max_side pixels across with the (min-max normalised) scores blended over it:
// (3, h, w) in [0, 1]. Reads one low-resolution level.
torch::Tensor heatmap_overlay(const SlideReader& slide, const PatchCoords& grid, const torch::Tensor& scores,
                              int64_t max_side, double alpha = 0.5);

// Full-resolution RGBA overlay (transparent where no patch was scored) as a tiled pyramidal BigTIFF the
// size of level 0, written atomically; host memory is one value per patch plus libvips' tile buffers.
void write_heatmap_tiff(const std::string& path, const SlideReader& slide, const PatchCoords& grid,
                        const torch::Tensor& scores, double alpha = 0.5);

}  // namespace tessera::slides
