// Whole-slide image reading: one interface, two back-ends. OpenSlide reads every OpenSlide format
// (SVS, NDPI, MRXS, SCN, generic tiled TIFF, ...); libvips reads tiled/pyramidal TIFF and BigTIFF and
// ordinary PNG/JPEG/TIFF images of any size. Readers are immutable after opening and safe to call from
// several threads at once.
#pragma once
#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

namespace tessera::slides {

struct SlideLevel {
  int64_t width = 0, height = 0;
  double downsample = 1;  // level-0 pixels per pixel of this level
};

class SlideReader {
 public:
  virtual ~SlideReader() = default;
  virtual std::string backend() const = 0;  // openslide | vips
  // RGB region (h, w, 3) uint8 of `level`, top-left (x, y) in level-0 pixels (OpenSlide's convention).
  // Outside the slide, and transparent areas, read as white.
  virtual torch::Tensor read_region(int64_t x, int64_t y, int level, int64_t w, int64_t h) const = 0;

  const std::string& path() const { return path_; }
  const std::string& vendor() const { return vendor_; }
  const std::vector<SlideLevel>& levels() const { return levels_; }
  int level_count() const { return static_cast<int>(levels_.size()); }
  double mpp() const { return mpp_; }  // level-0 micrometres per pixel; 0 when the file does not say

  // The coarsest level whose downsample does not exceed `downsample` (level 0 if none does).
  int level_for_downsample(double downsample) const;
  // A region of w x h pixels at `mpp` micrometres per pixel: read from the nearest finer level and
  // resampled (area average). Needs a slide that states its resolution.
  torch::Tensor read_region_mpp(int64_t x, int64_t y, double mpp, int64_t w, int64_t h) const;
  // The whole of `level` (h, w, 3) uint8: for low-resolution levels (thumbnails, tissue masks).
  torch::Tensor read_level(int level) const;

 protected:
  std::string path_, vendor_;
  std::vector<SlideLevel> levels_;
  double mpp_ = 0;
};
using SlideReaderPtr = std::shared_ptr<const SlideReader>;

// backend: auto (OpenSlide when it recognises the file, else libvips) | openslide | vips.
// Errors name the file and what to do (missing, unsupported, corrupt).
SlideReaderPtr open_slide(const std::string& path, const std::string& backend = "auto");

// One-line-per-field description: backend, vendor, dimensions, mpp, levels.
std::string describe(const SlideReader& slide);

}  // namespace tessera::slides
