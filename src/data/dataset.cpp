#include "tessera/data/dataset.h"

#include <torch/torch.h>

#include "tessera/core/error.h"

namespace tessera::data {

Batch collate(std::vector<Sample> samples, std::vector<int64_t> indices) {
  TESSERA_CHECK(!samples.empty(), "cannot make a batch from zero samples; is the data set empty?");
  Batch b;
  if (samples[0].bag) {
    for (size_t i = 0; i < samples.size(); ++i) {
      TESSERA_CHECK(samples[i].bag, "sample ", indices[i], " has no patch bag but sample ", indices[0], " has one");
      b.bags.push_back(samples[i].bag);
    }
  }
  std::vector<torch::Tensor> images;
  for (size_t i = 0; i < samples.size() && !samples[0].bag; ++i) {
    TESSERA_CHECK(samples[i].image.sizes() == samples[0].image.sizes(), "sample ", indices[i], " has image shape ",
                  samples[i].image.sizes(), " but sample ", indices[0], " has ", samples[0].image.sizes(),
                  "; images in one batch must share a size");
    images.push_back(samples[i].image);
  }
  if (!images.empty()) b.images = torch::stack(images);
  for (const auto& [task, _] : samples[0].labels) {
    std::vector<torch::Tensor> labels;
    for (const auto& s : samples) labels.push_back(s.labels.at(task));
    b.labels[task] = torch::stack(labels);
  }
  b.indices = std::move(indices);
  return b;
}

torch::Tensor Normalization::apply(const torch::Tensor& image, const std::string& what) const {
  if (mean.empty()) return image;
  const int64_t c = image.size(-3);
  TESSERA_CHECK(static_cast<int64_t>(mean.size()) == c && static_cast<int64_t>(std.size()) == c, what, " has ", c,
                " channels but the normalisation has ", mean.size(), " means and ", std.size(), " stds");
  return (image - torch::tensor(mean).view({c, 1, 1})) / torch::tensor(std).view({c, 1, 1});
}

}  // namespace tessera::data
