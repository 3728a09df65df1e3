// Scattered MNIST: one MNIST digit of data.digit_size pixels at a random place on a large black
// canvas; the class is the digit. A deliberately simple task where resolution matters: downscaling the
// canvas enough to fit a small memory budget shrinks the digit below legibility, while a patch-based
// method sees it at full resolution (the PatchGD demo, `make patchgd-demo`).
#pragma once
#include <memory>

#include "tessera/data/dataset.h"
#include "tessera/data/idx.h"

namespace tessera::data {

struct ScatteredMnistOptions {
  int64_t canvas = 512;      // side in pixels
  int64_t digit_size = 28;   // the digit's side in pixels (nearest-neighbour resize of the 28x28 digit)
  int64_t channels = 1;      // 1, or 3 = grey replicated
  int64_t size = 1000;
  int64_t seed = 1;
};

struct ScatteredDigit {
  int64_t digit, row, col, mnist_index;
};

class ScatteredMnist final : public Dataset {
 public:
  ScatteredMnist(std::shared_ptr<const MnistDigits> digits, ScatteredMnistOptions options);
  int64_t size() const override { return options_.size; }
  Sample get(int64_t index) const override;
  std::vector<Task> tasks() const override;             // "digit": softmax over 10 classes
  torch::Tensor picture(int64_t index) const override;  // (1, S, S) in [0, 1]
  Normalization normalization() const override;         // MNIST's mean and std

  int64_t label(int64_t index) const { return index % 10; }  // balanced classes
  ScatteredDigit layout(int64_t index) const;

 private:
  std::shared_ptr<const MnistDigits> digits_;
  ScatteredMnistOptions options_;
};

// The registry's entry (train/registry.h).
DatasetInfo scattered_mnist_dataset();

}  // namespace tessera::data
