#include "tessera/data/scattered_mnist.h"

#include <torch/torch.h>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/data/random.h"

namespace tessera::data {

ScatteredMnist::ScatteredMnist(std::shared_ptr<const MnistDigits> digits, ScatteredMnistOptions options)
    : digits_(std::move(digits)), options_(options) {
  const auto& o = options_;
  TESSERA_CHECK(o.channels == 1 || o.channels == 3, "scattered_mnist: data.channels must be 1 or 3, got ", o.channels);
  TESSERA_CHECK(o.digit_size >= 4 && o.digit_size <= o.canvas, "scattered_mnist: data.digit_size must be in [4, ",
                o.canvas, "] (the canvas), got ", o.digit_size);
  TESSERA_CHECK(o.size >= 0, "data set size must be >= 0");
  for (int64_t d = 0; d < 10; ++d) {
    TESSERA_CHECK(!digits_->by_class[d].empty(), "the MNIST digits have no '", d, "'; regenerate them with scripts/get-mnist.sh");
  }
}

std::vector<Task> ScatteredMnist::tasks() const { return {{"digit", "softmax", 10}}; }

ScatteredDigit ScatteredMnist::layout(int64_t index) const {
  TESSERA_CHECK(index >= 0 && index < options_.size, "sample index ", index, " out of range [0, ", options_.size, ")");
  Rng rng(static_cast<uint64_t>(options_.seed), index);
  const auto& pool = digits_->by_class[label(index)];
  ScatteredDigit d;
  d.digit = label(index);
  d.mnist_index = pool[rng.integer(0, static_cast<int64_t>(pool.size()) - 1)];
  d.row = rng.integer(0, options_.canvas - options_.digit_size);
  d.col = rng.integer(0, options_.canvas - options_.digit_size);
  return d;
}

torch::Tensor ScatteredMnist::picture(int64_t index) const {
  const auto d = layout(index);
  const int64_t S = options_.canvas, side = options_.digit_size;
  namespace F = torch::nn::functional;
  const auto digit = F::interpolate(digits_->images[d.mnist_index].to(torch::kFloat32).div(255.0f).view({1, 1, 28, 28}),
                                    F::InterpolateFuncOptions().size(std::vector<int64_t>{side, side}).mode(torch::kNearest));
  auto canvas = torch::zeros({1, S, S});
  using torch::indexing::Slice;
  canvas.index_put_({0, Slice(d.row, d.row + side), Slice(d.col, d.col + side)}, digit.view({side, side}));
  return canvas;
}

Normalization ScatteredMnist::normalization() const { return mnist_normalization(options_.channels); }

Sample ScatteredMnist::get(int64_t index) const {
  return mnist_canvas_sample(picture(index), options_.channels, "digit", label(index));
}

DatasetInfo scattered_mnist_dataset() {
  DatasetInfo info;
  info.name = "scattered_mnist";
  info.summary = "one small MNIST digit at a random place on a large black canvas; class = the digit";
  info.make = [](const Config& c, Splits splits, const std::vector<Task>*) {
    return mnist_generated_splits(c, splits, [&](std::shared_ptr<const MnistDigits> digits, int64_t size, int64_t seed) {
      ScatteredMnistOptions o;
      o.canvas = c.data.height;
      o.digit_size = c.data.digit_size;
      o.channels = c.data.channels;
      o.size = size;
      o.seed = seed;
      return std::make_shared<ScatteredMnist>(std::move(digits), o);
    });
  };
  info.describe = [](const Config& c) {
    return std::make_pair(std::vector<Task>{{"digit", "softmax", 10}}, mnist_normalization(c.data.channels));
  };
  info.validate = [](const Config& c) {
    TESSERA_CHECK(c.data.height == c.data.width, "scattered_mnist canvases are square; set data.height = data.width");
  };
  return info;
}

}  // namespace tessera::data
