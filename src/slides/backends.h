// The two slide back-ends behind open_slide(); internal to src/slides.
#pragma once
#include "tessera/slides/reader.h"

namespace tessera::slides::detail {

// nullptr when OpenSlide does not recognise the file (so libvips may try).
SlideReaderPtr open_openslide(const std::string& path, bool required);
SlideReaderPtr open_vips(const std::string& path);

// OpenSlide-style premultiplied BGRA (h, w, 4) uint8 -> RGB (h, w, 3) composited onto white.
torch::Tensor premultiplied_bgra_to_rgb(const torch::Tensor& bgra);

}  // namespace tessera::slides::detail
