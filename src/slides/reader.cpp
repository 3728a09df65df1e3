#include "tessera/slides/reader.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <filesystem>

#include "backends.h"
#include "tessera/core/error.h"

namespace tessera::slides {

int SlideReader::level_for_downsample(double downsample) const {
  int best = 0;
  for (int l = 0; l < level_count(); ++l) {
    if (levels_[l].downsample <= downsample * (1 + 1e-6)) best = l;
  }
  return best;
}

torch::Tensor SlideReader::read_region_mpp(int64_t x, int64_t y, double mpp, int64_t w, int64_t h) const {
  TESSERA_CHECK(mpp > 0, "requested resolution must be positive, got ", mpp, " um/px");
  TESSERA_CHECK(mpp_ > 0, "slide '", path_, "' does not state its resolution (mpp); read by level instead");
  const double downsample = mpp / mpp_;
  const int level = level_for_downsample(downsample);
  const double scale = downsample / levels_[level].downsample;  // >= 1: level pixels per output pixel
  if (std::abs(scale - 1) < 1e-6) return read_region(x, y, level, w, h);
  const int64_t src_w = static_cast<int64_t>(std::ceil(w * scale)), src_h = static_cast<int64_t>(std::ceil(h * scale));
  const auto src = read_region(x, y, level, src_w, src_h).permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat32);
  namespace F = torch::nn::functional;
  const auto mode = scale > 1 ? torch::enumtype::kArea() : F::InterpolateFuncOptions::mode_t(torch::kBilinear);
  auto opts = F::InterpolateFuncOptions().size(std::vector<int64_t>{h, w}).mode(mode);
  if (scale <= 1) opts.align_corners(false);
  return F::interpolate(src, opts).squeeze(0).permute({1, 2, 0}).round().clamp(0, 255).to(torch::kUInt8).contiguous();
}

torch::Tensor SlideReader::read_level(int level) const {
  TESSERA_CHECK(level >= 0 && level < level_count(), "slide '", path_, "' has levels 0..", level_count() - 1);
  const auto& lv = levels_[level];
  return read_region(0, 0, level, lv.width, lv.height);
}

SlideReaderPtr open_slide(const std::string& path, const std::string& backend) {
  TESSERA_CHECK(std::filesystem::exists(path), "slide '", path, "' does not exist; check the path (and the manifest)");
  TESSERA_CHECK(std::filesystem::is_regular_file(path), "slide '", path, "' is not a file",
                " (MRXS: pass the .mrxs file, not its folder)");
  TESSERA_CHECK(backend == "auto" || backend == "openslide" || backend == "vips", "unknown slide backend '", backend,
                "'; use auto, openslide or vips");
  if (backend == "vips") return detail::open_vips(path);
  if (auto reader = detail::open_openslide(path, backend == "openslide")) return reader;
  return detail::open_vips(path);
}

std::string describe(const SlideReader& s) {
  std::string out = fmt::format("file      {}\nbackend   {}\nvendor    {}\n", s.path(), s.backend(), s.vendor());
  const auto& l0 = s.levels().front();
  out += fmt::format("size      {} x {} px ({:.2f} gigapixels)\n", l0.width, l0.height, l0.width * 1e-9 * l0.height);
  out += s.mpp() > 0 ? fmt::format("mpp       {:.4f} um/px\n", s.mpp()) : std::string("mpp       unknown\n");
  out += fmt::format("levels    {}\n", s.level_count());
  for (int l = 0; l < s.level_count(); ++l) {
    const auto& lv = s.levels()[l];
    out += fmt::format("  {:>2}  {:>7} x {:<7}  downsample {:.3f}\n", l, lv.width, lv.height, lv.downsample);
  }
  return out;
}

}  // namespace tessera::slides
