#include "tessera/models/encoder_registry.h"

#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "tessera/core/config.h"
#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/pickle.h"
#include "tessera/core/run_dir.h"
#include "tessera/models/mobilenet_v2.h"
#include "tessera/models/resnet.h"
#include "tessera/models/state_dict.h"
#include "tessera/models/vit.h"

namespace tessera::models {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

enum class Family { kResNet, kMobileNet, kVit };

struct Architecture {
  std::string name;
  Family family;
  json defaults;  // timm's arguments of the architecture (ViTs)
  Preprocessing preprocessing;
  std::string summary;
};

Preprocessing imagenet(int64_t size, double crop_pct, const std::string& interpolation) {
  Preprocessing p;
  p.height = p.width = size;
  p.crop_pct = crop_pct;
  p.interpolation = interpolation;
  return p;
}

const std::vector<Architecture>& architectures() {
  static const std::vector<Architecture> table = [] {
    const auto cnn = imagenet(224, 0.875, "bilinear");  // torchvision's
    const auto vit = imagenet(224, 0.9, "bicubic");     // timm's
    const json dinov2 = {{"patch_size", 14}, {"embed_dim", 1536}, {"depth", 40}, {"num_heads", 24},
                         {"init_values", 1e-5}, {"mlp_ratio", 2.66667 * 2}, {"mlp_layer", "swiglu_packed"},
                         {"img_size", 518}, {"act_layer", "silu"}};
    json reg4 = dinov2;
    reg4["reg_tokens"] = 4;
    reg4["no_embed_class"] = true;
    auto dinov2_pre = imagenet(518, 1.0, "bicubic");
    return std::vector<Architecture>{
        {"resnet18", Family::kResNet, json::object(), cnn, "torchvision ResNet-18"},
        {"resnet34", Family::kResNet, json::object(), cnn, "torchvision ResNet-34"},
        {"resnet50", Family::kResNet, json::object(), cnn, "torchvision ResNet-50"},
        {"mobilenet_v2", Family::kMobileNet, json::object(), cnn, "torchvision MobileNetV2"},
        {"vit_small_patch16_224", Family::kVit, {{"patch_size", 16}, {"embed_dim", 384}, {"depth", 12}, {"num_heads", 6}},
         vit, "timm ViT-S/16"},
        {"vit_base_patch16_224", Family::kVit, {{"patch_size", 16}, {"embed_dim", 768}, {"depth", 12}, {"num_heads", 12}},
         vit, "timm ViT-B/16"},
        {"vit_large_patch16_224", Family::kVit, {{"patch_size", 16}, {"embed_dim", 1024}, {"depth", 24}, {"num_heads", 16}},
         vit, "timm ViT-L/16"},
        {"vit_huge_patch14_224", Family::kVit, {{"patch_size", 14}, {"embed_dim", 1280}, {"depth", 32}, {"num_heads", 16}},
         vit, "timm ViT-H/14"},
        {"vit_giant_patch14_224", Family::kVit,
         {{"patch_size", 14}, {"embed_dim", 1408}, {"mlp_ratio", 48.0 / 11.0}, {"depth", 40}, {"num_heads", 16}}, vit,
         "timm ViT-g/14"},
        {"vit_giant_patch14_dinov2", Family::kVit, dinov2, dinov2_pre, "timm DINOv2 ViT-g/14"},
        {"vit_giant_patch14_reg4_dinov2", Family::kVit, reg4, dinov2_pre, "timm DINOv2 ViT-g/14 with 4 registers"},
    };
  }();
  return table;
}

const Architecture* find_architecture(const std::string& name) {
  for (const auto& a : architectures()) {
    if (a.name == name) return &a;
  }
  return nullptr;
}

std::string architecture_names() {
  std::string out;
  for (const auto& a : architectures()) out += (out.empty() ? "" : ", ") + a.name;
  return out;
}

// The foundation models' published timm settings (docs/guide/encoders.md lists them): an architecture, arguments,
// how features are read, preprocessing.
struct NamedModel {
  std::string name, architecture;
  json args;
  std::string output;
  Preprocessing preprocessing;
  std::string summary;
};

const std::vector<NamedModel>& named_models() {
  static const std::vector<NamedModel> table = [] {
    const auto crop224 = imagenet(224, 1.0, "bicubic");
    auto hoptimus = crop224;
    hoptimus.mean = {0.707223, 0.578729, 0.703617};
    hoptimus.std = {0.211883, 0.230117, 0.177517};
    hoptimus.mpp = 0.5;
    const json uni2 = {{"patch_size", 14}, {"depth", 24}, {"num_heads", 24}, {"embed_dim", 1536},
                       {"mlp_ratio", 2.66667 * 2}, {"mlp_layer", "swiglu_packed"}, {"act_layer", "silu"},
                       {"reg_tokens", 8}, {"no_embed_class", true}, {"init_values", 1e-5}, {"dynamic_img_size", true},
                       {"num_classes", 0}};
    return std::vector<NamedModel>{
        {"uni", "vit_large_patch16_224", {{"init_values", 1e-5}, {"dynamic_img_size", true}, {"num_classes", 0}}, "",
         crop224, "UNI (MahmoodLab): ViT-L/16, 1024-d class token"},
        {"uni2-h", "vit_giant_patch14_224", uni2, "", crop224, "UNI2-h (MahmoodLab): ViT-H/14, 8 registers, 1536-d"},
        {"virchow2", "vit_huge_patch14_224",
         {{"init_values", 1e-5}, {"reg_tokens", 4}, {"mlp_ratio", 5.3375}, {"mlp_layer", "swiglu_packed"},
          {"act_layer", "silu"}, {"global_pool", ""}, {"num_classes", 0}},
         "cls_mean", crop224, "Virchow2 (Paige): ViT-H/14, 2560-d = class token + mean of the patch tokens"},
        {"h-optimus-0", "vit_giant_patch14_reg4_dinov2", {{"img_size", 224}, {"num_classes", 0}}, "", hoptimus,
         "H-optimus-0 (Bioptimus): ViT-g/14, 4 registers, 1536-d, 0.5 um/px"},
        {"h-optimus-1", "vit_giant_patch14_reg4_dinov2", {{"img_size", 224}, {"num_classes", 0}}, "", hoptimus,
         "H-optimus-1 (Bioptimus): ViT-g/14, 4 registers, 1536-d, 0.5 um/px"},
        {"prov-gigapath", "vit_giant_patch14_dinov2", {{"patch_size", 16}, {"img_size", 224}, {"num_classes", 0}}, "",
         imagenet(224, 224.0 / 256.0, "bicubic"), "Prov-GigaPath tile encoder: ViT-g/16, 1536-d"},
    };
  }();
  return table;
}

// Arguments tessera's ViT reads (timm's names, plus tessera's two training options).
const std::vector<std::string> kVitKeys = {
    "img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim", "depth", "num_heads",
    "mlp_ratio", "qkv_bias", "init_values", "class_token", "no_embed_class", "reg_tokens", "pre_norm",
    "final_norm", "fc_norm", "dynamic_img_size", "mlp_layer", "act_layer", "grad_checkpointing", "trainable_blocks",
    "lora_rank", "lora_alpha", "lora_targets"};
// timm arguments accepted only at their inference-time defaults (dropouts: tessera's ViT has none).
const std::vector<std::pair<std::string, json>> kVitFixed = {
    {"drop_rate", 0.0}, {"pos_drop_rate", 0.0}, {"patch_drop_rate", 0.0}, {"proj_drop_rate", 0.0},
    {"attn_drop_rate", 0.0}, {"drop_path_rate", 0.0}, {"qk_norm", false}, {"dynamic_img_pad", false},
    {"pos_embed", "learn"}, {"weight_init", ""}};
const std::vector<std::string> kTesseraOnly = {"grad_checkpointing", "trainable_blocks", "lora_rank", "lora_alpha",
                                               "lora_targets"};

template <typename T>
T arg(const json& args, const std::string& key, const std::string& origin) {
  try {
    return args.at(key).get<T>();
  } catch (const json::exception&) {
    fail(origin, ": argument ", key, " = ", args.at(key).dump(), " has the wrong type");
  }
}

VitOptions vit_options(const json& args, const std::string& origin) {
  VitOptions o;
  for (const auto& [key, value] : args.items()) {
    const bool known = std::find(kVitKeys.begin(), kVitKeys.end(), key) != kVitKeys.end();
    if (known) continue;
    const auto fixed = std::find_if(kVitFixed.begin(), kVitFixed.end(), [&key = key](const auto& f) { return f.first == key; });
    TESSERA_CHECK(fixed != kVitFixed.end(), origin, ": the ViT has no argument '", key, "'; known: img_size, patch_size, ",
                  "in_chans, num_classes, global_pool, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, init_values, ",
                  "class_token, no_embed_class, reg_tokens, pre_norm, final_norm, fc_norm, dynamic_img_size, mlp_layer, ",
                  "act_layer, grad_checkpointing, trainable_blocks, lora_rank, lora_alpha, lora_targets");
    TESSERA_CHECK(value == fixed->second || (value.is_number() && fixed->second.is_number() && value.get<double>() == 0),
                  origin, ": argument ", key, " = ", value.dump(), " is not supported (tessera's ViT takes only ",
                  fixed->second.dump(), ")");
  }
  const auto has = [&](const char* k) { return args.contains(k) && !args.at(k).is_null(); };
  if (has("img_size")) {
    const auto& v = args.at("img_size");
    if (v.is_array()) {
      TESSERA_CHECK(v.size() == 2 && v[0] == v[1], origin, ": img_size ", v.dump(), " is not square; tessera's ViT ",
                    "takes one side (use dynamic_img_size for other inputs)");
      o.img_size = v[0].get<int64_t>();
    } else {
      o.img_size = arg<int64_t>(args, "img_size", origin);
    }
  }
  if (has("patch_size")) o.patch_size = arg<int64_t>(args, "patch_size", origin);
  if (has("in_chans")) o.in_chans = arg<int64_t>(args, "in_chans", origin);
  if (has("num_classes")) o.num_classes = arg<int64_t>(args, "num_classes", origin);
  if (has("global_pool")) {
    const auto pool = arg<std::string>(args, "global_pool", origin);
    TESSERA_CHECK(pool == "token" || pool == "avg" || pool.empty(), origin, ": global_pool '", pool,
                  "' is not supported; use token, avg or '' (every token)");
    o.global_pool = pool == "token" ? VitPool::kToken : pool == "avg" ? VitPool::kAvg : VitPool::kNone;
  }
  if (has("embed_dim")) o.embed_dim = arg<int64_t>(args, "embed_dim", origin);
  if (has("depth")) o.depth = arg<int64_t>(args, "depth", origin);
  if (has("num_heads")) o.num_heads = arg<int64_t>(args, "num_heads", origin);
  if (has("mlp_ratio")) o.mlp_ratio = arg<double>(args, "mlp_ratio", origin);
  if (has("qkv_bias")) o.qkv_bias = arg<bool>(args, "qkv_bias", origin);
  if (has("init_values")) o.init_values = arg<double>(args, "init_values", origin);
  if (has("class_token")) o.class_token = arg<bool>(args, "class_token", origin);
  if (has("no_embed_class")) o.no_embed_class = arg<bool>(args, "no_embed_class", origin);
  if (has("reg_tokens")) o.reg_tokens = arg<int64_t>(args, "reg_tokens", origin);
  if (has("pre_norm")) o.pre_norm = arg<bool>(args, "pre_norm", origin);
  if (has("final_norm")) o.final_norm = arg<bool>(args, "final_norm", origin);
  if (has("fc_norm")) o.fc_norm = arg<bool>(args, "fc_norm", origin) ? 1 : 0;
  if (has("dynamic_img_size")) o.dynamic_img_size = arg<bool>(args, "dynamic_img_size", origin);
  if (has("grad_checkpointing")) o.checkpoint_blocks = arg<bool>(args, "grad_checkpointing", origin);
  if (has("trainable_blocks")) o.trainable_blocks = arg<int64_t>(args, "trainable_blocks", origin);
  if (has("lora_rank")) o.lora.rank = arg<int64_t>(args, "lora_rank", origin);
  if (has("lora_alpha")) o.lora.alpha = arg<double>(args, "lora_alpha", origin);
  if (has("lora_targets")) o.lora.targets = parse_lora_targets(arg<std::string>(args, "lora_targets", origin), origin);
  if (has("mlp_layer")) {
    const auto m = arg<std::string>(args, "mlp_layer", origin);
    TESSERA_CHECK(m == "mlp" || m == "swiglu_packed" || m == "swiglu", origin, ": mlp_layer '", m,
                  "' is not one of mlp, swiglu_packed, swiglu");
    o.mlp_layer = m == "mlp" ? VitMlp::kMlp : m == "swiglu" ? VitMlp::kSwiGlu : VitMlp::kSwiGluPacked;
  }
  if (has("act_layer")) {
    const auto a = arg<std::string>(args, "act_layer", origin);
    TESSERA_CHECK(a == "gelu" || a == "silu", origin, ": act_layer '", a, "' is not one of gelu, silu");
    o.act_layer = a == "gelu" ? VitAct::kGelu : VitAct::kSilu;
  }
  return o;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in, "cannot read '", path, "'");
  return {std::istreambuf_iterator<char>(in), {}};
}

json parse_json(const std::string& text, const std::string& origin) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(origin, " is not valid JSON (", e.what(), ")");
  }
}

Preprocessing preprocessing_from(const json& cfg, Preprocessing p, const std::string& origin) {
  try {
    if (cfg.contains("input_size")) {
      const auto& s = cfg.at("input_size");
      TESSERA_CHECK(s.is_array() && s.size() == 3, origin, ": pretrained_cfg.input_size must be [C, H, W], got ", s.dump());
      p.channels = s[0].get<int64_t>();
      p.height = s[1].get<int64_t>();
      p.width = s[2].get<int64_t>();
    }
    if (cfg.contains("interpolation")) p.interpolation = cfg.at("interpolation").get<std::string>();
    if (cfg.contains("crop_pct") && !cfg.at("crop_pct").is_null()) p.crop_pct = cfg.at("crop_pct").get<double>();
    if (cfg.contains("mean")) p.mean = cfg.at("mean").get<std::vector<double>>();
    if (cfg.contains("std")) p.std = cfg.at("std").get<std::vector<double>>();
    if (cfg.contains("mpp") && cfg.at("mpp").is_number()) p.mpp = cfg.at("mpp").get<double>();
  } catch (const json::exception& e) {
    fail(origin, ": pretrained_cfg has a value of the wrong type (", e.what(), ")");
  }
  TESSERA_CHECK(p.interpolation == "bicubic" || p.interpolation == "bilinear", origin, ": interpolation '",
                p.interpolation, "' is not bicubic or bilinear");
  TESSERA_CHECK(p.crop_pct > 0 && p.crop_pct <= 1, origin, ": crop_pct must be in (0, 1], got ", p.crop_pct);
  TESSERA_CHECK(p.mean.size() == static_cast<size_t>(p.channels) && p.std.size() == static_cast<size_t>(p.channels),
                origin, ": mean and std need one value per input channel (", p.channels, ")");
  TESSERA_CHECK(p.height > 0 && p.width > 0 && p.height <= 16384 && p.width <= 16384, origin, ": input_size ", p.height,
                "x", p.width, " is not a plausible encoder input");
  return p;
}

// The weight file of a model folder, in the order hubs prefer.
std::string folder_weights(const fs::path& folder) {
  for (const char* name : {"model.safetensors", "pytorch_model.bin", "model.pth", "model.pt"}) {
    if (fs::is_regular_file(folder / name)) return (folder / name).string();
  }
  return "";
}

EncoderSpec resolve_folder(const fs::path& folder) {
  const auto config_path = (folder / "config.json").string();
  TESSERA_CHECK(fs::is_regular_file(config_path), "model folder '", folder.string(),
                "' has no config.json; a folder from a model hub holds config.json and model.safetensors or pytorch_model.bin");
  const auto cfg = parse_json(read_text(config_path), "'" + config_path + "'");
  TESSERA_CHECK(cfg.is_object() && cfg.contains("architecture") && cfg.at("architecture").is_string(), "'", config_path,
                "' names no architecture (timm's config.json has \"architecture\": \"vit_large_patch16_224\", ...)");
  EncoderSpec spec;
  spec.source = folder.string();
  spec.architecture = cfg.at("architecture").get<std::string>();
  const auto* arch = find_architecture(spec.architecture);
  TESSERA_CHECK(arch, "'", config_path, "': architecture '", spec.architecture, "' is not one tessera builds (",
                architecture_names(), ")");
  if (cfg.contains("model_args")) {
    TESSERA_CHECK(cfg.at("model_args").is_object(), "'", config_path, "': model_args must be an object");
    spec.args = cfg.at("model_args");
  }
  // Top-level keys timm's hub configs also carry.
  for (const char* key : {"num_classes", "global_pool"}) {
    if (cfg.contains(key) && !spec.args.contains(key)) spec.args[key] = cfg.at(key);
  }
  if (cfg.contains("tessera_output")) spec.output = cfg.at("tessera_output").get<std::string>();
  spec.preprocessing = preprocessing_from(cfg.value("pretrained_cfg", json::object()), arch->preprocessing, "'" + config_path + "'");
  spec.weights = folder_weights(folder);
  TESSERA_CHECK(!spec.weights.empty(), "model folder '", folder.string(),
                "' has no weights (model.safetensors, pytorch_model.bin, model.pth or model.pt)");
  return spec;
}

BackbonePtr build_vit(const EncoderSpec& spec, const BackboneOptions& common) {
  json args = find_architecture(spec.architecture)->defaults;
  for (const auto& [k, v] : spec.args.items()) args[k] = v;
  auto o = vit_options(args, "encoder " + spec.source);
  if (!spec.args.contains("in_chans") && common.in_channels > 0) o.in_chans = common.in_channels;
  if (common.out_features > 0) o.num_classes = common.out_features;
  if (spec.output == "cls_mean") {
    TESSERA_CHECK(o.global_pool == VitPool::kNone, "encoder ", spec.source, ": output cls_mean needs global_pool ''");
    o.global_pool = VitPool::kClsMean;
  }
  return std::make_shared<VisionTransformerImpl>(o);
}

void check_no_args(const EncoderSpec& spec) {
  TESSERA_CHECK(spec.args.empty(), "encoder ", spec.source, " (", spec.architecture, ") takes no encoder arguments (got ",
                spec.args.dump(), "); its options are model.stages, model.width and model.width_mult");
}

// Unwraps what training code wraps a state dict in, down to the dict of tensors.
c10::IValue unwrap(c10::IValue value, const std::string& path) {
  for (int depth = 0; depth < 4 && value.isGenericDict(); ++depth) {
    const auto dict = value.toGenericDict();
    bool has_tensor = false;
    for (const auto& item : dict) has_tensor = has_tensor || item.value().isTensor();
    if (has_tensor) return value;
    bool descended = false;
    for (const char* key : {"state_dict", "model", "teacher", "module"}) {
      if (dict.contains(key) && dict.at(key).isGenericDict()) {
        value = dict.at(key);
        descended = true;
        break;
      }
    }
    if (!descended) break;
  }
  TESSERA_CHECK(value.isGenericDict(), "'", path, "' holds no state dict (a dict of tensors, or one under state_dict, ",
                "model or teacher)");
  return value;
}

std::string first_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < 5; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > 5) out += ", ...";
  return out;
}

}  // namespace

bool EncoderSpec::is_vit() const {
  const auto* a = find_architecture(architecture);
  return a && a->family == Family::kVit;
}

std::vector<EncoderInfo> list_encoders() {
  std::vector<EncoderInfo> out;
  for (const auto& a : architectures()) out.push_back({a.name, a.name, a.summary, false});
  for (const auto& m : named_models()) out.push_back({m.name, m.architecture, m.summary, true});
  return out;
}

EncoderSpec resolve_encoder(const std::string& name, const std::string& args_json) {
  EncoderSpec spec;
  if (const auto* arch = find_architecture(name)) {
    spec.source = spec.architecture = name;
    spec.preprocessing = arch->preprocessing;
  } else if (auto m = std::find_if(named_models().begin(), named_models().end(), [&](const auto& n) { return n.name == name; });
             m != named_models().end()) {
    spec.source = name;
    spec.architecture = m->architecture;
    spec.args = m->args;
    spec.output = m->output;
    spec.preprocessing = m->preprocessing;
  } else if (fs::is_directory(name)) {
    spec = resolve_folder(name);
  } else {
    std::string names;
    for (const auto& e : list_encoders()) names += (names.empty() ? "" : ", ") + e.name;
    fail("encoder '", name, "' is neither a registered encoder (", names,
         ") nor a model folder (config.json + weights); check the name or the path");
  }
  if (!args_json.empty()) {
    const auto overrides = parse_json(args_json, "encoder arguments '" + args_json + "'");
    TESSERA_CHECK(overrides.is_object(), "encoder arguments must be a JSON object such as '{\"depth\": 2}', got '",
                  args_json, "'");
    for (const auto& [k, v] : overrides.items()) spec.args[k] = v;
  }
  const auto* arch = find_architecture(spec.architecture);
  if (arch->family == Family::kVit) {
    json args = arch->defaults;
    for (const auto& [k, v] : spec.args.items()) args[k] = v;
    vit_options(args, "encoder " + spec.source).check();  // every argument checked before anything is built
    // The input size follows an img_size given in the arguments (a folder's pretrained_cfg still wins).
    if (!fs::is_directory(name) && spec.args.contains("img_size") && spec.args.at("img_size").is_number_integer()) {
      spec.preprocessing.height = spec.preprocessing.width = spec.args.at("img_size").get<int64_t>();
    }
  } else {
    check_no_args(spec);
  }
  return spec;
}

BackbonePtr make_encoder(const EncoderSpec& spec, const BackboneOptions& common) {
  const auto* arch = find_architecture(spec.architecture);
  TESSERA_CHECK(arch, "encoder architecture '", spec.architecture, "' is not one tessera builds (", architecture_names(), ")");
  BackbonePtr net;
  switch (arch->family) {
    case Family::kVit:
      net = build_vit(spec, common);
      break;
    case Family::kMobileNet: {
      check_no_args(spec);
      MobileNetV2Options m;
      m.in_channels = common.in_channels;
      m.width_mult = common.width_mult;
      m.num_outputs = common.out_features;
      net = std::make_shared<MobileNetV2Impl>(m);
      break;
    }
    case Family::kResNet: {
      check_no_args(spec);
      ResNetOptions r;
      r.arch = spec.architecture;
      r.in_channels = common.in_channels;
      r.stages = common.stages;
      r.width = common.width;
      r.num_outputs = common.out_features;
      r.recompute_stem = common.recompute_stem;
      net = std::make_shared<ResNetImpl>(r);
      break;
    }
  }
  net->freeze_batchnorm(common.freeze_bn);
  return net;
}

std::string model_encoder_args(const ModelConfig& m) {
  if (m.encoder == "projector") return m.encoder_args;
  const bool tunes = m.train_blocks >= 0 || m.lora_rank > 0 || m.grad_checkpointing;
  if (!tunes) return m.encoder_args;
  const auto spec = resolve_encoder(m.encoder, m.encoder_args);
  const char* key = m.lora_rank > 0 ? "model.lora_rank" : m.train_blocks >= 0 ? "model.train_blocks" : "model.grad_checkpointing";
  TESSERA_CHECK(spec.is_vit(), key, " applies to ViT encoders (vit_*, uni, a timm model folder, ...); model.encoder ",
                m.encoder, " is a ", spec.architecture, ": drop ", key, " or choose a ViT encoder");
  json args = spec.args;
  if (m.train_blocks >= 0) args["trainable_blocks"] = m.train_blocks;
  if (m.grad_checkpointing) args["grad_checkpointing"] = true;
  if (m.lora_rank > 0) {
    args["lora_rank"] = m.lora_rank;
    args["lora_alpha"] = m.lora_alpha;
    args["lora_targets"] = m.lora_targets;
  }
  return args.dump();
}

BackbonePtr make_backbone(const BackboneOptions& options) {
  return make_encoder(resolve_encoder(options.arch, options.args), options);
}

StateDict read_encoder_weights(const std::string& path) {
  TESSERA_CHECK(fs::is_regular_file(path), "weight file '", path, "' does not exist");
  StateDict dict;
  if (fs::path(path).extension() == ".safetensors") {
    dict = read_safetensors(path);
  } else {
    const auto value = unwrap(read_pickle(path), path);
    for (const auto& item : value.toGenericDict()) {
      if (item.key().isString() && item.value().isTensor()) dict[item.key().toStringRef()] = item.value().toTensor();
    }
  }
  TESSERA_CHECK(!dict.empty(), "'", path, "' holds no tensors");
  for (const std::string prefix : {"module.", "backbone.", "module.backbone."}) {
    const bool all = std::all_of(dict.begin(), dict.end(), [&](const auto& kv) { return kv.first.rfind(prefix, 0) == 0; });
    if (!all) continue;
    StateDict stripped;
    for (auto& [k, v] : dict) stripped[k.substr(prefix.size())] = v;
    dict = std::move(stripped);
  }
  return dict;
}

int64_t load_encoder_weights(BackboneImpl& encoder, const std::string& path, bool strict) {
  auto dict = read_encoder_weights(path);
  std::map<std::string, torch::Tensor> own;
  for (const auto& p : encoder.named_parameters()) own[p.key()] = p.value();
  for (const auto& b : encoder.named_buffers()) own[b.key()] = b.value();
  std::vector<std::string> missing, unexpected, misshaped;
  for (auto it = dict.begin(); it != dict.end();) {
    const auto mine = own.find(it->first);
    if (mine == own.end()) {
      unexpected.push_back(it->first);
      it = dict.erase(it);
      continue;
    }
    const bool final_layer = mine->second.dim() <= 2 && (it->first.rfind("fc.", 0) == 0 || it->first.rfind("head.", 0) == 0 ||
                                                         it->first.rfind("classifier.", 0) == 0);
    if (mine->second.sizes() != it->second.sizes()) {
      const bool grey_stem = mine->second.dim() == 4 && it->second.dim() == 4 && mine->second.size(1) == 1 &&
                             it->second.size(1) == 3;  // summed over RGB by load_state_dict
      if (final_layer) {  // the run replaced the final Linear: keep its initialisation
        it = dict.erase(it);
        continue;
      }
      if (!grey_stem) misshaped.push_back(it->first);
    }
    ++it;
  }
  for (const auto& [name, t] : own) {
    const bool final_layer = name.rfind("fc.", 0) == 0 || name.rfind("head.", 0) == 0 || name.rfind("classifier.", 0) == 0;
    const bool adapter = name.find("_lora.") != std::string::npos;  // LoRA adapters are new: they keep their start
    if (!dict.count(name) && !final_layer && !adapter) missing.push_back(name);
  }
  TESSERA_CHECK(misshaped.empty(), "'", path, "': ", misshaped.size(), " tensors have shapes the encoder does not (",
                first_names(misshaped), "); check the architecture and its arguments");
  if (strict) {
    TESSERA_CHECK(missing.empty(), "'", path, "' lacks ", missing.size(), " tensors of the encoder (", first_names(missing),
                  "); is it the weight file of this architecture and these arguments?");
    // Heads of classification checkpoints are the one kind of extra entry a strict load forgives.
    std::vector<std::string> extra;
    for (const auto& n : unexpected) {
      if (n.rfind("head.", 0) != 0 && n.rfind("fc.", 0) != 0 && n.rfind("classifier.", 0) != 0) extra.push_back(n);
    }
    TESSERA_CHECK(extra.empty(), "'", path, "' has ", extra.size(), " tensors the encoder does not (", first_names(extra),
                  "); is it the weight file of this architecture and these arguments?");
  }
  const auto report = load_state_dict(encoder, dict, /*strict=*/false);
  TESSERA_CHECK(!report.loaded.empty(), "no tensor of '", path, "' matches the encoder; is it the weight file of this architecture?");
  log::info("loaded {} encoder tensors from {}", report.loaded.size(), path);
  return static_cast<int64_t>(report.loaded.size());
}

json encoder_folder_config(const EncoderSpec& spec, int64_t num_features) {
  json args = spec.args;
  for (const auto& k : kTesseraOnly) args.erase(k);
  // tessera's encoders have no classifier unless asked; timm's architectures default to 1000 classes.
  if (!args.contains("num_classes")) args["num_classes"] = 0;
  const auto& p = spec.preprocessing;
  json cfg = {{"architecture", spec.architecture},
              {"num_classes", args.value("num_classes", 0)},
              {"num_features", num_features},
              {"global_pool", args.value("global_pool", std::string("token"))},
              {"model_args", args},
              {"pretrained_cfg",
               {{"input_size", {p.channels, p.height, p.width}},
                {"interpolation", p.interpolation},
                {"crop_pct", p.crop_pct},
                {"mean", p.mean},
                {"std", p.std},
                {"num_classes", args.value("num_classes", 0)}}}};
  if (p.mpp > 0) cfg["pretrained_cfg"]["mpp"] = p.mpp;
  if (!spec.output.empty()) cfg["tessera_output"] = spec.output;
  return cfg;
}

void export_encoder_folder(const EncoderSpec& spec, BackboneImpl& encoder, const std::string& folder) {
  TESSERA_CHECK(spec.is_vit(), "export-encoder writes timm model folders; ", spec.architecture,
                " is a torchvision architecture (save its state dict instead)");
  fs::create_directories(folder);
  StateDict tensors;
  const bool head = spec.args.value("num_classes", 0) > 0;  // a run's replaced final Linear is not the encoder's
  const auto* vit = encoder.as<VisionTransformerImpl>();
  TESSERA_ASSERT(vit, "a ViT spec built a ", encoder.name());
  for (const auto& [name, value] : vit->merged_state()) {  // LoRA adapters merged into plain weights
    if (head || name.rfind("head.", 0) != 0) tensors[name] = value.is_floating_point() ? value.to(torch::kFloat) : value;
  }
  write_safetensors((fs::path(folder) / "model.safetensors").string(), tensors);
  const int64_t features = head ? encoder.out_features() : encoder.feature_dim();
  write_file_atomic((fs::path(folder) / "config.json").string(), encoder_folder_config(spec, features).dump(2) + "\n");
}

json to_json(const EncoderSpec& s) {
  const auto& p = s.preprocessing;
  return {{"source", s.source},
          {"architecture", s.architecture},
          {"args", s.args},
          {"output", s.output},
          {"preprocessing",
           {{"input_size", {p.channels, p.height, p.width}}, {"interpolation", p.interpolation}, {"crop_pct", p.crop_pct},
            {"mean", p.mean}, {"std", p.std}, {"mpp", p.mpp}}}};
}

EncoderSpec encoder_spec_from_json(const json& j, const std::string& origin) {
  EncoderSpec s;
  try {
    s.source = j.value("source", std::string());
    s.architecture = j.at("architecture").get<std::string>();
    s.args = j.value("args", json::object());
    s.output = j.value("output", std::string());
  } catch (const json::exception& e) {
    fail(origin, ": the encoder record is damaged (", e.what(), ")");
  }
  TESSERA_CHECK(find_architecture(s.architecture), origin, ": encoder architecture '", s.architecture,
                "' is not one this tessera builds");
  s.preprocessing = preprocessing_from(j.value("preprocessing", json::object()), find_architecture(s.architecture)->preprocessing, origin);
  return s;
}

}  // namespace tessera::models
