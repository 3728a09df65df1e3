#include "vips_tiff.h"

#include <glib.h>

#include <cstdio>
#include <cstring>

#include "tessera/core/error.h"
#include "tessera/data/image_io.h"

namespace tessera::slides::detail {

vips::VImage image_from_tensor(const torch::Tensor& hwc) {
  data::init_vips();
  const auto t = hwc.contiguous();
  void* copy = g_malloc(t.numel());
  std::memcpy(copy, t.data_ptr(), t.numel());
  return vips::VImage::new_from_memory_steal(copy, t.numel(), static_cast<int>(t.size(1)), static_cast<int>(t.size(0)),
                                             static_cast<int>(t.size(2)), VIPS_FORMAT_UCHAR);
}

void write_pyramidal_tiff(const vips::VImage& image, const std::string& path, const PyramidalTiffOptions& o,
                          const std::string& what) {
  const std::string tmp = path + ".tmp.tif";
  try {
    auto opts = vips::VImage::option()
                    ->set("tile", true)
                    ->set("tile_width", static_cast<int>(o.tile))
                    ->set("tile_height", static_cast<int>(o.tile))
                    ->set("pyramid", true)
                    ->set("bigtiff", true);
    if (o.mpp > 0) {  // libvips takes pixels per millimetre
      opts->set("xres", 1000.0 / o.mpp)->set("yres", 1000.0 / o.mpp)->set("resunit", VIPS_FOREIGN_TIFF_RESUNIT_CM);
    }
    if (o.compression == "jpeg") {
      opts->set("compression", VIPS_FOREIGN_TIFF_COMPRESSION_JPEG)->set("Q", static_cast<int>(o.quality));
    } else if (o.compression == "deflate") {
      opts->set("compression", VIPS_FOREIGN_TIFF_COMPRESSION_DEFLATE);
    }
    image.tiffsave(tmp.c_str(), opts);
  } catch (const vips::VError& e) {
    std::remove(tmp.c_str());
    fail("cannot write ", what, " '", path, "': ", std::string(e.what()).substr(0, 200));
  }
  TESSERA_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot move '", tmp, "' onto '", path, "'");
}

}  // namespace tessera::slides::detail
