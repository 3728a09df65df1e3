#include "tessera/data/ultramnist.h"

#include <torch/torch.h>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/config.h"
#include "tessera/data/random.h"

namespace tessera::data {
namespace {

constexpr int64_t kDigit = 28;
constexpr int64_t kMaxPlacementTries = 100000;

void multisets_from(int64_t count, int64_t sum, int64_t min_digit, std::vector<int64_t>& current,
                    std::vector<std::vector<int64_t>>& out) {
  if (count == 0) {
    if (sum == 0) out.push_back(current);
    return;
  }
  for (int64_t d = min_digit; d <= std::min<int64_t>(9, sum); ++d) {
    current.push_back(d);
    multisets_from(count - 1, sum - d, d, current, out);
    current.pop_back();
  }
}

// Pixel grid coordinates (rows (S,1), cols (1,S)) as floats at pixel centres.
std::pair<torch::Tensor, torch::Tensor> pixel_grid(int64_t S) {
  const auto c = torch::arange(S, torch::kFloat32) + 0.5f;
  return {c.view({S, 1}), c.view({1, S})};
}

}  // namespace

std::vector<std::vector<int64_t>> digit_multisets(int64_t sum) {
  std::vector<std::vector<int64_t>> out;
  std::vector<int64_t> current;
  for (int64_t count = 3; count <= 5; ++count) multisets_from(count, sum, 0, current, out);
  return out;
}

std::vector<double> scale_weights(const std::string& variant, int64_t max_r) {
  std::vector<double> w;
  for (int64_t r = 1; r <= max_r; ++r) {
    if (variant == "28") w.push_back(r <= 38 ? 39.0 - r : r - 38.0);  // 38..1, 1..37
    else w.push_back(std::vector<double>{5, 4, 3, 2, 1, 1, 2, 3, 4}.at(r - 1));
  }
  return w;
}

UltraMnist::UltraMnist(std::shared_ptr<const MnistDigits> digits, UltraMnistOptions options)
    : digits_(std::move(digits)), options_(std::move(options)) {
  const auto& o = options_;
  TESSERA_CHECK(o.variant == "512" || o.variant == "28", "unknown UltraMNIST variant '", o.variant, "'; use 512 or 28");
  TESSERA_CHECK(o.channels == 1 || o.channels == 3, "UltraMNIST channels must be 1 or 3, got ", o.channels);
  TESSERA_CHECK(o.size >= 0, "data set size must be >= 0");
  TESSERA_CHECK(o.canvas >= 5 * kDigit, "UltraMNIST canvas ", o.canvas, " is too small for 5 digits; use >= ", 5 * kDigit);
  const int64_t paper_max = o.variant == "28" ? 75 : 9;
  // The largest digit must leave room for the others: side <= canvas / 1.9 (2100 px on 4000, 252 on 512).
  max_scale_ = std::min({o.max_scale > 0 ? o.max_scale : paper_max, paper_max, o.canvas * 10 / (19 * kDigit)});
  max_scale_ = std::max<int64_t>(1, max_scale_);
  for (int64_t c = 0; c < classes(); ++c) multisets_.push_back(digit_multisets(c));
}

std::vector<Task> UltraMnist::tasks() const { return {{"sum", "softmax", classes()}}; }

std::vector<DigitBox> UltraMnist::layout(int64_t index) const {
  TESSERA_CHECK(index >= 0 && index < options_.size, "sample index ", index, " out of range [0, ", options_.size, ")");
  const int64_t S = options_.canvas;
  Rng rng(static_cast<uint64_t>(options_.seed), index);
  const auto& choices = multisets_[label(index)];
  const auto& digits = choices[rng.integer(0, static_cast<int64_t>(choices.size()) - 1)];
  const auto weights = scale_weights(options_.variant, max_scale_);
  std::vector<DigitBox> placed;
  for (int64_t d : digits) {
    const auto& pool = digits_->by_class[d];
    TESSERA_CHECK(!pool.empty(), "the MNIST digits have no '", d, "'; regenerate them with scripts/get-mnist.sh");
    const int64_t mnist_index = pool[rng.integer(0, static_cast<int64_t>(pool.size()) - 1)];
    for (int64_t attempt = 0;; ++attempt) {
      TESSERA_CHECK(attempt < kMaxPlacementTries, "cannot place ", digits.size(), " non-overlapping digits on a ", S,
                    "x", S, " canvas; lower data.max_scale");
      // On rejection both the scale and the position are drawn again.
      const int64_t r = rng.weighted(weights) + 1;
      const int64_t side = r == 1 ? (rng.uniform() < 0.5 ? kDigit / 2 : kDigit) : kDigit * r;
      const int64_t row = rng.integer(0, S - side), col = rng.integer(0, S - side);
      bool overlaps = false;
      for (const auto& p : placed) {
        overlaps |= row < p.row + p.side && p.row < row + side && col < p.col + p.side && p.col < col + side;
      }
      if (!overlaps) {
        placed.push_back({d, row, col, side, mnist_index});
        break;
      }
    }
  }
  return placed;
}

torch::Tensor UltraMnist::background(int64_t index) const {
  const int64_t S = options_.canvas;
  const double unit = static_cast<double>(S) / 4000.0;  // the benchmark's sizes are for a 4000 canvas
  Rng rng(static_cast<uint64_t>(options_.seed) ^ 0x6261636bULL, index);
  // Checkerboard of m x m random cells, warped by a random affine map about the centre, seen through
  // a centre crop of side S / sqrt(2) (inside any rotated square) stretched back to S.
  const int64_t m = rng.integer(12, 23);
  std::vector<float> cells(m * m);
  for (auto& c : cells) c = rng.uniform() < 0.5 ? 0.0f : 1.0f;
  const double angle = rng.uniform(-45, 45) * M_PI / 180, scale = rng.uniform(0.8, 1.2);
  const double shear = std::tan(rng.uniform(-50, 50) * M_PI / 180);
  // Forward map A = scale * R(angle) * [[1, shear], [0, 1]]; we need A^-1 for backward sampling.
  const double ca = std::cos(angle), sa = std::sin(angle);
  const double a = scale * ca, b = scale * (ca * shear - sa), c = scale * sa, d = scale * (sa * shear + ca);
  const double det = a * d - b * c;
  const double ia = d / det, ib = -b / det, ic = -c / det, id = a / det;
  torch::Tensor rows, cols;  // not a structured binding: lambdas below capture them (C++17)
  std::tie(rows, cols) = pixel_grid(S);
  const double crop = static_cast<double>(S) / std::sqrt(2.0), half = S / 2.0;
  const auto y = (rows - half) * (crop / S), x = (cols - half) * (crop / S);  // warped-image coords about the centre
  const auto src_x = x * ia + y * ib + half, src_y = x * ic + y * id + half;
  const auto cell_x = (src_x * (static_cast<double>(m) / S)).floor(), cell_y = (src_y * (static_cast<double>(m) / S)).floor();
  const auto inside = cell_x.ge(0) & cell_x.lt(m) & cell_y.ge(0) & cell_y.lt(m);
  const auto flat = (cell_y.clamp(0, m - 1) * m + cell_x.clamp(0, m - 1)).to(torch::kLong);
  auto board = torch::tensor(cells).index({flat}).mul_(inside.to(torch::kFloat32)).gt(0.5f);

  const int64_t n_circles = rng.integer(0, 4), n_triangles = rng.integer(0, 4);
  for (int64_t i = 0; i < n_circles; ++i) {
    const double cy = rng.uniform(0, S), cx = rng.uniform(0, S), radius = rng.uniform(50, 999) * unit;
    board = board.logical_xor((rows - cy).square() + (cols - cx).square() <= radius * radius);
  }
  for (int64_t i = 0; i < n_triangles; ++i) {
    double py[3], px[3];
    for (int k = 0; k < 3; ++k) py[k] = rng.uniform(0, S), px[k] = rng.uniform(0, S);
    // Inside when the three edge functions share a sign.
    const auto edge = [&](int i0, int i1) { return (cols - px[i0]) * (py[i1] - py[i0]) - (rows - py[i0]) * (px[i1] - px[i0]); };
    const auto e0 = edge(0, 1), e1 = edge(1, 2), e2 = edge(2, 0);
    const auto inside_tri = (e0.ge(0) & e1.ge(0) & e2.ge(0)) | (e0.le(0) & e1.le(0) & e2.le(0));
    board = board.logical_xor(inside_tri);
  }
  return board.to(torch::kFloat32);
}

torch::Tensor UltraMnist::picture(int64_t index) const {
  const int64_t S = options_.canvas;
  const bool binary = options_.variant == "28";
  auto canvas = binary ? background(index) : torch::zeros({S, S});
  using torch::indexing::Slice;
  for (const auto& box : layout(index)) {
    auto digit = digits_->images[box.mnist_index].to(torch::kFloat32).div_(255.0f);
    if (box.side == kDigit / 2) {
      digit = digit.index({Slice(0, kDigit, 2), Slice(0, kDigit, 2)});  // nearest 14x14
    } else if (box.side > kDigit) {
      const int64_t r = box.side / kDigit;  // pixel replication
      digit = digit.repeat_interleave(r, 0).repeat_interleave(r, 1);
    }
    auto region = canvas.index({Slice(box.row, box.row + box.side), Slice(box.col, box.col + box.side)});
    if (binary) region.copy_(region.gt(0.5f).logical_xor(digit.gt(0.5f)).to(torch::kFloat32));
    else region.add_(digit).clamp_max_(1.0f);
  }
  return canvas.unsqueeze(0);
}

Normalization UltraMnist::normalization() const { return mnist_normalization(options_.channels); }

Sample UltraMnist::get(int64_t index) const {
  return mnist_canvas_sample(picture(index), options_.channels, "sum", label(index));
}


namespace {
DatasetInfo ultramnist_info(const std::string& variant) {
  DatasetInfo info;
  info.name = variant == "28" ? "ultramnist28" : "ultramnist";
  info.summary = variant == "28" ? "UltraMNIST as published: 4000 px, 28 classes, textured background"
                                 : "UltraMNIST 512: digits of very different sizes, class = their sum (10 classes)";
  info.make = [variant](const Config& c, Splits splits, const std::vector<Task>*) {
    const auto& d = c.data;
    return mnist_generated_splits(c, splits, [&](std::shared_ptr<const MnistDigits> digits, int64_t size, int64_t seed) {
      UltraMnistOptions o;
      o.variant = variant;
      o.canvas = d.height;
      o.max_scale = d.max_scale;
      o.channels = d.channels;
      o.size = size;
      o.seed = seed;
      return std::make_shared<UltraMnist>(std::move(digits), o);
    });
  };
  info.describe = [variant](const Config& c) {
    return std::make_pair(std::vector<Task>{{"sum", "softmax", variant == "28" ? 28 : 10}}, mnist_normalization(c.data.channels));
  };
  info.validate = [](const Config& c) {
    TESSERA_CHECK(c.data.height == c.data.width, "UltraMNIST canvases are square; set data.height = data.width");
  };
  return info;
}
}  // namespace

DatasetInfo ultramnist_dataset() { return ultramnist_info("512"); }
DatasetInfo ultramnist28_dataset() { return ultramnist_info("28"); }

}  // namespace tessera::data
