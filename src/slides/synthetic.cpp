#include "tessera/slides/synthetic.h"

#include <torch/torch.h>
#include <vips/vips8>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/data/idx.h"
#include "tessera/data/image_io.h"
#include "tessera/data/vips_buffer.h"
#include "vips_tiff.h"

namespace tessera::slides {
namespace {

using vips::VImage;
constexpr int64_t kTextureTile = kTextureSide;

using detail::image_from_tensor;

torch::Tensor smooth_noise(int64_t side, int64_t cells, torch::Generator& gen) {
  const auto coarse = torch::rand({1, 1, cells, cells}, gen);
  namespace F = torch::nn::functional;
  return F::interpolate(coarse, F::InterpolateFuncOptions()
                                    .size(std::vector<int64_t>{side, side})
                                    .mode(torch::kBilinear)
                                    .align_corners(false))
      .view({side, side, 1});
}

// H&E-like texture: pink stroma with colour drift and purple nuclei dots. (T, T, 3) uint8.
torch::Tensor tissue_texture(torch::Generator& gen) {
  const int64_t T = kTextureTile;
  const auto drift = smooth_noise(T, 16, gen);
  auto rgb = torch::tensor({226.f, 150.f, 196.f}).view({1, 1, 3}) + (drift - 0.5f) * torch::tensor({24.f, 40.f, 24.f});
  auto nuclei = (torch::rand({T / 8, T / 8}, gen) < 0.18).to(torch::kFloat32).view({1, 1, T / 8, T / 8});
  namespace F = torch::nn::functional;
  nuclei = F::interpolate(nuclei, F::InterpolateFuncOptions().scale_factor(std::vector<double>{8, 8}).mode(torch::kNearest))
               .view({T, T, 1});
  nuclei = nuclei * (smooth_noise(T, 64, gen) > 0.35).to(torch::kFloat32);  // ragged nucleus shapes
  const auto purple = torch::tensor({118.f, 64.f, 156.f}).view({1, 1, 3});
  rgb = rgb * (1 - nuclei) + purple * nuclei;
  rgb = rgb + (torch::rand({T, T, 1}, gen) - 0.5f) * 10;
  return rgb.round().clamp(0, 255).to(torch::kUInt8);
}

torch::Tensor glass_texture(torch::Generator& gen) {
  const int64_t T = kTextureTile;
  const auto noise = (torch::rand({T, T, 1}, gen) - 0.5f) * 4;
  return (torch::tensor({243.f, 242.f, 245.f}).view({1, 1, 3}) + noise).round().clamp(0, 255).to(torch::kUInt8);
}

struct Ellipse {
  double cx, cy, rx, ry, angle;
};

std::vector<Ellipse> ellipses(const SyntheticSlideOptions& o) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed * 2654435761ULL + 17);
  const auto u = torch::rand({o.tissue_blobs, 5}, gen);
  const double side = static_cast<double>(std::min(o.width, o.height));
  std::vector<Ellipse> out;
  for (int64_t i = 0; i < o.tissue_blobs; ++i) {
    const auto r = u[i];
    Ellipse e;
    e.cx = (0.25 + 0.5 * r[0].item<double>()) * o.width;
    e.cy = (0.25 + 0.5 * r[1].item<double>()) * o.height;
    e.rx = (0.4 + 0.6 * r[2].item<double>()) * o.tissue_size * side;
    e.ry = (0.4 + 0.6 * r[3].item<double>()) * o.tissue_size * side;
    e.angle = r[4].item<double>() * M_PI;
    out.push_back(e);
  }
  return out;
}

void check_options(const SyntheticSlideOptions& o) {
  TESSERA_CHECK(o.width >= kTissueCell && o.height >= kTissueCell, "synthetic slide must be at least ", kTissueCell,
                " px on each side, got ", o.width, "x", o.height);
  TESSERA_CHECK(o.compression == "deflate" || o.compression == "jpeg" || o.compression == "none",
                "unknown compression '", o.compression, "'; use deflate, jpeg or none");
  TESSERA_CHECK(o.mpp > 0 && o.digit_scale > 0 && o.tile >= 16, "synthetic slide: mpp, digit scale and tile must be positive");
}

struct Scene {
  VImage image;
  std::vector<DigitBox> boxes;
};

Scene render(const SyntheticSlideOptions& o, const data::MnistDigits* digits) {
  check_options(o);
  data::init_vips();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.seed * 40503ULL + 1);
  const auto tissue_tile = tissue_texture(gen);
  const auto glass_tile = glass_texture(gen);
  const auto mask = synthetic_tissue_mask(o);
  const int64_t W = o.width, H = o.height;
  const auto tiles = [&](const torch::Tensor& tile) {
    const int across = static_cast<int>((W + kTextureTile - 1) / kTextureTile);
    const int down = static_cast<int>((H + kTextureTile - 1) / kTextureTile);
    return image_from_tensor(tile).replicate(across, down).crop(0, 0, static_cast<int>(W), static_cast<int>(H));
  };
  const auto mask_bytes = (mask.to(torch::kUInt8) * 255).unsqueeze(-1);
  const VImage mask_image = image_from_tensor(mask_bytes)
                                .zoom(static_cast<int>(kTissueCell), static_cast<int>(kTissueCell))
                                .crop(0, 0, static_cast<int>(W), static_cast<int>(H));
  Scene scene{mask_image.ifthenelse(tiles(tissue_tile), tiles(glass_tile)), {}};

  if (o.digits > 0) {
    TESSERA_CHECK(digits && digits->images.size(0) > 0, "synthetic slide with digits needs MNIST digits (data.mnist_dir)");
    const int64_t side = 28 * o.digit_scale, cells = (side + kTissueCell - 1) / kTissueCell + 1;
    const auto ink = torch::tensor({kDigitInk[0], kDigitInk[1], kDigitInk[2]}).view({1, 1, 3});
    for (int64_t d = 0, tries = 0; d < o.digits && tries < 1000 * o.digits; ++tries) {
      // A random spot whose whole footprint (plus a cell of margin) is tissue.
      const int64_t cy = torch::randint(0, mask.size(0), {1}, gen).item<int64_t>();
      const int64_t cx = torch::randint(0, mask.size(1), {1}, gen).item<int64_t>();
      if (cy + cells > mask.size(0) || cx + cells > mask.size(1)) continue;
      if (!mask.slice(0, cy, cy + cells).slice(1, cx, cx + cells).all().item<bool>()) continue;
      const int64_t x = cx * kTissueCell + torch::randint(0, kTissueCell / 2, {1}, gen).item<int64_t>();
      const int64_t y = cy * kTissueCell + torch::randint(0, kTissueCell / 2, {1}, gen).item<int64_t>();
      const int64_t pick = torch::randint(0, digits->images.size(0), {1}, gen).item<int64_t>();
      auto alpha = digits->images[pick].to(torch::kFloat32).div(255).view({1, 1, 28, 28});
      namespace F = torch::nn::functional;
      alpha = F::interpolate(alpha, F::InterpolateFuncOptions()
                                        .scale_factor(std::vector<double>{double(o.digit_scale), double(o.digit_scale)})
                                        .mode(torch::kNearest))
                  .view({side, side, 1});
      // The tissue texture under the digit, then the ink blended over it.
      const auto ys = torch::arange(y, y + side).remainder(kTextureTile);
      const auto xs = torch::arange(x, x + side).remainder(kTextureTile);
      const auto base = tissue_tile.index_select(0, ys).index_select(1, xs).to(torch::kFloat32);
      const auto blended = (base * (1 - alpha) + ink * alpha).round().clamp(0, 255).to(torch::kUInt8);
      scene.image = scene.image.insert(image_from_tensor(blended), static_cast<int>(x), static_cast<int>(y));
      scene.boxes.push_back({x, y, side, digits->labels[pick].item<int64_t>()});
      ++d;
    }
    TESSERA_CHECK(static_cast<int64_t>(scene.boxes.size()) == o.digits, "could place only ", scene.boxes.size(), " of ",
                  o.digits, " digits inside the tissue; use fewer digits or more tissue");
  }
  return scene;
}

}  // namespace

torch::Tensor synthetic_tissue_texture(uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return tissue_texture(gen);
}

torch::Tensor synthetic_tissue_mask(const SyntheticSlideOptions& o) {
  check_options(o);
  const int64_t rows = (o.height + kTissueCell - 1) / kTissueCell, cols = (o.width + kTissueCell - 1) / kTissueCell;
  const auto yy = (torch::arange(rows, torch::kFloat64) + 0.5).mul(kTissueCell).view({rows, 1});
  const auto xx = (torch::arange(cols, torch::kFloat64) + 0.5).mul(kTissueCell).view({1, cols});
  auto mask = torch::zeros({rows, cols}, torch::kBool);
  for (const auto& e : ellipses(o)) {
    const auto dx = xx - e.cx, dy = yy - e.cy;
    const auto u = (dx * std::cos(e.angle) + dy * std::sin(e.angle)) / e.rx;
    const auto v = (-dx * std::sin(e.angle) + dy * std::cos(e.angle)) / e.ry;
    mask |= (u * u + v * v) <= 1;
  }
  return mask;
}

torch::Tensor synthetic_region(const SyntheticSlideOptions& o, const data::MnistDigits* digits, int64_t x, int64_t y,
                               int64_t w, int64_t h) {
  const auto scene = render(o, digits);
  size_t size = 0;
  const auto mem = data::write_to_memory(
      scene.image.crop(static_cast<int>(x), static_cast<int>(y), static_cast<int>(w), static_cast<int>(h)), &size);
  return torch::from_blob(mem.get(), {h, w, 3}, torch::kUInt8).clone();
}

std::vector<DigitBox> write_synthetic_slide(const std::string& path, const SyntheticSlideOptions& o,
                                            const data::MnistDigits* digits) {
  auto scene = render(o, digits);
  detail::write_pyramidal_tiff(scene.image, path, {o.tile, o.mpp, o.compression, o.quality}, "synthetic slide");
  return scene.boxes;
}

}  // namespace tessera::slides
