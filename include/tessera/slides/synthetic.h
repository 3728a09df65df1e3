// Synthetic whole-slide images for tests, demos and benchmarks: tissue-like textured blobs on empty
// glass, optionally with MNIST digits inside the tissue (the "tumour" a slide-level label refers to),
// written as tiled pyramidal (Big)TIFF through libvips. Rendering streams tile by tile, so sizes from
// a few megapixels to 16+ gigapixels take constant memory.
#pragma once
#include <torch/types.h>

#include <string>
#include <vector>

namespace tessera::data {
struct MnistDigits;
}

namespace tessera::slides {

struct SyntheticSlideOptions {
  int64_t width = 8192, height = 8192;
  double mpp = 0.5;          // stated resolution, micrometres per level-0 pixel
  int64_t tissue_blobs = 3;  // tissue ellipses
  double tissue_size = 0.3;  // largest ellipse radius relative to the shorter side
  int64_t digits = 0;        // MNIST digits pasted inside the tissue
  int64_t digit_scale = 3;   // nearest-neighbour upscaling of the 28 x 28 digits
  std::string compression = "deflate";  // deflate (lossless) | jpeg | none
  int64_t quality = 85;      // JPEG quality
  int64_t tile = 256;
  uint64_t seed = 0;
};

// Tissue is constant on cells of this many level-0 pixels; the ground-truth mask has one value per cell.
constexpr int64_t kTissueCell = 64;

struct DigitBox {
  int64_t x = 0, y = 0, size = 0;  // level-0 top-left and side
  int64_t digit = 0;
};

// Ground truth: tissue mask (ceil(H / cell), ceil(W / cell)) bool.
torch::Tensor synthetic_tissue_mask(const SyntheticSlideOptions& options);
// Level-0 pixels (h, w, 3) uint8 of a region, exactly as written (before lossy compression).
torch::Tensor synthetic_region(const SyntheticSlideOptions& options, const data::MnistDigits* digits, int64_t x,
                               int64_t y, int64_t w, int64_t h);
// The tissue texture make-slides tiles its tissue with, drawn from `seed`: (kTextureSide, kTextureSide, 3)
// uint8, pink stroma with colour drift and purple nuclei; it repeats seamlessly.
constexpr int64_t kTextureSide = 512;
torch::Tensor synthetic_tissue_texture(uint64_t seed);
// The RGB colour of make-slides' digit ink, blended over the tissue by the digit's grey value.
inline constexpr float kDigitInk[3] = {62.f, 24.f, 104.f};

// Writes the slide (atomically) and returns where the digits went. digits may be null when options.digits = 0.
std::vector<DigitBox> write_synthetic_slide(const std::string& path, const SyntheticSlideOptions& options,
                                            const data::MnistDigits* digits);

}  // namespace tessera::slides
