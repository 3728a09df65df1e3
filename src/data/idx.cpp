#include "tessera/data/idx.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/core/run_dir.h"

namespace tessera::data {
namespace {
uint32_t read_be32(std::istream& in) {
  unsigned char b[4];
  in.read(reinterpret_cast<char*>(b), 4);
  return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | uint32_t(b[3]);
}
void write_be32(std::ostream& out, uint32_t v) {
  const unsigned char b[4] = {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
  out.write(reinterpret_cast<const char*>(b), 4);
}
}  // namespace

torch::Tensor read_idx(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in, "cannot open IDX file '", path, "'; run scripts/get-mnist.sh or set data.mnist_dir");
  unsigned char magic[4] = {};
  in.read(reinterpret_cast<char*>(magic), 4);
  TESSERA_CHECK(in, "IDX file '", path, "' is truncated (no header)");
  TESSERA_CHECK(!(magic[0] == 0x1f && magic[1] == 0x8b), "'", path, "' is gzip-compressed; gunzip it first");
  TESSERA_CHECK(magic[0] == 0 && magic[1] == 0 && magic[2] == 0x08, "'", path,
                "' is not an unsigned-byte IDX file (bad magic number)");
  const int ndim = magic[3];
  TESSERA_CHECK(ndim >= 1 && ndim <= 4, "IDX file '", path, "' declares ", ndim, " dimensions");
  std::vector<int64_t> dims;
  int64_t total = 1;
  for (int d = 0; d < ndim; ++d) {
    dims.push_back(read_be32(in));
    total *= dims.back();
  }
  TESSERA_CHECK(in && total > 0, "IDX file '", path, "' has a corrupt header");
  auto out = torch::empty(dims, torch::kUInt8);
  in.read(reinterpret_cast<char*>(out.data_ptr<uint8_t>()), total);
  TESSERA_CHECK(in.gcount() == total, "IDX file '", path, "' is truncated: expected ", total, " bytes of data, got ",
                in.gcount());
  return out;
}

void write_idx(const std::string& path, const torch::Tensor& data) {
  TESSERA_CHECK(data.scalar_type() == torch::kUInt8, "IDX writer takes uint8 tensors");
  const auto t = data.contiguous();
  std::ostringstream out;
  const char magic[4] = {0, 0, 0x08, static_cast<char>(t.dim())};
  out.write(magic, 4);
  for (auto d : t.sizes()) write_be32(out, static_cast<uint32_t>(d));
  out.write(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), t.numel());
  write_file_atomic(path, out.str());
}

MnistDigits load_mnist(const std::string& dir, const std::string& split) {
  TESSERA_CHECK(split == "train" || split == "test", "MNIST split must be train or test");
  const std::string prefix = split == "train" ? "train" : "t10k";
  const auto base = std::filesystem::path(dir);
  MnistDigits m;
  m.images = read_idx((base / (prefix + "-images-idx3-ubyte")).string());
  const auto labels = read_idx((base / (prefix + "-labels-idx1-ubyte")).string());
  TESSERA_CHECK(m.images.dim() == 3 && m.images.size(1) == 28 && m.images.size(2) == 28, "MNIST images in '", dir,
                "' are not 28x28");
  TESSERA_CHECK(labels.dim() == 1 && labels.size(0) == m.images.size(0), "MNIST labels in '", dir,
                "' do not match the image count");
  m.labels = labels.to(torch::kLong);
  const auto* l = m.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < m.labels.size(0); ++i) {
    TESSERA_CHECK(l[i] >= 0 && l[i] <= 9, "MNIST label ", l[i], " out of range in '", dir, "'");
    m.by_class[l[i]].push_back(i);
  }
  for (int c = 0; c < 10; ++c) {
    TESSERA_CHECK(!m.by_class[c].empty(), "MNIST ", split, " split in '", dir, "' has no digit ", c);
  }
  return m;
}

std::pair<DatasetPtr, DatasetPtr> mnist_generated_splits(
    const Config& config, Splits splits,
    const std::function<DatasetPtr(std::shared_ptr<const MnistDigits>, int64_t, int64_t)>& make) {
  const auto& d = config.data;
  const auto split = [&](const std::string& name, int64_t size, int64_t seed) {
    return make(std::make_shared<const MnistDigits>(load_mnist(d.mnist_dir, name)), size, seed);
  };
  return {splits.train ? split("train", d.train_size, d.train_seed) : nullptr,
          splits.test ? split("test", d.test_size, d.test_seed) : nullptr};
}

namespace {
constexpr float kMnistMean = 0.1307f, kMnistStd = 0.3081f;
}

Normalization mnist_normalization(int64_t channels) {
  const auto n = static_cast<size_t>(channels);
  return {std::vector<float>(n, kMnistMean), std::vector<float>(n, kMnistStd)};
}

Sample mnist_canvas_sample(torch::Tensor picture, int64_t channels, const std::string& task, int64_t label) {
  auto image = picture.sub_(kMnistMean).div_(kMnistStd);
  Sample s;
  s.image = channels == 3 ? image.expand({3, -1, -1}).contiguous() : image;
  s.labels[task] = torch::tensor(label);
  return s;
}

}  // namespace tessera::data
