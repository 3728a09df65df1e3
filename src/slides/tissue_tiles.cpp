#include "tessera/slides/tissue_tiles.h"

#include <torch/torch.h>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/data/csv_images.h"
#include "tessera/data/random.h"
#include "tessera/slides/synthetic.h"

namespace tessera::slides {
namespace {
// Texture seeds of their own: make-slides seeds a slide's generator with seed * 40503 + 1.
uint64_t texture_seed(int64_t seed, int64_t k) { return data::mix(0x7153u + static_cast<uint64_t>(seed) * 977u + k); }
}  // namespace

TissueTiles::TissueTiles(std::shared_ptr<const data::MnistDigits> digits, TissueTilesOptions options)
    : digits_(std::move(digits)), options_(std::move(options)) {
  const auto& o = options_;
  TESSERA_CHECK(o.tile >= 16 && o.tile <= 4096, "tissue_tiles: data.height (the tile side) must be in [16, 4096], got ",
                o.tile);
  TESSERA_CHECK(o.downsample >= 1 && o.downsample <= 64 && o.tile * o.downsample <= 8192,
                "tissue_tiles: slide.level gives ", o.downsample, " level-0 pixels per pixel; tiles of ", o.tile,
                " px need tile x 2^level <= 8192");
  TESSERA_CHECK(o.digit_size >= 8 && o.digit_size <= o.tile * o.downsample,
                "tissue_tiles: data.digit_size (level-0 pixels) must be in [8, ", o.tile * o.downsample,
                "] (the tile at level 0), got ", o.digit_size);
  TESSERA_CHECK(o.textures >= 1 && o.textures <= 64, "tissue_tiles: textures must be in [1, 64]");
  TESSERA_CHECK(o.size >= 0, "data set size must be >= 0");
  TESSERA_CHECK(o.normalization.empty() || o.normalization.mean.size() == 3,
                "tissue_tiles: data.mean and data.std need 3 values (RGB)");
  for (int64_t d = 0; d < 10; ++d) {
    TESSERA_CHECK(!digits_->by_class[d].empty(), "the MNIST digits have no '", d, "'; regenerate them with scripts/get-mnist.sh");
  }
  for (int64_t k = 0; k < o.textures; ++k) {
    textures_.push_back(synthetic_tissue_texture(texture_seed(o.seed, k)).to(torch::kFloat32));
  }
}

std::vector<Task> TissueTiles::tasks() const { return {{"digit", "softmax", 11}}; }

TissueTileLayout TissueTiles::layout(int64_t index) const {
  TESSERA_CHECK(index >= 0 && index < options_.size, "sample index ", index, " out of range [0, ", options_.size, ")");
  const auto& o = options_;
  data::Rng rng(static_cast<uint64_t>(o.seed), index);
  const int64_t S = o.tile * o.downsample;
  TissueTileLayout l;
  l.texture = rng.integer(0, o.textures - 1);
  l.row = rng.integer(0, kTextureSide - 1);
  l.col = rng.integer(0, kTextureSide - 1);
  l.digit = label(index);
  if (l.digit != kNoDigit) {
    // The digit's centre at least a quarter of its side inside the tile: part of a digit counts, as a
    // slide's patch grid cuts digits.
    const auto& pool = digits_->by_class[l.digit];
    l.mnist_index = pool[rng.integer(0, static_cast<int64_t>(pool.size()) - 1)];
    const int64_t D = o.digit_size, margin = D / 4;
    l.digit_row = rng.integer(margin, S - margin) - D / 2;
    l.digit_col = rng.integer(margin, S - margin) - D / 2;
  }
  return l;
}

torch::Tensor TissueTiles::level0(int64_t index) const {
  const auto& o = options_;
  const auto l = layout(index);
  const int64_t S = o.tile * o.downsample, T = kTextureSide;
  // A window of the texture (it repeats seamlessly, as on a slide).
  auto tile = textures_[l.texture]
                  .index_select(0, torch::arange(l.row, l.row + S).remainder(T))
                  .index_select(1, torch::arange(l.col, l.col + S).remainder(T));  // (S, S, 3)
  if (l.digit != kNoDigit) {
    const int64_t D = o.digit_size, y0 = l.digit_row, x0 = l.digit_col;
    namespace F = torch::nn::functional;
    const auto alpha = F::interpolate(digits_->images[l.mnist_index].to(torch::kFloat32).div(255).view({1, 1, 28, 28}),
                                      F::InterpolateFuncOptions().size(std::vector<int64_t>{D, D}).mode(torch::kNearest))
                           .view({D, D, 1});
    // make-slides' blend (ink over tissue by the digit's grey value) on the part of the box on the tile.
    const int64_t ty0 = std::max<int64_t>(y0, 0), tx0 = std::max<int64_t>(x0, 0);
    const int64_t ty1 = std::min(y0 + D, S), tx1 = std::min(x0 + D, S);
    using torch::indexing::Slice;
    const auto a = alpha.index({Slice(ty0 - y0, ty1 - y0), Slice(tx0 - x0, tx1 - x0)});
    const auto ink = torch::tensor({kDigitInk[0], kDigitInk[1], kDigitInk[2]}).view({1, 1, 3});
    const auto region = tile.index({Slice(ty0, ty1), Slice(tx0, tx1)});
    tile.index_put_({Slice(ty0, ty1), Slice(tx0, tx1)}, region * (1 - a) + ink * a);
  }
  return tile.round().clamp(0, 255);  // uint8 values, as a slide stores them
}

torch::Tensor TissueTiles::picture(int64_t index) const {
  // The pyramid level: the average of downsample x downsample level-0 pixels.
  auto image = level0(index).permute({2, 0, 1}).unsqueeze(0);
  if (options_.downsample > 1) image = torch::avg_pool2d(image, {options_.downsample, options_.downsample});
  return image.squeeze(0).div(255).contiguous();
}

data::Sample TissueTiles::get(int64_t index) const {
  data::Sample s;
  s.image = options_.normalization.empty() ? picture(index) : options_.normalization.apply(picture(index), "tissue tile");
  s.labels["digit"] = torch::tensor(label(index));
  return s;
}

data::DatasetInfo tissue_tiles_dataset() {
  data::DatasetInfo info;
  info.name = "tissue_tiles";
  info.summary = "tiles of make-slides' tissue, half with an MNIST digit in ink; class = the digit or 10 = none";
  const auto normalization = [](const Config& c) {
    data::Normalization n;
    if (!c.data.mean.empty() || !c.data.std.empty()) {
      n.mean = data::parse_floats(c.data.mean, "data.mean");
      n.std = data::parse_floats(c.data.std, "data.std");
    }
    return n;
  };
  info.make = [normalization](const Config& c, data::Splits splits, const std::vector<Task>*) {
    return data::mnist_generated_splits(c, splits, [&](std::shared_ptr<const data::MnistDigits> digits, int64_t size, int64_t seed) {
      TissueTilesOptions o;
      o.tile = c.data.height;
      o.downsample = int64_t{1} << std::min<int64_t>(std::max<int64_t>(c.slide.level, 0), 6);
      o.digit_size = c.data.digit_size;
      o.size = size;
      o.seed = seed;
      o.normalization = normalization(c);
      return std::make_shared<TissueTiles>(std::move(digits), o);
    });
  };
  info.describe = [normalization](const Config& c) {
    return std::make_pair(std::vector<Task>{{"digit", "softmax", 11}}, normalization(c));
  };
  info.validate = [](const Config& c) {
    TESSERA_CHECK(c.data.height == c.data.width, "tissue_tiles are square; set data.height = data.width");
    TESSERA_CHECK(c.slide.level >= 0 && c.slide.level <= 6, "tissue_tiles: slide.level must be in [0, 6], got ",
                  c.slide.level);
    TESSERA_CHECK(c.data.mean.empty() == c.data.std.empty(), "tissue_tiles: set data.mean and data.std together");
  };
  return info;
}

}  // namespace tessera::slides
