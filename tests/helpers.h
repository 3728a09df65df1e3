// Shared helpers for the tests: temporary directories, tiny synthetic MNIST files, small configs.
#pragma once
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/data/idx.h"

namespace tessera::testing {

inline std::string fixture(const std::string& name) { return std::string(TESSERA_FIXTURES) + "/" + name; }

// A fresh directory under the system temp dir, removed at destruction.
class TempDir {
 public:
  TempDir() {
    static std::mt19937_64 rng(std::random_device{}());
    path_ = std::filesystem::temp_directory_path() / ("tessera-test-" + std::to_string(rng()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string str() const { return path_.string(); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Writes MNIST-format IDX files whose "digit" d is a 28x28 block pattern unique to (d, sample):
// enough to test generators and training loops without the real data set.
inline void write_fake_mnist(const std::string& dir, int64_t per_class = 6) {
  for (const std::string prefix : {"train", "t10k"}) {
    const int64_t n = per_class * 10;
    auto images = torch::zeros({n, 28, 28}, torch::kUInt8);
    auto labels = torch::zeros({n}, torch::kUInt8);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t d = i % 10;
      labels[i] = d;
      // A bar whose position encodes the class, plus a sample-specific dot.
      images[i].slice(0, 4 + 2 * d, 8 + 2 * d).slice(1, 4, 24).fill_(255);
      images[i][26][i % 28] = 128;
    }
    data::write_idx(dir + "/" + prefix + "-images-idx3-ubyte", images);
    data::write_idx(dir + "/" + prefix + "-labels-idx1-ubyte", labels);
  }
}

// <dir>/mnist holding fake MNIST files; returns its path.
inline std::string fake_mnist_dir(const TempDir& dir) {
  std::filesystem::create_directories(dir.file("mnist"));
  write_fake_mnist(dir.file("mnist"));
  return dir.file("mnist");
}

// Runs the tessera command with its output in log; returns the exit status.
inline int run_cli(const std::string& args, const std::string& log) {
  return std::system((std::string(TESSERA_CLI) + " " + args + " > " + log + " 2>&1").c_str());
}

// The message of the tessera::Error f throws, or "" when it throws none.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), {}};
}

// A tensor as torch.save would write it, for `predict --image x.pt`.
inline void save_tensor(const std::string& path, const torch::Tensor& t) {
  const auto bytes = torch::pickle_save(t);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A narrow ResNet-18 on one-channel side x side images of the csv data set, cut into patch x patch patches.
inline Config small_patch_config(const std::string& method, int64_t side, int64_t patch, int64_t latent) {
  Config c;
  c.data.dataset = "csv";
  c.data.height = c.data.width = side;
  c.data.patch = c.data.stride = patch;
  c.model.encoder = "resnet18";
  c.model.in_channels = 1;
  c.model.width = 8;
  c.patchgd.latent = latent;
  c.train.method = method;
  return c;
}

// A configuration small enough to train a few steps in seconds.
inline Config tiny_config(const std::string& mnist_dir, const std::string& run_dir) {
  Config c;
  c.run_dir = run_dir;
  c.data.mnist_dir = mnist_dir;
  c.data.height = c.data.width = 168;
  c.data.patch = c.data.stride = 28;
  c.data.noise_glyphs = 5;
  c.data.train_size = 8;
  c.data.test_size = 4;
  c.data.workers = 1;
  c.model.width = 8;
  c.model.heads = 2;
  c.model.d_k = 8;
  c.model.d_inner = 32;
  c.ips.M = 4;
  c.ips.I = 4;
  c.train.epochs = 2;
  c.train.batch_size = 2;
  c.train.warmup_epochs = 1;
  c.train.threads = 1;
  return c;
}

}  // namespace tessera::testing
