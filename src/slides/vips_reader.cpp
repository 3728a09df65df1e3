#include <torch/torch.h>
#include <vips/vips8>

#include <cstring>

#include "backends.h"
#include "tessera/core/error.h"
#include "tessera/data/image_io.h"
#include "tessera/data/vips_load.h"

namespace tessera::slides::detail {
namespace {

using vips::VImage;

// Any band layout -> 3-band uchar RGB, transparent areas composited onto white.
VImage to_rgb(VImage img) {
  if (img.has_alpha()) img = img.flatten(VImage::option()->set("background", std::vector<double>{255, 255, 255}));
  if (img.bands() == 1) img = img.bandjoin({img, img});
  if (img.bands() > 3) img = img.extract_band(0, VImage::option()->set("n", 3));
  return img.format() == VIPS_FORMAT_UCHAR ? img : img.cast(VIPS_FORMAT_UCHAR);
}

// Micrometres per pixel from the file's resolution when it states a unit (libvips keeps pixels/mm).
double find_mpp(const VImage& img) {
  if (img.get_typeof("resolution-unit") == 0) return 0;
  const double px_per_mm = img.xres();
  return px_per_mm > 0 ? 1000.0 / px_per_mm : 0;
}

class VipsReader final : public SlideReader {
 public:
  explicit VipsReader(const std::string& path) {
    path_ = path;
    VImage base = data::load_image(path, VImage::option()->set("access", VIPS_ACCESS_RANDOM));
    vendor_ = base.get_typeof("vips-loader") ? base.get_string("vips-loader") : "vips";
    mpp_ = find_mpp(base);
    add_level(base);
    // A pyramidal TIFF keeps its levels as pages of falling size.
    const int pages = base.get_typeof("n-pages") ? base.get_int("n-pages") : 1;
    const bool tiff = vendor_.rfind("tiffload", 0) == 0;
    for (int page = 1; tiff && page < pages; ++page) {
      VImage p = data::load_image(path, VImage::option()->set("page", page)->set("access", VIPS_ACCESS_RANDOM));
      if (p.width() >= levels_.back().width) continue;
      add_level(p);
    }
    // Flat images get virtual levels (lazy box shrinks) so masks and thumbnails stay cheap to request.
    if (levels_.size() == 1) {
      for (double f = 4; std::max(levels_.back().width, levels_.back().height) > 2048; f *= 4) {
        add_level(images_.front().shrink(f, f));
      }
    }
  }

  std::string backend() const override { return "vips"; }

  torch::Tensor read_region(int64_t x, int64_t y, int level, int64_t w, int64_t h) const override {
    TESSERA_CHECK(level >= 0 && level < level_count(), "slide '", path_, "' has levels 0..", level_count() - 1,
                  ", not ", level);
    TESSERA_CHECK(w > 0 && h > 0, "region size must be positive, got ", w, "x", h);
    const auto& lv = levels_[level];
    const int64_t lx = static_cast<int64_t>(std::floor(x / lv.downsample));
    const int64_t ly = static_cast<int64_t>(std::floor(y / lv.downsample));
    auto out = torch::full({h, w, 3}, 255, torch::kUInt8);
    // The part of the request inside the level; the rest stays white.
    const int64_t x0 = std::max<int64_t>(lx, 0), y0 = std::max<int64_t>(ly, 0);
    const int64_t x1 = std::min(lx + w, lv.width), y1 = std::min(ly + h, lv.height);
    if (x1 <= x0 || y1 <= y0) return out;
    try {
      // A region per call: regions are per-thread, the image pipeline underneath is shared and thread-safe.
      auto region = vips::VRegion::new_from_image(images_[level]);
      region.prepare(static_cast<int>(x0), static_cast<int>(y0), static_cast<int>(x1 - x0), static_cast<int>(y1 - y0));
      VipsRegion* r = region.get_region();
      const size_t row_bytes = static_cast<size_t>(x1 - x0) * 3;
      auto* dst = out.data_ptr<uint8_t>();
      for (int64_t row = y0; row < y1; ++row) {
        const auto* src = VIPS_REGION_ADDR(r, static_cast<int>(x0), static_cast<int>(row));
        std::memcpy(dst + ((row - ly) * w + (x0 - lx)) * 3, src, row_bytes);
      }
    } catch (const vips::VError& e) {
      fail("cannot read slide '", path_, "' at (", x, ", ", y, ") level ", level, ": ",
           std::string(e.what()).substr(0, 200), "; the file is corrupt or truncated");
    }
    return out;
  }

 private:
  void add_level(VImage img) {
    SlideLevel level;
    level.width = img.width();
    level.height = img.height();
    level.downsample = levels_.empty() ? 1.0 : static_cast<double>(levels_.front().width) / level.width;
    levels_.push_back(level);
    images_.push_back(to_rgb(img));
  }

  std::vector<VImage> images_;
};

}  // namespace

SlideReaderPtr open_vips(const std::string& path) {
  data::init_vips();
  try {
    return std::make_shared<VipsReader>(path);
  } catch (const vips::VError& e) {
    fail("cannot open '", path, "' as an image: ", std::string(e.what()).substr(0, 200),
         "; tessera reads OpenSlide formats, TIFF, PNG and JPEG (is the file complete?)");
  }
}

}  // namespace tessera::slides::detail
