// Tissue tiles: single tiles of make-slides' tissue texture, half of them with an MNIST digit in
// make-slides' ink somewhere on the tile, rendered at a pyramid level's scale as the slides' patches
// are. Class = the digit (0-9), or 10 = no digit. A pretraining set for an image encoder that the
// generated slides' IPS runs then start from (`make vit-demo`): like a foundation model that has seen
// tumour tiles before, it learns from data disjoint from any slide: its own texture seeds and MNIST's
// training digits (make-slides draws from MNIST's test digits).
#pragma once
#include <memory>

#include "tessera/data/dataset.h"
#include "tessera/data/idx.h"

namespace tessera::slides {

struct TissueTilesOptions {
  int64_t tile = 128;        // output side in pixels
  int64_t downsample = 1;    // level-0 pixels per output pixel (2^level), averaged
  int64_t digit_size = 84;   // the digit's side in level-0 pixels (make-slides: 28 x --digit-scale)
  int64_t textures = 8;      // distinct tissue textures
  int64_t size = 1000;
  int64_t seed = 1;
  data::Normalization normalization;
};

// Where tile `index` comes from: a texture window at (row, col) and, unless digit = 10, the MNIST digit
// mnist_index whose D x D box has its top-left at (digit_row, digit_col) of the window (level-0 pixels;
// the box may stick out of the window).
struct TissueTileLayout {
  int64_t texture = 0, row = 0, col = 0;
  int64_t digit = 10, mnist_index = -1, digit_row = 0, digit_col = 0;
};

class TissueTiles final : public data::Dataset {
 public:
  static constexpr int64_t kNoDigit = 10;
  TissueTiles(std::shared_ptr<const data::MnistDigits> digits, TissueTilesOptions options);
  int64_t size() const override { return options_.size; }
  data::Sample get(int64_t index) const override;
  std::vector<Task> tasks() const override;             // "digit": softmax over 11 classes (10 = none)
  torch::Tensor picture(int64_t index) const override;        // (3, tile, tile) in [0, 1]
  data::Normalization normalization() const override { return options_.normalization; }
  // Even indices have no digit; odd ones a digit, the ten classes in turn.
  int64_t label(int64_t index) const { return index % 2 == 0 ? kNoDigit : (index / 2) % 10; }
  TissueTileLayout layout(int64_t index) const;
  // The tile at level 0, (tile x downsample)^2 x 3 uint8 values as float; picture() averages it.
  torch::Tensor level0(int64_t index) const;
  const torch::Tensor& texture(int64_t k) const { return textures_.at(static_cast<size_t>(k)); }  // (T, T, 3) float

 private:
  std::shared_ptr<const data::MnistDigits> digits_;
  TissueTilesOptions options_;
  std::vector<torch::Tensor> textures_;  // (T, T, 3) float
};

// The registry's entry (train/registry.h): data.height (= data.width) the tile side, slide.level the
// pyramid level whose scale the tiles have, data.digit_size the digit side in level-0 pixels,
// data.mean / data.std the normalisation.
data::DatasetInfo tissue_tiles_dataset();

}  // namespace tessera::slides
