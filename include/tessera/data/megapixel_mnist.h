// Megapixel MNIST (the IPS paper's synthetic benchmark), generated on the fly from (seed, index):
// 5 MNIST digits (3 of a target class) and noise line glyphs on a large black canvas, 4 tasks.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "tessera/data/dataset.h"
#include "tessera/data/idx.h"

namespace tessera::data {

struct MegapixelMnistOptions {
  int64_t height = 1500, width = 1500;
  int64_t n_target = 3, n_other = 2;
  int64_t noise_glyphs = 50;  // per image
  int64_t bank_size = 50;     // data-set-wide glyph bank
  int64_t size = 5000;
  int64_t seed = 1;
};

struct DigitPlacement {
  int64_t digit, row, col, mnist_index;
};

// majority, max, top (softmax over 10 digits) and multi (sigmoid, digits present).
std::vector<Task> megapixel_mnist_tasks();

class MegapixelMnist final : public Dataset {
 public:
  MegapixelMnist(std::shared_ptr<const MnistDigits> digits, MegapixelMnistOptions options);
  int64_t size() const override { return options_.size; }
  Sample get(int64_t index) const override;
  std::vector<Task> tasks() const override;  // majority, max, top (softmax 10), multi (sigmoid 10)
  std::vector<DigitPlacement> layout(int64_t index) const;  // the digits of image `index`, in paste order
  const torch::Tensor& glyph_bank() const { return bank_; }  // (bank_size, 28, 28)

 private:
  std::shared_ptr<const MnistDigits> digits_;
  MegapixelMnistOptions options_;
  torch::Tensor bank_;
};

// The registry's entry (train/registry.h).
DatasetInfo megapixel_mnist_dataset();

}  // namespace tessera::data
