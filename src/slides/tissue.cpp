#include "tessera/slides/tissue.h"

#include <filesystem>

#include <fmt/format.h>
#include <torch/torch.h>

#include "tessera/core/error.h"

namespace tessera::slides {

torch::Tensor tissue_score(const torch::Tensor& rgb, const std::string& method) {
  TESSERA_CHECK(rgb.dim() == 3 && rgb.size(2) == 3, "tissue score takes (h, w, 3) RGB, got ", rgb.sizes());
  const auto f = rgb.to(torch::kFloat32);
  const auto r = f.select(2, 0), g = f.select(2, 1), b = f.select(2, 2);
  if (method == "otsu") return r + b - (r + g + b) / 1.5;
  if (method == "saturation") {
    const auto mx = f.amax(2), mn = f.amin(2);
    return torch::where(mx > 0, (mx - mn) / mx.clamp_min(1) * 255, torch::zeros_like(mx));
  }
  fail("unknown tissue method '", method, "'; use otsu or saturation");
}

double otsu_threshold(const torch::Tensor& values) {
  const auto v = values.flatten().to(torch::kFloat64);
  const double lo = v.min().item<double>(), hi = v.max().item<double>();
  if (hi - lo < 1e-9) return hi;
  const auto hist = torch::histc(v, 256, lo, hi);
  const auto p = hist / hist.sum();
  const auto centres = lo + (torch::arange(256, torch::kFloat64) + 0.5) * ((hi - lo) / 256);
  const auto w0 = p.cumsum(0), mu = (p * centres).cumsum(0), mu_t = mu[-1];
  // Between-class variance for a split after each bin.
  const auto between = (mu_t * w0 - mu).pow(2) / (w0 * (1 - w0)).clamp_min(1e-12);
  const int64_t best = between.slice(0, 0, 255).argmax().item<int64_t>();
  return lo + (best + 1) * ((hi - lo) / 256);
}

TissueMask detect_tissue(const SlideReader& slide, const TissueOptions& o, double downsample) {
  TESSERA_CHECK(o.min_fraction >= 0 && o.min_fraction <= 1, "tissue.min_fraction must be in [0, 1], got ", o.min_fraction);
  const int level = slide.level_for_downsample(downsample);
  TissueMask m;
  m.downsample = slide.levels()[level].downsample;
  m.score = tissue_score(slide.read_level(level), o.method);
  // Blank glass scores near 0 with either transform; the floor keeps Otsu from splitting noise.
  const double floor = o.floor > 0 ? o.floor : (o.method == "otsu" ? 10.0 : 15.0);
  m.threshold = std::max(otsu_threshold(m.score), floor);
  m.mask = m.score > m.threshold;
  return m;
}

torch::Tensor read_patch(const SlideReader& slide, const PatchCoords& grid, int64_t x, int64_t y) {
  return grid.mpp > 0 ? slide.read_region_mpp(x, y, grid.mpp, grid.patch, grid.patch)
                      : slide.read_region(x, y, grid.level, grid.patch, grid.patch);
}

void check_grid_options(const PatchGridOptions& o) {
  constexpr int64_t kMaxSide = 65536;
  TESSERA_CHECK(o.patch > 0 && o.patch <= kMaxSide, "the patch side (patch) must be in [1, ", kMaxSide, "] pixels, got ", o.patch);
  TESSERA_CHECK(o.stride >= 0 && o.stride <= kMaxSide, "the grid step (stride) must be in [0, ", kMaxSide,
                "] pixels (0: the patch side), got ", o.stride);
  TESSERA_CHECK(o.level >= 0, "the pyramid level (level) must be >= 0, got ", o.level);
  TESSERA_CHECK(o.mpp >= 0, "the resolution (mpp) must be >= 0 um/px (0: read at the level), got ", o.mpp);
  TESSERA_CHECK(o.tissue.min_fraction >= 0 && o.tissue.min_fraction <= 1,
                "the tissue fraction a patch needs (min_tissue) must be in [0, 1], got ", o.tissue.min_fraction);
  TESSERA_CHECK(o.tissue.method == "otsu" || o.tissue.method == "saturation", "the tissue detector (tissue) must be otsu or "
                "saturation, got '", o.tissue.method, "'");
  TESSERA_CHECK(o.annotations.empty() || std::filesystem::is_directory(o.annotations) ||
                    std::filesystem::is_regular_file(o.annotations),
                "the annotations '", o.annotations, "' do not exist; give the folder of QuPath GeoJSON exports");
}

PatchCoords tissue_patches(const SlideReader& slide, const PatchGridOptions& o, TissueMask* mask_out) {
  TESSERA_CHECK(o.patch > 0 && o.stride >= 0, "patch size must be positive, got ", o.patch);
  PatchCoords g;
  g.patch = o.patch;
  g.mpp = o.mpp;
  double ds = 1;
  if (o.mpp > 0) {
    TESSERA_CHECK(slide.mpp() > 0, "slide '", slide.path(), "' does not state its resolution; use a level instead of mpp");
    ds = o.mpp / slide.mpp();
    g.level = slide.level_for_downsample(ds);
  } else {
    TESSERA_CHECK(o.level >= 0 && o.level < slide.level_count(), "slide '", slide.path(), "' has levels 0..",
                  slide.level_count() - 1, "; patch level ", o.level, " does not exist");
    g.level = o.level;
    ds = slide.levels()[o.level].downsample;
  }
  g.footprint = static_cast<int64_t>(std::llround(o.patch * ds));
  g.stride = static_cast<int64_t>(std::llround((o.stride > 0 ? o.stride : o.patch) * ds));
  const auto& l0 = slide.levels().front();
  TESSERA_CHECK(g.footprint <= l0.width && g.footprint <= l0.height, "patch footprint ", g.footprint,
                " px is larger than slide '", slide.path(), "' (", l0.width, "x", l0.height, ")");

  // Mask resolution: about 8 mask pixels across a patch, never coarser.
  auto mask = detect_tissue(slide, o.tissue, std::max(1.0, g.footprint / 8.0));
  const int64_t rows = (l0.height - g.footprint) / g.stride + 1, cols = (l0.width - g.footprint) / g.stride + 1;
  const auto ys = torch::arange(rows, torch::kLong) * g.stride, xs = torch::arange(cols, torch::kLong) * g.stride;
  // Tissue fraction of every patch footprint from an integral image of the mask.
  const int64_t mh = mask.mask.size(0), mw = mask.mask.size(1);
  auto integral = torch::zeros({mh + 1, mw + 1}, torch::kFloat64);
  integral.slice(0, 1).slice(1, 1).copy_(mask.mask.to(torch::kFloat64).cumsum(0).cumsum(1));
  const auto to_mask = [&](const torch::Tensor& v, int64_t limit) {
    return (v.to(torch::kFloat64) / mask.downsample).round().clamp(0, limit).to(torch::kLong);
  };
  const auto y0 = to_mask(ys, mh).view({rows, 1}), y1 = to_mask(ys + g.footprint, mh).view({rows, 1});
  const auto x0 = to_mask(xs, mw).view({1, cols}), x1 = to_mask(xs + g.footprint, mw).view({1, cols});
  const auto flat = integral.flatten();
  const auto at = [&](const torch::Tensor& y, const torch::Tensor& x) { return flat.index({(y * (mw + 1) + x).flatten()}).view({rows, cols}); };
  const auto area = ((y1 - y0) * (x1 - x0)).clamp_min(1).to(torch::kFloat64);
  const auto fraction = (at(y1, x1) - at(y0, x1) - at(y1, x0) + at(y0, x0)) / area;
  const auto keep = (fraction >= o.tissue.min_fraction) & ((y1 - y0) * (x1 - x0) > 0);
  const auto idx = keep.flatten().nonzero().squeeze(1);
  g.coords = torch::stack({xs.index({idx.remainder(cols)}), ys.index({idx.div(cols, "floor")})}, 1).contiguous();
  if (mask_out) *mask_out = mask;
  TESSERA_CHECK(g.count() > 0, "slide '", slide.path(), "' has no tissue patches (", rows * cols,
                " grid positions, tissue threshold ", fmt::format("{:.1f}", mask.threshold), ", min fraction ",
                o.tissue.min_fraction, "); check the slide or lower tissue.min_fraction");
  return g;
}

std::string settings_key(const PatchGridOptions& o) {
  return fmt::format("patch={};stride={};level={};mpp={:.6f};tissue={};min_fraction={:.6f};floor={:.6f}", o.patch,
                     o.stride > 0 ? o.stride : o.patch, o.level, o.mpp, o.tissue.method, o.tissue.min_fraction,
                     o.tissue.floor);
}

}  // namespace tessera::slides
