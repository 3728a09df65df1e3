#include "tessera/models/state_dict.h"

#include <torch/torch.h>

#include <regex>

#include "tessera/core/error.h"

namespace tessera::models {

StateDict read_state_dict(const std::string& path, const std::string& key) {
  c10::IValue value = read_pickle(path);
  TESSERA_CHECK(value.isGenericDict(), "'", path, "' does not hold a dict of tensors");
  if (!key.empty()) {
    auto outer = value.toGenericDict();
    TESSERA_CHECK(outer.contains(key), "'", path, "' has no entry '", key, "'");
    value = outer.at(key);
    TESSERA_CHECK(value.isGenericDict(), "entry '", key, "' of '", path, "' is not a dict of tensors");
  }
  StateDict out;
  for (const auto& item : value.toGenericDict()) {
    if (item.value().isTensor()) out[item.key().toStringRef()] = item.value().toTensor();
  }
  TESSERA_CHECK(!out.empty(), "'", path, "' holds no tensors");
  return out;
}

LoadReport load_state_dict(torch::nn::Module& module, const StateDict& dict, bool strict) {
  LoadReport report;
  auto targets = module.named_parameters(/*recurse=*/true);
  auto buffers = module.named_buffers(/*recurse=*/true);
  std::map<std::string, torch::Tensor> all;
  for (const auto& p : targets) all[p.key()] = p.value();
  for (const auto& b : buffers) all[b.key()] = b.value();

  torch::NoGradGuard no_grad;
  for (const auto& [name, src] : dict) {
    auto it = all.find(name);
    if (it == all.end()) {
      report.unexpected.push_back(name);
      continue;
    }
    auto& dst = it->second;
    torch::Tensor value = src;
    if (dst.dim() == 4 && value.dim() == 4 && dst.size(1) == 1 && value.size(1) == 3 &&
        dst.sizes().slice(2) == value.sizes().slice(2) && dst.size(0) == value.size(0)) {
      value = value.sum(1, /*keepdim=*/true);  // RGB stem -> grey stem
    }
    TESSERA_CHECK(dst.sizes() == value.sizes(), "state dict entry '", name, "' has shape ", value.sizes(),
                  " but the model expects ", dst.sizes(), "; check the architecture options");
    dst.copy_(value.to(dst.dtype()));
    report.loaded.push_back(name);
  }
  for (const auto& [name, t] : all) {
    if (!dict.count(name)) report.missing.push_back(name);
  }
  if (strict) {
    TESSERA_CHECK(report.missing.empty(), "state dict lacks ", report.missing.size(), " entries, first '",
                  report.missing.empty() ? "" : report.missing.front(), "'");
    TESSERA_CHECK(report.unexpected.empty(), "state dict has ", report.unexpected.size(),
                  " unknown entries, first '", report.unexpected.empty() ? "" : report.unexpected.front(), "'");
  }
  return report;
}

StateDict map_reference_ips(const StateDict& reference, bool features) {
  // The feature projector is nn.Sequential(LayerNorm (no parameters), Linear, BatchNorm1d, ReLU).
  static const std::vector<std::pair<std::regex, std::string>> projector_rules = {
      {std::regex(R"(^encoder\.1\.)"), "projector.fc."},
      {std::regex(R"(^encoder\.2\.)"), "projector.bn."},
  };
  // The image encoder is nn.Sequential(conv1, bn1, relu, maxpool, layer1, layer2[, layer3, layer4], avgpool).
  static const std::vector<std::pair<std::regex, std::string>> image_rules = {
      {std::regex(R"(^encoder\.0\.)"), "encoder.conv1."},
      {std::regex(R"(^encoder\.1\.)"), "encoder.bn1."},
      {std::regex(R"(^encoder\.4\.)"), "encoder.layer1."},
      {std::regex(R"(^encoder\.5\.)"), "encoder.layer2."},
      {std::regex(R"(^encoder\.6\.)"), "encoder.layer3."},
      {std::regex(R"(^encoder\.7\.)"), "encoder.layer4."},
  };
  static const std::vector<std::pair<std::regex, std::string>> shared_rules = {
      {std::regex(R"(^transf\.crs_attn\.layer_norm\.)"), "aggregator.ln1."},
      {std::regex(R"(^transf\.mlp\.layer_norm\.)"), "aggregator.ln2."},
      {std::regex(R"(^transf\.crs_attn\.)"), "aggregator."},
      {std::regex(R"(^transf\.mlp\.)"), "aggregator."},
      {std::regex(R"(^output_layers\.([^.]+)\.0\.)"), "heads.$1."},
  };
  StateDict out;
  for (const auto& [name, tensor] : reference) {
    std::string mapped = name;
    auto rules = features ? projector_rules : image_rules;
    rules.insert(rules.end(), shared_rules.begin(), shared_rules.end());
    for (const auto& [pattern, replacement] : rules) {
      if (std::regex_search(mapped, pattern)) {
        mapped = std::regex_replace(mapped, pattern, replacement, std::regex_constants::format_first_only);
        break;
      }
    }
    TESSERA_CHECK(mapped != name, "reference IPSNet entry '", name, "' has no tessera counterpart; is this an IPSNet ",
                  features ? "feature-bag (is_image: False)" : "image", " state dict?");
    out[mapped] = tensor;
  }
  return out;
}

StateDict with_prefix(const StateDict& dict, const std::string& prefix) {
  StateDict out;
  for (const auto& [k, v] : dict) out[prefix + k] = v;
  return out;
}

}  // namespace tessera::models
