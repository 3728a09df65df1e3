#include <openslide/openslide.h>
#include <torch/torch.h>

#include <cstdlib>

#include "backends.h"
#include "tessera/core/error.h"

namespace tessera::slides::detail {
namespace {

std::string property(openslide_t* osr, const char* name) {
  const char* v = openslide_get_property_value(osr, name);
  return v ? v : "";
}

// openslide.mpp-x when the vendor states it; else the TIFF resolution tags (generic TIFF).
double find_mpp(openslide_t* osr) {
  if (const auto mpp = property(osr, OPENSLIDE_PROPERTY_NAME_MPP_X); !mpp.empty()) return std::atof(mpp.c_str());
  const auto xres = property(osr, "tiff.XResolution"), unit = property(osr, "tiff.ResolutionUnit");
  const double r = xres.empty() ? 0 : std::atof(xres.c_str());
  if (r <= 0) return 0;
  if (unit == "centimeter") return 1e4 / r;
  if (unit == "inch") return 25400.0 / r;
  return 0;
}

class OpenSlideReader final : public SlideReader {
 public:
  OpenSlideReader(const std::string& path, openslide_t* osr) : osr_(osr) {
    path_ = path;
    vendor_ = property(osr, OPENSLIDE_PROPERTY_NAME_VENDOR);
    const int32_t n = openslide_get_level_count(osr);
    for (int32_t l = 0; l < n; ++l) {
      SlideLevel level;
      openslide_get_level_dimensions(osr, l, &level.width, &level.height);
      level.downsample = openslide_get_level_downsample(osr, l);
      levels_.push_back(level);
    }
    mpp_ = find_mpp(osr);
  }
  ~OpenSlideReader() override { openslide_close(osr_); }

  std::string backend() const override { return "openslide"; }

  torch::Tensor read_region(int64_t x, int64_t y, int level, int64_t w, int64_t h) const override {
    TESSERA_CHECK(level >= 0 && level < level_count(), "slide '", path_, "' has levels 0..", level_count() - 1,
                  ", not ", level);
    TESSERA_CHECK(w > 0 && h > 0, "region size must be positive, got ", w, "x", h);
    auto bgra = torch::empty({h, w, 4}, torch::kUInt8);
    // OpenSlide handles are thread-safe: concurrent reads share its tile cache.
    openslide_read_region(osr_, reinterpret_cast<uint32_t*>(bgra.data_ptr()), x, y, level, w, h);
    if (const char* err = openslide_get_error(osr_)) {
      fail("cannot read slide '", path_, "' at (", x, ", ", y, ") level ", level, ": ", err,
           "; the file is corrupt or truncated");
    }
    return premultiplied_bgra_to_rgb(bgra);
  }

 private:
  openslide_t* osr_;
};

}  // namespace

torch::Tensor premultiplied_bgra_to_rgb(const torch::Tensor& bgra) {
  // OpenSlide stores native-endian ARGB words: bytes B, G, R, A on little-endian machines.
  const auto rgb = bgra.index({torch::indexing::Ellipsis, torch::tensor({2, 1, 0})});
  const auto alpha = bgra.select(-1, 3);
  if (alpha.min().item<uint8_t>() == 255) return rgb;
  // Premultiplied colour over white: c + (255 - a).
  return (rgb.to(torch::kInt16) + (255 - alpha.to(torch::kInt16)).unsqueeze(-1)).clamp(0, 255).to(torch::kUInt8);
}

SlideReaderPtr open_openslide(const std::string& path, bool required) {
  const char* vendor = openslide_detect_vendor(path.c_str());
  if (!vendor) {
    TESSERA_CHECK(!required, "OpenSlide does not recognise '", path,
                  "'; it reads SVS, NDPI, MRXS, SCN, VMS, BIF and tiled TIFF (use the vips backend, slide.backend vips, for others)");
    return nullptr;
  }
  // OpenSlide 3.4 decodes non-JPEG generic-TIFF tiles with libtiff's TIFFReadRGBATile, which shifts
  // partial edge tiles (seen here as white bands on the smaller levels); libvips reads them right, so
  // auto leaves plain tiled TIFFs to it. The openslide backend still forces OpenSlide.
  if (!required && std::string(vendor) == "generic-tiff") return nullptr;
  openslide_t* osr = openslide_open(path.c_str());
  TESSERA_CHECK(osr, "OpenSlide cannot open '", path, "' (", vendor, "); is the file complete?");
  if (const char* err = openslide_get_error(osr)) {
    const std::string message = err;
    openslide_close(osr);
    fail("cannot open slide '", path, "': ", message, "; the file is corrupt or truncated");
  }
  return std::make_shared<OpenSlideReader>(path, osr);
}

}  // namespace tessera::slides::detail
