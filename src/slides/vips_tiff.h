// libvips plumbing shared by the slide writers (synthetic slides, heatmap overlays); internal to src/slides.
#pragma once
#include <torch/types.h>
#include <vips/vips8>

#include <string>

namespace tessera::slides::detail {

// (h, w, c) uint8 tensor -> an image owning a copy of the pixels.
vips::VImage image_from_tensor(const torch::Tensor& hwc);

struct PyramidalTiffOptions {
  int64_t tile = 256;
  double mpp = 0;                       // > 0: stored as the resolution
  std::string compression = "deflate";  // deflate | jpeg | none
  int64_t quality = 85;                 // JPEG
};

// Writes a tiled pyramidal BigTIFF under a temporary name and renames it into place; libvips renders
// the image tile by tile as it writes. `what` names the file in errors.
void write_pyramidal_tiff(const vips::VImage& image, const std::string& path, const PyramidalTiffOptions& options,
                          const std::string& what);

}  // namespace tessera::slides::detail
