#include "tessera/train/precise_bn.h"

#include <torch/torch.h>

#include "tessera/core/distributed.h"
#include "tessera/core/error.h"
#include "tessera/data/loader.h"

namespace tessera::train {

namespace {

// The options and buffers of one BatchNorm layer, whatever its dimension.
struct Layer {
  c10::optional<double>* momentum;
  torch::Tensor running_mean, running_var, batches_tracked;
};

template <typename Impl>
bool add_layer(torch::nn::Module& m, std::vector<Layer>& layers) {
  auto* bn = m.as<Impl>();
  if (!bn || !bn->options.track_running_stats()) return false;
  layers.push_back({&bn->options.momentum(), bn->running_mean, bn->running_var, bn->num_batches_tracked});
  return true;
}

}  // namespace

int64_t recompute_batch_norm_statistics(methods::Method& method, const data::DatasetPtr& dataset,
                                        std::vector<int64_t> indices, int64_t batch_size, int64_t workers,
                                        int64_t prefetch) {
  std::vector<Layer> layers;
  for (const auto& m : method.module().modules(/*include_self=*/false)) {
    add_layer<torch::nn::BatchNorm1dImpl>(*m, layers) || add_layer<torch::nn::BatchNorm2dImpl>(*m, layers);
  }
  if (layers.empty() || indices.empty()) return 0;
  torch::NoGradGuard no_grad;
  std::vector<c10::optional<double>> momenta;
  std::vector<torch::Tensor> counters;
  for (auto& layer : layers) {
    momenta.push_back(*layer.momentum);
    counters.push_back(layer.batches_tracked.clone());
    // No momentum: LibTorch averages with weight 1 / batches_tracked, so the first training-mode pass
    // replaces the old statistics and later ones average in. Until then eval-mode passes (IPS's
    // selection) still see the old statistics, which resetting them first would destroy.
    *layer.momentum = c10::nullopt;
    layer.batches_tracked.zero_();
  }
  data::Loader loader(dataset, std::move(indices), batch_size, workers, prefetch);
  int64_t batches = 0;
  while (auto batch = loader.next()) {
    method.forward_for_statistics(*batch);
    ++batches;
  }
  const double world = static_cast<double>(dist::world_size());
  if (world > 1) {
    // Ranks average their averages, all layers in one message; a layer no rank trained (frozen) is left
    // as it is on every rank.
    std::vector<torch::Tensor> parts;
    for (const auto& layer : layers) {
      parts.push_back(layer.running_mean.flatten());
      parts.push_back(layer.running_var.flatten());
      parts.push_back(layer.batches_tracked.gt(0).to(layer.running_mean.dtype()).view({1}));
    }
    auto stats = torch::cat(parts);
    dist::all_reduce_sum(stats, "precise BatchNorm statistics");
    const auto flags = stats.to(torch::kCPU, torch::kDouble);  // one copy from the device for all the flags
    const double* flag = flags.data_ptr<double>();
    int64_t offset = 0;
    for (auto& layer : layers) {
      const int64_t c = layer.running_mean.numel();
      const double trained = flag[offset + 2 * c];
      if (trained > 0) {
        TESSERA_ASSERT(trained == world, "every rank trains the same BatchNorm layers");
        layer.running_mean.copy_(stats.slice(0, offset, offset + c).view_as(layer.running_mean) / world);
        layer.running_var.copy_(stats.slice(0, offset + c, offset + 2 * c).view_as(layer.running_var) / world);
      }
      offset += 2 * c + 1;
    }
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    *layers[i].momentum = momenta[i];
    layers[i].batches_tracked.copy_(counters[i]);
  }
  return batches;
}

}  // namespace tessera::train
