// The encoder registry: every patch encoder tessera builds, by name, with its architecture, default
// arguments, preprocessing and weight loader, and model folders (config.json + weights, as hubs lay
// them out) resolved to the same description. Methods, workflows and benchmarks find everything about
// an encoder here; no other file names an architecture.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "tessera/models/backbone.h"
#include "tessera/models/safetensors.h"

namespace tessera {
struct ModelConfig;
}

namespace tessera::models {

// How images reach the encoder (timm's pretrained_cfg).
struct Preprocessing {
  int64_t channels = 3, height = 224, width = 224;  // input_size
  std::string interpolation = "bicubic";              // bicubic | bilinear
  double crop_pct = 1.0;    // resize the shorter side to size / crop_pct, then centre-crop size
  std::vector<double> mean{0.485, 0.456, 0.406}, std{0.229, 0.224, 0.225};
  double mpp = 0;           // um/px the model was trained at, when known (0: unknown)
};

// A resolved encoder: what builds it and how it reads images, independent of where it came from.
struct EncoderSpec {
  std::string source;        // what was asked for: a registered name or a model folder
  std::string architecture;  // a registered architecture (resnet18, vit_large_patch16_224, ...)
  nlohmann::json args = nlohmann::json::object();  // the architecture's arguments over its defaults (timm's model_args)
  std::string output;        // how features are pooled beyond timm's global_pool: "" | "cls_mean" (Virchow2)
  Preprocessing preprocessing;
  std::string weights;       // a model folder's weight file (model.safetensors / pytorch_model.bin), else ""

  bool is_vit() const;
};

// One registry row, for listings (tessera embed --list-encoders).
struct EncoderInfo {
  std::string name, architecture, summary;
  bool named_model = false;  // a foundation model's settings (uni, virchow2, ...) rather than a bare architecture
};
std::vector<EncoderInfo> list_encoders();

// name: a registered encoder or a model folder (config.json with architecture, model_args,
// pretrained_cfg, and model.safetensors or pytorch_model.bin). args_json: a JSON object of arguments
// that override (timm's names; strings swiglu_packed, swiglu, mlp, gelu, silu stand for timm's classes).
EncoderSpec resolve_encoder(const std::string& name, const std::string& args_json = "");
// A run's encoder arguments: model.encoder_args with the fine-tuning keys folded in (model.train_blocks,
// model.lora_rank / lora_alpha / lora_targets, model.grad_checkpointing), as a JSON object text. They
// apply to ViT encoders; asking them of another encoder is an error naming the key.
std::string model_encoder_args(const ModelConfig& model);

// Builds the encoder a spec describes. common: what the run adds (input channels, a replaced final
// Linear of out_features, the ResNet options, frozen BatchNorm).
BackbonePtr make_encoder(const EncoderSpec& spec, const BackboneOptions& common);

// A weight file: safetensors, or a torch.save'd state dict (pytorch_model.bin, .pth, .pt) unwrapped from
// state_dict / model / teacher and stripped of module. / backbone. prefixes.
StateDict read_encoder_weights(const std::string& path);

// Loads weights into an encoder. Strict: a missing, unexpected or mis-shaped tensor is an error listing the
// first names. A final Linear the run replaced (other out_features) keeps its initialisation either way.
// Returns the number of tensors loaded.
int64_t load_encoder_weights(BackboneImpl& encoder, const std::string& path, bool strict);

// The spec's arguments as timm's model_args and pretrained_cfg, with tessera-only options dropped and
// the class strings kept (config.json of an exported folder).
nlohmann::json encoder_folder_config(const EncoderSpec& spec, int64_t num_features);
// Writes a model folder: config.json + model.safetensors (fp32) with the encoder's tensors (timm names).
void export_encoder_folder(const EncoderSpec& spec, BackboneImpl& encoder, const std::string& folder);

nlohmann::json to_json(const EncoderSpec& spec);
EncoderSpec encoder_spec_from_json(const nlohmann::json& json, const std::string& origin);

}  // namespace tessera::models
