#include "tessera/slides/heatmap.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>

#include "tessera/core/error.h"
#include "tessera/core/run_dir.h"
#include "tessera/data/image_io.h"
#include "vips_tiff.h"

namespace tessera::slides {
namespace {

torch::Tensor normalised(const torch::Tensor& scores) {
  const auto s = scores.to(torch::kFloat32);
  const float lo = s.min().item<float>(), hi = s.max().item<float>();
  return hi > lo ? (s - lo) / (hi - lo) : torch::full_like(s, 0.5);
}

void check_scores(const PatchCoords& grid, const torch::Tensor& scores) {
  TESSERA_CHECK(scores.dim() == 1 && scores.size(0) == grid.count(), "heatmap needs one score per patch: ",
                grid.count(), " patches, ", scores.sizes(), " scores");
}

// Patch grid cell of each coordinate: (N) row and column indices with the grid's shape.
struct Cells {
  torch::Tensor row, col;
  int64_t rows = 0, cols = 0;
};
Cells cells_of(const PatchCoords& grid) {
  Cells c;
  c.col = grid.coords.select(1, 0).div(grid.stride, "floor");
  c.row = grid.coords.select(1, 1).div(grid.stride, "floor");
  c.rows = c.row.max().item<int64_t>() + 1;
  c.cols = c.col.max().item<int64_t>() + 1;
  return c;
}

}  // namespace

torch::Tensor colour_map(const torch::Tensor& values) {
  // Piecewise-linear through blue, cyan, green, yellow, red.
  const auto anchors = torch::tensor({{0.f, 0.f, 1.f}, {0.f, 1.f, 1.f}, {0.f, 0.8f, 0.f}, {1.f, 1.f, 0.f}, {1.f, 0.f, 0.f}});
  const auto v = values.to(torch::kFloat32).clamp(0, 1) * 4;
  const auto lo = v.floor().clamp(0, 3).to(torch::kLong);
  const auto t = (v - lo.to(torch::kFloat32)).unsqueeze(-1);
  return anchors.index({lo}) * (1 - t) + anchors.index({lo + 1}) * t;
}

void for_each_patch_score(const PatchCoords& grid, const torch::Tensor& scores, const torch::Tensor& selected,
                          const std::function<void(int64_t x, int64_t y, double score, bool selected)>& row) {
  check_scores(grid, scores);
  TESSERA_ASSERT(!selected.defined() || selected.numel() == grid.count(), "one selection flag per patch");
  const auto c = grid.coords.to(torch::kLong).contiguous();
  const auto s = scores.to(torch::kDouble).contiguous();
  const auto sel = selected.defined() ? selected.to(torch::kBool).contiguous() : torch::Tensor();
  const auto* cp = c.data_ptr<int64_t>();
  const auto* sp = s.data_ptr<double>();
  const bool* selp = sel.defined() ? sel.data_ptr<bool>() : nullptr;
  for (int64_t i = 0; i < grid.count(); ++i) row(cp[2 * i], cp[2 * i + 1], sp[i], selp && selp[i]);
}

void write_scores_csv(const std::string& path, const PatchCoords& grid, const torch::Tensor& scores,
                      const torch::Tensor& selected) {
  std::string out = selected.defined() ? "x,y,score,selected\n" : "x,y,score\n";
  for_each_patch_score(grid, scores, selected, [&](int64_t x, int64_t y, double score, bool chosen) {
    out += fmt::format("{},{},{:.6g}", x, y, score);
    if (selected.defined()) out += chosen ? ",1" : ",0";
    out += '\n';
  });
  write_file_atomic(path, out);
}

torch::Tensor heatmap_overlay(const SlideReader& slide, const PatchCoords& grid, const torch::Tensor& scores,
                              int64_t max_side, double alpha) {
  check_scores(grid, scores);
  TESSERA_CHECK(max_side > 0, "heatmap size must be positive");
  const auto& l0 = slide.levels().front();
  const int level = slide.level_for_downsample(static_cast<double>(std::max(l0.width, l0.height)) / max_side);
  auto img = slide.read_level(level).permute({2, 0, 1}).to(torch::kFloat32).div(255).unsqueeze(0);
  const double scale = std::min(1.0, static_cast<double>(max_side) / std::max(img.size(2), img.size(3)));
  const int64_t h = std::max<int64_t>(1, std::llround(img.size(2) * scale)), w = std::max<int64_t>(1, std::llround(img.size(3) * scale));
  namespace F = torch::nn::functional;
  img = F::interpolate(img, F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w}).mode(torch::kArea)).squeeze(0);
  // Each thumbnail pixel looks up the grid cell under its centre.
  const auto cells = cells_of(grid);
  auto value = torch::full({cells.rows * cells.cols}, -1.0f);
  value.index_put_({cells.row * cells.cols + cells.col}, normalised(scores));
  const double px = static_cast<double>(l0.width) / w, py = static_cast<double>(l0.height) / h;  // level-0 px per pixel
  const auto ys = ((torch::arange(h, torch::kFloat64) + 0.5) * py).to(torch::kLong);
  const auto xs = ((torch::arange(w, torch::kFloat64) + 0.5) * px).to(torch::kLong);
  const auto row = ys.div(grid.stride, "floor"), col = xs.div(grid.stride, "floor");
  const auto inside = (row < cells.rows).view({h, 1}) & (col < cells.cols).view({1, w}) &
                      (ys - row * grid.stride < grid.footprint).view({h, 1}) & (xs - col * grid.stride < grid.footprint).view({1, w});
  const auto flat = (row.clamp_max(cells.rows - 1).view({h, 1}) * cells.cols + col.clamp_max(cells.cols - 1).view({1, w}));
  const auto v = torch::where(inside, value.index({flat}), torch::full({h, w}, -1.0f));
  const auto covered = (v >= 0).to(torch::kFloat32).unsqueeze(0) * alpha;
  const auto colour = colour_map(v.clamp_min(0)).permute({2, 0, 1});
  return (img * (1 - covered) + colour * covered).clamp(0, 1);
}

void write_heatmap_tiff(const std::string& path, const SlideReader& slide, const PatchCoords& grid,
                        const torch::Tensor& scores, double alpha) {
  check_scores(grid, scores);
  TESSERA_CHECK(grid.stride == grid.footprint, "the full-resolution overlay needs a non-overlapping grid (stride = patch)");
  const auto cells = cells_of(grid);
  // One RGBA pixel per grid cell, zoomed to level 0 by libvips as tiles are written.
  auto rgba = torch::zeros({cells.rows, cells.cols, 4}, torch::kUInt8);
  const auto colour = (colour_map(normalised(scores)) * 255).round().to(torch::kUInt8);
  const auto a = torch::full({grid.count(), 1}, static_cast<int64_t>(std::llround(alpha * 255)), torch::kUInt8);
  rgba.view({-1, 4}).index_put_({cells.row * cells.cols + cells.col}, torch::cat({colour, a}, 1));
  const auto& l0 = slide.levels().front();
  const auto image = detail::image_from_tensor(rgba)
                         .zoom(static_cast<int>(grid.stride), static_cast<int>(grid.stride))
                         .embed(0, 0, static_cast<int>(l0.width), static_cast<int>(l0.height));
  detail::write_pyramidal_tiff(image, path, {256, slide.mpp(), "deflate", 0}, "heatmap");
}

}  // namespace tessera::slides
