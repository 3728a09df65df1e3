#include "tessera/data/image_io.h"

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>

#ifdef TESSERA_WITH_VIPS
#include <vips/vips8>

#include "tessera/data/vips_buffer.h"
#include "tessera/data/vips_load.h"
#endif
#ifdef TESSERA_WITH_SLIDES
#include <openslide/openslide.h>
#endif

#include "tessera/core/error.h"
#include "tessera/core/pickle.h"

namespace tessera::data {
namespace {

bool has_suffix(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

#ifdef TESSERA_WITH_VIPS
namespace {
std::atomic<bool> vips_started{false};
// A whole image decoded into memory at most (1 Gpixel: 3 GiB of RGB bytes, 12 GiB as float); larger ones
// are slides, read by region.
constexpr int64_t kMaxDecodedPixels = int64_t{1} << 30;
}  // namespace

void release_vips_thread() {
  if (vips_started) vips_thread_shutdown();
}

void init_vips() {
  static const bool ok = [] {
    if (VIPS_INIT("tessera") != 0) return false;
    vips_started = true;
    // No operation cache: tessera builds each pipeline once (slides keep their images open), and a
    // cache of loaded images would grow the process with every slide visited.
    vips_cache_set_max(0);
    return true;
  }();
  TESSERA_CHECK(ok, "libvips failed to initialise: ", vips_error_buffer());
}
#endif

#ifdef TESSERA_WITH_VIPS
namespace {
[[noreturn]] void fail_unreadable(const std::string& path, const vips::VError& e) {
  const std::string why = std::string(e.what()).substr(0, 200);
  fail("cannot read image '", path, "': ", why.empty() ? "libvips could not decode it" : why,
       "; is it a valid PNG, JPEG, TIFF or WebP file?");
}
}  // namespace

vips::VImage load_image(const std::string& path, vips::VOption* options) {
  init_vips();
  unsigned char head[12] = {0};
  {
    std::ifstream in(path, std::ios::binary);
    TESSERA_CHECK(in, "cannot open '", path, "'; check the path and its permissions");
    in.read(reinterpret_cast<char*>(head), sizeof(head));
  }
  const auto starts = [&](std::initializer_list<unsigned char> bytes, size_t at = 0) {
    return std::equal(bytes.begin(), bytes.end(), head + at);
  };
  const char* file = path.c_str();
  if (starts({0x89, 'P', 'N', 'G'})) return vips::VImage::pngload(file, options);
  if (starts({0xFF, 0xD8, 0xFF})) return vips::VImage::jpegload(file, options);
  if (starts({'I', 'I', 42, 0}) || starts({'M', 'M', 0, 42}) || starts({'I', 'I', 43, 0}) || starts({'M', 'M', 0, 43})) {
    return vips::VImage::tiffload(file, options);
  }
  if (starts({'R', 'I', 'F', 'F'}) && starts({'W', 'E', 'B', 'P'}, 8)) return vips::VImage::webpload(file, options);
#ifdef TESSERA_WITH_SLIDES
  if (openslide_detect_vendor(file) != nullptr) return vips::VImage::openslideload(file, options);
#endif
  delete options;  // the loaders own (and free) the options they are given
  fail("'", path, "' is not a PNG, JPEG, TIFF or WebP image (by its first bytes)",
#ifdef TESSERA_WITH_SLIDES
       " nor a slide OpenSlide knows",
#endif
       "; convert it to one of those");
}
#endif

torch::Tensor read_image(const std::string& path) {
  TESSERA_CHECK(std::filesystem::exists(path), "image '", path, "' does not exist");
  if (has_suffix(path, ".pt")) {
    const auto value = read_pickle(path);
    TESSERA_CHECK(value.isTensor(), "'", path, "' does not hold a tensor; save one with torch.save(tensor, path)");
    auto t = value.toTensor().to(torch::kFloat32);
    if (t.dim() == 2) t = t.unsqueeze(0);
    TESSERA_CHECK(t.dim() == 3, "tensor in '", path, "' has shape ", t.sizes(), "; expected (C, H, W) or (H, W)");
    return t;
  }
#ifdef TESSERA_WITH_VIPS
  init_vips();
  try {
    auto img = load_image(path, vips::VImage::option()->set("access", VIPS_ACCESS_SEQUENTIAL));
    // The header alone decides the decode's size: check it before a pixel is read.
    const int64_t pixels = static_cast<int64_t>(img.width()) * img.height();
    TESSERA_CHECK(pixels <= kMaxDecodedPixels && img.bands() <= 16, "image '", path, "' is ", img.width(), "x",
                  img.height(), " with ", img.bands(), " bands, more than the ", kMaxDecodedPixels,
                  " pixels (of at most 16 bands) read into memory at once; read it as a slide (tessera preprocess) "
                  "or shrink it (tessera prepare-images)");
    if (img.has_alpha()) img = img.flatten();
    img = img.cast(VIPS_FORMAT_UCHAR);
    size_t size = 0;
    const auto mem = data::write_to_memory(img, &size);
    const int64_t h = img.height(), w = img.width(), c = img.bands();
    return torch::from_blob(mem.get(), {h, w, c}, torch::kUInt8).permute({2, 0, 1}).to(torch::kFloat32).div_(255.0f);
  } catch (const vips::VError& e) {
    fail_unreadable(path, e);
  }
#else
  fail("cannot read '", path, "': this build has no libvips (TESSERA_WITH_VIPS=OFF); pass a .pt tensor instead");
#endif
}

torch::Tensor read_fit_square(const std::string& path, int64_t side, int64_t level) {
  TESSERA_CHECK(std::filesystem::exists(path), "image '", path, "' does not exist");
  TESSERA_CHECK(side > 0 && level >= 0, "fit size must be positive and level >= 0");
#ifdef TESSERA_WITH_VIPS
  init_vips();
  try {
    auto options = vips::VImage::option();
    if (level > 0) {
      const bool tiff = has_suffix(path, ".tif") || has_suffix(path, ".tiff");
      options->set(tiff ? "page" : "level", static_cast<int>(level));
    }
    auto img = load_image(path, options);
    if (img.has_alpha()) img = img.flatten(vips::VImage::option()->set("background", std::vector<double>{255, 255, 255}));
    if (img.bands() == 1) img = img.bandjoin({img, img});
    img = img.extract_band(0, vips::VImage::option()->set("n", 3)).cast(VIPS_FORMAT_UCHAR);
    const double scale = static_cast<double>(side) / std::max(img.width(), img.height());
    img = img.resize(scale);
    const int w = std::min<int>(img.width(), side), h = std::min<int>(img.height(), side);
    img = img.crop(0, 0, w, h).embed((side - w) / 2, (side - h) / 2, side, side,
                                     vips::VImage::option()->set("extend", VIPS_EXTEND_BACKGROUND)->set(
                                         "background", std::vector<double>{255, 255, 255}));
    size_t size = 0;
    const auto mem = data::write_to_memory(img, &size);
    return torch::from_blob(mem.get(), {side, side, 3}, torch::kUInt8).permute({2, 0, 1}).to(torch::kFloat32).div_(255.0f);
  } catch (const vips::VError& e) {
    fail("cannot read image '", path, "'", level > 0 ? " at level " + std::to_string(level) : std::string(), ": ",
         std::string(e.what()).substr(0, 200), "; is it a valid image or slide file?");
  }
#else
  fail("cannot read '", path, "': this build has no libvips (TESSERA_WITH_VIPS=OFF)");
#endif
}

void write_png(const std::string& path, const torch::Tensor& image) {
  TESSERA_CHECK(image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3), "write_png takes (1|3, H, W), got ",
                image.sizes());
#ifdef TESSERA_WITH_VIPS
  init_vips();
  const auto bytes = image.detach().to(torch::kCPU).clamp(0, 1).mul(255).round().to(torch::kUInt8).permute({1, 2, 0}).contiguous();
  const std::string tmp = path + ".tmp.png";
  try {
    auto img = vips::VImage::new_from_memory(bytes.data_ptr(), bytes.numel(), static_cast<int>(bytes.size(1)),
                                             static_cast<int>(bytes.size(0)), static_cast<int>(bytes.size(2)),
                                             VIPS_FORMAT_UCHAR);
    img.pngsave(tmp.c_str());
  } catch (const vips::VError& e) {
    fail("cannot write PNG '", path, "': ", e.what());
  }
  TESSERA_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot move '", tmp, "' onto '", path, "'");
#else
  fail("cannot write '", path, "': this build has no libvips (TESSERA_WITH_VIPS=OFF)");
#endif
}

torch::Tensor conform_image(torch::Tensor image, int64_t channels, int64_t height, int64_t width, const std::string& what) {
  TESSERA_CHECK(image.dim() == 3, what, " has shape ", image.sizes(), "; expected (C, H, W)");
  if (image.size(0) == 4 || (image.size(0) == 2 && channels == 1)) image = image.slice(0, 0, image.size(0) - 1);
  if (image.size(0) == 1 && channels == 3) image = image.expand({3, -1, -1}).contiguous();
  TESSERA_CHECK(image.size(0) == channels, what, " has ", image.size(0), " channels but the model expects ", channels,
                "; convert it (e.g. to ", channels == 1 ? "greyscale" : "RGB", ") first");
  TESSERA_CHECK((height <= 0 || image.size(1) == height) && (width <= 0 || image.size(2) == width), what, " is ",
                image.size(1), "x", image.size(2), " but the run expects ", height, "x", width,
                " (data.height x data.width); resize it (tessera prepare-images)");
  return image.to(torch::kFloat32);
}

ImageHeader read_image_header(const std::string& path) {
  TESSERA_CHECK(std::filesystem::exists(path), "image '", path, "' does not exist");
  if (has_suffix(path, ".pt")) {
    const auto t = read_image(path);  // tensors are read whole: their header is the pickle
    return {t.size(0), t.size(1), t.size(2)};
  }
#ifdef TESSERA_WITH_VIPS
  init_vips();
  try {
    auto img = load_image(path, nullptr);  // libvips reads the header; no pixel is decoded
    return {img.bands(), img.height(), img.width()};
  } catch (const vips::VError& e) {
    fail_unreadable(path, e);
  }
#else
  fail("cannot read '", path, "': this build has no libvips (TESSERA_WITH_VIPS=OFF); pass a .pt tensor instead");
#endif
}

void check_image_header(const ImageHeader& header, int64_t channels, int64_t height, int64_t width, const std::string& what) {
  conform_image(torch::empty({header.channels, 0, 0}), channels, 0, 0, what);  // the same channel rules
  TESSERA_CHECK((height <= 0 || header.height == height) && (width <= 0 || header.width == width), what, " is ",
                header.height, "x", header.width, " but the run expects ", height, "x", width,
                " (data.height x data.width); resize it (tessera prepare-images)");
}

}  // namespace tessera::data
