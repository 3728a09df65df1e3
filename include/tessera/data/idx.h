// The IDX format of the MNIST files (big-endian header, unsigned bytes).
#pragma once
#include <torch/types.h>

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tessera/data/dataset.h"

namespace tessera::data {

torch::Tensor read_idx(const std::string& path);  // uint8 tensor with the file's dims
void write_idx(const std::string& path, const torch::Tensor& data);  // uint8 tensor

struct MnistDigits {
  torch::Tensor images;  // (n, 28, 28) uint8
  torch::Tensor labels;  // (n) int64
  std::array<std::vector<int64_t>, 10> by_class;  // sample indices of each digit
};

// MNIST's per-channel mean and std (as the PatchGD reference normalises), for `channels` channels.
Normalization mnist_normalization(int64_t channels);
// A canvas of MNIST digits as a sample: picture (1, H, W) in [0, 1] normalised with MNIST's statistics,
// replicated to 3 channels when channels = 3, with one class label for `task`.
Sample mnist_canvas_sample(torch::Tensor picture, int64_t channels, const std::string& task, int64_t label);

// split: "train" (train-*-ubyte) or "test" (t10k-*-ubyte) in dir.
MnistDigits load_mnist(const std::string& dir, const std::string& split);

// Train and test sets of a data set generated from MNIST digits (data.mnist_dir, data.train_size /
// test_size, data.train_seed / test_seed): make(digits of the split, size, seed) per split asked for.
std::pair<DatasetPtr, DatasetPtr> mnist_generated_splits(
    const Config& config, Splits splits,
    const std::function<DatasetPtr(std::shared_ptr<const MnistDigits> digits, int64_t size, int64_t seed)>& make);

}  // namespace tessera::data
