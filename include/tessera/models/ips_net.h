// The IPS network: a patch encoder, the cross-attention aggregator with one token per task, the
// positional encoding and one linear head per task.
#pragma once
#include <torch/nn/module.h>
#include <torch/nn/modules/container/moduledict.h>
#include <torch/nn/pimpl.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tessera/core/task.h"
#include "tessera/models/cross_attention.h"
#include "tessera/models/projector.h"
#include "tessera/models/backbone.h"

namespace tessera {
struct ModelConfig;
}

namespace tessera::models {

struct IpsNetOptions {
  bool features = false;  // inputs are pre-extracted feature rows (projector) instead of image patches (encoder)
  // Image encoders: the projector (LayerNorm, Linear to projector.dim, BatchNorm over the winners, ReLU)
  // between the encoder and the aggregator, as feature bags have it.
  bool projection_head = false;
  BackboneOptions encoder = [] {
    BackboneOptions b;
    b.arch = "resnet18";
    return b;
  }();
  ProjectorOptions projector;
  CrossAttentionOptions aggregator;  // dim and tokens are filled from the encoder and the tasks
  std::vector<Task> tasks;
  bool pos_enc = true;
  bool freeze_bn = false;  // the encoder's BatchNorm stays in eval mode
};

IpsNetOptions ips_net_options(const ModelConfig& config, const std::vector<Task>& tasks);

class IpsNetImpl : public torch::nn::Module {
 public:
  explicit IpsNetImpl(IpsNetOptions options);

  // patches (K, C, h, w) or feature rows (K, F) -> embeddings (K, D), current module and grad mode:
  // head(backbone(x)).
  torch::Tensor encode(const torch::Tensor& patches) { return head(backbone(patches)); }
  // The per-patch part: the image encoder (feature rows: the rows themselves).
  torch::Tensor backbone(const torch::Tensor& patches);
  // The part over all winners at once: the projector (feature rows, or an image encoder's projection
  // head; its BatchNorm sees the whole batch), else the identity.
  torch::Tensor head(const torch::Tensor& features);
  // The eval-mode encoder as a function for no-gradient passes (the encoder's inference_function: a
  // ResNet with BatchNorm folded, a ViT as it is, the projector's frozen copy). Rebuild after a step.
  std::function<torch::Tensor(const torch::Tensor&)> frozen_encoder() const;
  // Positional encodings (B, L, D) for patch indices (B, L), or undefined when disabled.
  torch::Tensor positions(const torch::Tensor& idx) const;
  // Aggregates embeddings (B, L, D) (+ positions) into task outputs after their activations.
  TaskTensors aggregate(const torch::Tensor& emb, const torch::Tensor& pad_mask = {});

  int64_t dim() const { return projector ? projector->dim() : encoder->out_features(); }
  const IpsNetOptions& options() const { return options_; }

  BackbonePtr encoder;            // image patches (any registered encoder)
  Projector projector{nullptr};   // feature rows, or the projection head of an image encoder
  CrossAttention aggregator{nullptr};
  torch::nn::ModuleDict heads{nullptr};

 private:
  IpsNetOptions options_;
};
TORCH_MODULE(IpsNet);

}  // namespace tessera::models
