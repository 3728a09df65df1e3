// Image files in and out: PNG/JPEG/TIFF through libvips (when built with it), and tensors saved with
// torch.save (.pt) for exact inputs.
#pragma once
#include <torch/types.h>

#include <string>

namespace tessera::data {

// -> (C, H, W) float in [0, 1] (8-bit files) or the tensor as saved (.pt). Errors name the file.
torch::Tensor read_image(const std::string& path);
// Reads an image (any libvips format; level > 0 picks a pyramid level of a TIFF or slide), shrinks it to
// fit side x side keeping its aspect ratio, and pads it centred with white: (3, side, side) in [0, 1].
// The PANDA preprocessing of the PatchGD reference.
torch::Tensor read_fit_square(const std::string& path, int64_t side, int64_t level = 0);

#ifdef TESSERA_WITH_VIPS
// Starts libvips once per process (thread-safe); every libvips user calls it first.
void init_vips();
// Frees libvips' buffers for the calling thread (threads libvips did not create leak them otherwise);
// call at the end of worker threads that may have used libvips. No-op before init_vips().
void release_vips_thread();
#endif

// Makes an image read from `path` fit a model's input: an alpha channel is dropped and grey is
// replicated to 3 channels when `channels` is 3; then channel count and size (when height, width > 0)
// must match, or the error names the image (`what`, e.g. "image 'a.png'") and the fix.
torch::Tensor conform_image(torch::Tensor image, int64_t channels, int64_t height, int64_t width, const std::string& what);

// An image file's channels and size from its header (nothing decoded; .pt tensors are read whole).
struct ImageHeader {
  int64_t channels = 0, height = 0, width = 0;
};
ImageHeader read_image_header(const std::string& path);
// conform_image's checks on a header: the image would fit a model of these channels and size.
void check_image_header(const ImageHeader& header, int64_t channels, int64_t height, int64_t width, const std::string& what);

// image (C, H, W) float in [0, 1], C = 1 or 3 -> 8-bit PNG (written atomically).
void write_png(const std::string& path, const torch::Tensor& image);

}  // namespace tessera::data
