// UltraMNIST (PatchGD's benchmark), generated on the fly from (seed, index): 3-5 MNIST digits of very
// different sizes on a large canvas; the class is their sum. Two variants:
//   "512": black 512x512 canvas, sums 0-9 (10 classes), scales r in 1..9 with V-shaped weights;
//   "28":  the original 4000x4000 benchmark, sums 0-27 (28 classes), r in 1..75, binary image with a
//          background of a warped checkerboard XOR circles and triangles, XOR the digits.
// Classes are balanced: sample i has class i mod classes.
#pragma once
#include <memory>
#include <vector>

#include "tessera/data/dataset.h"
#include "tessera/data/idx.h"

namespace tessera::data {

struct UltraMnistOptions {
  std::string variant = "512";  // "512" | "28"
  int64_t canvas = 512;         // side in pixels (4000 for the original "28")
  int64_t max_scale = 0;        // largest r (0: 9 for "512", 75 for "28"); also capped so a digit fits
  int64_t channels = 1;         // 1, or 3 = grey replicated (the PatchGD input)
  int64_t size = 1000;
  int64_t seed = 1;
};

struct DigitBox {
  int64_t digit, row, col, side, mnist_index;
};

// Every multiset of 3, 4 or 5 digits (values 0-9) with the given sum, each as ascending digits.
std::vector<std::vector<int64_t>> digit_multisets(int64_t sum);
// Weights of the digit scales r = 1..max_r ("V-shaped": small and large most likely).
std::vector<double> scale_weights(const std::string& variant, int64_t max_r);

class UltraMnist final : public Dataset {
 public:
  UltraMnist(std::shared_ptr<const MnistDigits> digits, UltraMnistOptions options);
  int64_t size() const override { return options_.size; }
  Sample get(int64_t index) const override;  // normalised (x - 0.1307) / 0.3081
  std::vector<Task> tasks() const override;  // "sum": softmax over 10 or 28 classes
  torch::Tensor picture(int64_t index) const override;  // (1, S, S) in [0, 1]
  Normalization normalization() const override;  // MNIST's mean and std per channel

  int64_t classes() const { return options_.variant == "28" ? 28 : 10; }
  int64_t label(int64_t index) const { return index % classes(); }
  std::vector<DigitBox> layout(int64_t index) const;  // in paste order
  int64_t max_scale() const { return max_scale_; }

 private:
  torch::Tensor background(int64_t index) const;  // "28": binary (S, S) float
  std::shared_ptr<const MnistDigits> digits_;
  UltraMnistOptions options_;
  int64_t max_scale_ = 9;
  std::vector<std::vector<std::vector<int64_t>>> multisets_;  // per class
};

// The registry's entries (train/registry.h).
DatasetInfo ultramnist_dataset();
DatasetInfo ultramnist28_dataset();

}  // namespace tessera::data
