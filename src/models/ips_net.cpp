#include "tessera/models/ips_net.h"

#include <torch/torch.h>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/models/encoder_registry.h"

namespace tessera::models {

IpsNetOptions ips_net_options(const ModelConfig& c, const std::vector<Task>& tasks) {
  IpsNetOptions o;
  o.features = c.encoder == "projector";
  o.projector.in_features = c.in_features;
  o.projector.dim = c.dim;
  o.projection_head = c.projection_head;
  if (!o.features) o.encoder.arch = c.encoder;
  if (!o.features) o.encoder.args = model_encoder_args(c);
  o.encoder.in_channels = c.in_channels;
  o.encoder.stages = c.stages;
  o.encoder.width = c.width;
  o.aggregator.heads = c.heads;
  o.aggregator.d_k = c.d_k;
  o.aggregator.d_v = c.d_v;
  o.aggregator.d_inner = c.d_inner;
  o.aggregator.dropout = c.dropout;
  o.aggregator.attn_dropout = c.attn_dropout;
  o.tasks = tasks;
  o.pos_enc = c.pos_enc;
  o.freeze_bn = c.freeze_bn;
  return o;
}

IpsNetImpl::IpsNetImpl(IpsNetOptions options) : options_(std::move(options)) {
  TESSERA_CHECK(!options_.tasks.empty(), "an IPS network needs at least one task");
  if (options_.features) {
    projector = register_module("projector", Projector(options_.projector));
  } else {
    auto b = options_.encoder;
    b.out_features = 0;
    b.freeze_bn = options_.freeze_bn;
    encoder = register_module("encoder", make_backbone(b));
    encoder->use_channels_last();
    if (options_.projection_head) {
      auto p = options_.projector;
      p.in_features = encoder->out_features();
      projector = register_module("projector", Projector(p));
    }
  }
  options_.aggregator.dim = dim();
  options_.aggregator.tokens = static_cast<int64_t>(options_.tasks.size());
  aggregator = register_module("aggregator", CrossAttention(options_.aggregator));
  torch::OrderedDict<std::string, std::shared_ptr<torch::nn::Module>> task_heads;
  for (const auto& t : options_.tasks) {
    TESSERA_CHECK(t.activation == "softmax" || t.activation == "sigmoid", "task '", t.name,
                  "' has activation '", t.activation, "'; use softmax or sigmoid");
    task_heads.insert(t.name, torch::nn::Linear(dim(), t.outputs).ptr());
  }
  heads = register_module("heads", torch::nn::ModuleDict(task_heads));
}

torch::Tensor IpsNetImpl::backbone(const torch::Tensor& patches) {
  return options_.features ? patches : encoder->forward(patches);
}

torch::Tensor IpsNetImpl::head(const torch::Tensor& features) { return projector ? projector->forward(features) : features; }

std::function<torch::Tensor(const torch::Tensor&)> IpsNetImpl::frozen_encoder() const {
  if (options_.features) return projector->frozen();
  auto image = encoder->inference_function();
  if (!projector) return image;
  return [image, project = projector->frozen()](const torch::Tensor& x) { return project(image(x)); };
}

torch::Tensor IpsNetImpl::positions(const torch::Tensor& idx) const {
  if (!options_.pos_enc) return {};
  return sinusoidal_encoding(idx, dim());
}

TaskTensors IpsNetImpl::aggregate(const torch::Tensor& emb, const torch::Tensor& pad_mask) {
  const auto tokens = aggregator->forward(emb, pad_mask);  // (B, T, D)
  TaskTensors out;
  for (size_t t = 0; t < options_.tasks.size(); ++t) {
    const auto& task = options_.tasks[t];
    const auto logits = heads[task.name]->as<torch::nn::Linear>()->forward(tokens.select(1, t));
    out[task.name] = task.activation == "softmax" ? torch::softmax(logits, -1, torch::kFloat)
                                                     : torch::sigmoid(logits.to(torch::kFloat));
  }
  return out;
}

}  // namespace tessera::models
