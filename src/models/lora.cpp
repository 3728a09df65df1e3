#include "tessera/models/lora.h"

#include <torch/torch.h>

#include <cmath>
#include <sstream>

#include "tessera/core/error.h"

namespace tessera::models {

unsigned parse_lora_targets(const std::string& text, const std::string& origin) {
  unsigned targets = 0;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item == "qkv") targets |= kLoraQkv;
    else if (item == "proj") targets |= kLoraProj;
    else if (item == "mlp") targets |= kLoraMlp;
    else fail(origin, ": LoRA target '", item, "' is not one of qkv, proj, mlp (e.g. qkv,proj)");
  }
  TESSERA_CHECK(targets != 0, origin, ": LoRA needs at least one target of qkv, proj, mlp (e.g. qkv,proj)");
  return targets;
}

std::string lora_targets_name(unsigned targets) {
  std::string out;
  for (const auto& [bit, name] : {std::pair{kLoraQkv, "qkv"}, std::pair{kLoraProj, "proj"}, std::pair{kLoraMlp, "mlp"}}) {
    if (targets & bit) out += (out.empty() ? "" : ",") + std::string(name);
  }
  return out;
}

LoraImpl::LoraImpl(int64_t in_features, int64_t out_features, const LoraOptions& options) : scale_(options.scale()) {
  TESSERA_CHECK(options.rank > 0 && options.rank <= std::min(in_features, out_features), "LoRA rank ", options.rank,
                " must be in [1, ", std::min(in_features, out_features), "] for a ", in_features, " -> ", out_features,
                " layer; lower model.lora_rank");
  TESSERA_CHECK(options.alpha >= 0, "model.lora_alpha must be >= 0 (0: the rank), got ", options.alpha);
  // peft's initialisation: A as nn.Linear's weight (Kaiming uniform, a = sqrt(5)), B zero.
  lora_A = register_parameter("lora_A", torch::empty({options.rank, in_features}));
  torch::nn::init::kaiming_uniform_(lora_A, std::sqrt(5.0));
  lora_B = register_parameter("lora_B", torch::zeros({out_features, options.rank}));
}

torch::Tensor LoraImpl::delta(const torch::Tensor& x) const {
  return torch::linear(torch::linear(x, lora_A), lora_B) * scale_;
}

torch::Tensor LoraImpl::merged(const torch::Tensor& weight) const {
  torch::NoGradGuard no_grad;
  return (weight.to(torch::kFloat) + torch::matmul(lora_B.to(torch::kFloat), lora_A.to(torch::kFloat)) * scale_)
      .to(weight.scalar_type());
}

}  // namespace tessera::models
