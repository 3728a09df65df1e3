#include "tessera/data/megapixel_mnist.h"

#include <torch/torch.h>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/config.h"
#include "tessera/data/random.h"

namespace tessera::data {
namespace {

constexpr int64_t kDigit = 28;

// Bank of line glyphs as the reference rasterises them: slope a = tan(u * pi / 2.5), x at 56 evenly
// spaced points in [0, min(27.49, 27.49 / a)], pixel (row round(x), column round(a x)) set to its own
// intensity 0.8 + 0.2 u, so every line starts at the corner (0, 0). The bank is OR-ed (maximum) with a
// shuffled copy of itself whose glyphs are each flipped along the columns twice, each time with
// probability 0.33.
torch::Tensor make_glyph_bank(int64_t n, uint64_t seed) {
  Rng rng(mix(seed ^ 0x6c696e6573ULL));
  auto bank = torch::zeros({n, kDigit, kDigit});
  auto b = bank.accessor<float, 3>();
  constexpr double kExtent = 27.49;
  for (int64_t g = 0; g < n; ++g) {
    const double a = std::tan(rng.uniform() * M_PI / 2.5);
    const double m = a > 0 ? std::min(kExtent, kExtent / a) : kExtent;
    for (int p = 0; p < 56; ++p) {
      const double x = m * p / 55.0;
      const auto row = static_cast<int64_t>(std::round(x)), col = static_cast<int64_t>(std::round(a * x));
      if (row < kDigit && col < kDigit) b[g][row][col] = static_cast<float>(0.8 + 0.2 * rng.uniform());
    }
  }
  std::vector<int64_t> perm(n);
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[rng.integer(0, i)]);
  auto copy = bank.index_select(0, torch::tensor(perm));
  for (int64_t i = 0; i < n; ++i) {
    for (int flip = 0; flip < 2; ++flip) {
      if (rng.uniform() < 0.33) copy[i] = copy[i].flip({1});
    }
  }
  return torch::maximum(bank, copy);
}

void paste(float* canvas, int64_t width, const float* src, int64_t row, int64_t col) {
  for (int64_t r = 0; r < kDigit; ++r) {
    std::copy(src + r * kDigit, src + (r + 1) * kDigit, canvas + (row + r) * width + col);
  }
}

}  // namespace

MegapixelMnist::MegapixelMnist(std::shared_ptr<const MnistDigits> digits, MegapixelMnistOptions options)
    : digits_(std::move(digits)), options_(options) {
  const auto& o = options_;
  TESSERA_CHECK(o.height >= kDigit && o.width >= kDigit, "Megapixel MNIST canvas ", o.height, "x", o.width,
                " is smaller than a 28x28 digit");
  TESSERA_CHECK(o.noise_glyphs == 0 || (o.height > 2 * kDigit && o.width > 2 * kDigit),
                "noise glyphs need a canvas larger than 56x56; set data.noise_glyphs=0 for tiny canvases");
  TESSERA_CHECK(o.n_target >= 1 && o.n_other >= 0 && o.n_target > o.n_other, "need n_target > n_other >= 0 so the "
                "majority digit is defined, got ", o.n_target, " and ", o.n_other);
  TESSERA_CHECK(o.size >= 0, "data set size must be >= 0");
  for (int64_t c = 0; c < 10; ++c) {
    TESSERA_CHECK(!digits_->by_class[c].empty(), "the MNIST digits have no image of class ", c,
                  "; Megapixel MNIST needs all ten (check data.mnist_dir)");
  }
  // Rejection placement must terminate: each placed digit rules out at most (2*28-1)^2 top-left
  // positions, so with this many positions a free one always remains for the last digit.
  const double positions = double(o.height - kDigit + 1) * double(o.width - kDigit + 1);
  TESSERA_CHECK(positions > double(o.n_target + o.n_other - 1) * (2 * kDigit - 1) * (2 * kDigit - 1), "canvas ",
                o.height, "x", o.width, " is too small to always place ", o.n_target + o.n_other,
                " non-overlapping digits; use a larger data.height/data.width");
  bank_ = make_glyph_bank(o.bank_size, static_cast<uint64_t>(o.seed));
}

std::vector<Task> MegapixelMnist::tasks() const { return megapixel_mnist_tasks(); }

std::vector<Task> megapixel_mnist_tasks() {
  return {{"majority", "softmax", 10}, {"max", "softmax", 10}, {"top", "softmax", 10}, {"multi", "sigmoid", 10}};
}

std::vector<DigitPlacement> MegapixelMnist::layout(int64_t index) const {
  TESSERA_CHECK(index >= 0 && index < options_.size, "sample index ", index, " out of range [0, ", options_.size, ")");
  const auto& o = options_;
  Rng rng(mix(mix(static_cast<uint64_t>(o.seed)) ^ static_cast<uint64_t>(index)));
  const int64_t target = rng.integer(0, 9);
  // Target digits from the target class; the others from all other images, so their classes follow
  // MNIST's class frequencies (as the reference draws them).
  std::vector<std::pair<int64_t, int64_t>> digits;  // (class, MNIST index)
  const auto& pool = digits_->by_class[target];
  for (int64_t i = 0; i < o.n_target; ++i) {
    digits.emplace_back(target, pool[rng.integer(0, static_cast<int64_t>(pool.size()) - 1)]);
  }
  const int64_t n_images = digits_->labels.size(0);
  const auto* labels = digits_->labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < o.n_other; ++i) {
    int64_t index = 0;
    do {
      index = rng.integer(0, n_images - 1);
    } while (labels[index] == target);
    digits.emplace_back(labels[index], index);
  }
  std::vector<DigitPlacement> placed;
  for (const auto& [c, mnist_index] : digits) {
    while (true) {
      const int64_t row = rng.integer(0, o.height - kDigit), col = rng.integer(0, o.width - kDigit);
      bool overlaps = false;
      for (const auto& p : placed) overlaps |= std::abs(p.row - row) < kDigit && std::abs(p.col - col) < kDigit;
      if (!overlaps) {
        placed.push_back({c, row, col, mnist_index});
        break;
      }
    }
  }
  return placed;
}

Sample MegapixelMnist::get(int64_t index) const {
  const auto& o = options_;
  const auto placed = layout(index);
  auto image = torch::zeros({1, o.height, o.width});
  float* canvas = image.data_ptr<float>();

  Rng noise(mix(mix(static_cast<uint64_t>(o.seed) + 0x6e6f697365ULL) ^ static_cast<uint64_t>(index)));
  const float* bank = bank_.data_ptr<float>();
  for (int64_t g = 0; g < o.noise_glyphs; ++g) {
    const int64_t entry = noise.integer(0, o.bank_size - 1);
    const int64_t row = noise.integer(kDigit, o.height - kDigit - 1), col = noise.integer(kDigit, o.width - kDigit - 1);
    paste(canvas, o.width, bank + entry * kDigit * kDigit, row, col);
  }
  auto multi = torch::zeros({10});
  int64_t top_row = o.height, top = 0, max_digit = 0;
  for (const auto& p : placed) {
    const auto src = digits_->images[p.mnist_index].to(torch::kFloat32).div_(255.0f).contiguous();
    paste(canvas, o.width, src.data_ptr<float>(), p.row, p.col);
    multi[p.digit] = 1.0f;
    max_digit = std::max(max_digit, p.digit);
    if (p.row < top_row) top_row = p.row, top = p.digit;
  }
  Sample s;
  s.image = image;
  s.labels["majority"] = torch::tensor(placed.front().digit);
  s.labels["max"] = torch::tensor(max_digit);
  s.labels["top"] = torch::tensor(top);
  s.labels["multi"] = multi;
  return s;
}


DatasetInfo megapixel_mnist_dataset() {
  DatasetInfo info;
  info.name = "megapixel_mnist";
  info.summary = "IPS's Megapixel MNIST: digits and noise on a large canvas, four tasks";
  info.multitask = true;
  info.describe = [](const Config&) { return std::make_pair(megapixel_mnist_tasks(), Normalization{}); };
  info.make = [](const Config& c, Splits splits, const std::vector<Task>*) {
    const auto& d = c.data;
    return mnist_generated_splits(c, splits, [&](std::shared_ptr<const MnistDigits> digits, int64_t size, int64_t seed) {
      MegapixelMnistOptions o;
      o.height = d.height;
      o.width = d.width;
      o.n_target = d.n_target;
      o.n_other = d.n_other;
      o.noise_glyphs = d.noise_glyphs;
      o.size = size;
      o.seed = seed;
      return std::make_shared<MegapixelMnist>(std::move(digits), o);
    });
  };
  return info;
}

}  // namespace tessera::data
