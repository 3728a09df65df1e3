#include "tessera/core/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <type_traits>

#include "tessera/core/error.h"
#include "tessera/core/precision.h"
#include "tessera/core/suggest.h"

namespace tessera {
namespace {

Config::Field field(const std::string& key, std::string* v, const char* help) {
  return {key, "TEXT", help, [v](const std::string& s) { *v = s; }, [v] { return *v; }};
}
template <typename T>
Config::Field number_field(const std::string& key, T* v, const char* kind, const char* type, const char* help) {
  return {key, type, help,
          [v, key, kind](const std::string& s) {
            size_t pos = 0;
            T parsed{};
            try {
              if constexpr (std::is_integral_v<T>) parsed = std::stoll(s, &pos);
              else parsed = std::stod(s, &pos);
            } catch (const std::exception&) {
              pos = 0;
            }
            TESSERA_CHECK(pos == s.size() && !s.empty(), "config key '", key, "' needs ", kind, ", got '", s, "'");
            *v = parsed;
          },
          [v] {
            std::ostringstream os;
            os.precision(10);
            os << *v;
            return os.str();
          }};
}
Config::Field field(const std::string& key, int64_t* v, const char* help) {
  return number_field(key, v, "an integer", "INT", help);
}
Config::Field field(const std::string& key, double* v, const char* help) {
  return number_field(key, v, "a number", "FLOAT", help);
}
Config::Field field(const std::string& key, bool* v, const char* help) {
  return {key, "BOOL", help,
          [v, key](const std::string& s) {
            if (s == "true" || s == "1" || s == "yes" || s == "on") *v = true;
            else if (s == "false" || s == "0" || s == "no" || s == "off") *v = false;
            else fail("config key '", key, "' needs true or false, got '", s, "'");
          },
          [v] { return std::string(*v ? "true" : "false"); }};
}

void flatten(const YAML::Node& node, const std::string& prefix, std::map<std::string, std::string>& out,
             const std::string& path) {
  if (node.IsMap()) {
    for (const auto& kv : node) {
      if (!kv.first.IsScalar()) {
        fail(path, ": a key under '", prefix.empty() ? "the top level" : prefix, "' is a list or a map; keys are names");
      }
      const std::string key = kv.first.Scalar();
      if (prefix.empty() && key == "spec") continue;  // a run's spec (train/run_spec.h), read on its own
      flatten(kv.second, prefix.empty() ? key : prefix + "." + key, out, path);
    }
  } else if (node.IsScalar()) {
    out[prefix] = node.Scalar();
  } else if (node.IsNull()) {
    out[prefix] = "";
  } else {
    fail(path, ": key '", prefix, "' must be a single value, not a list");
  }
}

bool one_of(const std::string& v, std::initializer_list<const char*> options) {
  return std::any_of(options.begin(), options.end(), [&](const char* o) { return v == o; });
}

}  // namespace

std::vector<Config::Field> Config::fields() {
  return {
      field("run.dir", &run_dir, "run directory: config, metrics, checkpoint, pictures"),
      field("data.dataset", &data.dataset, "data set: megapixel_mnist | ultramnist | ultramnist28 | scattered_mnist | csv | slides | feature_bags | tissue_tiles"),
      field("data.manifest", &data.manifest, "slides, feature_bags: CSV with slide,label[,split] columns"),
      field("data.mnist_dir", &data.mnist_dir, "folder with the MNIST IDX files (scripts/get-mnist.sh)"),
      field("data.height", &data.height, "image height in pixels (generated sets: canvas; csv: every image's height)"),
      field("data.width", &data.width, "image width in pixels"),
      field("data.n_target", &data.n_target, "megapixel_mnist: digits of the majority class per image"),
      field("data.n_other", &data.n_other, "megapixel_mnist: digits of other classes per image"),
      field("data.noise_glyphs", &data.noise_glyphs, "megapixel_mnist: noise line glyphs per image"),
      field("data.train_size", &data.train_size, "generated sets: training images"),
      field("data.test_size", &data.test_size, "generated sets: test images"),
      field("data.train_seed", &data.train_seed, "generated sets: seed of the training images"),
      field("data.test_seed", &data.test_seed, "generated sets: seed of the test images"),
      field("data.patch", &data.patch, "patch side in pixels"),
      field("data.stride", &data.stride, "patch grid step in pixels (IPS; PatchGD uses the patch side)"),
      field("data.channels", &data.channels, "ultramnist, csv: image channels, 1 (grey) or 3 (RGB)"),
      field("data.max_scale", &data.max_scale, "ultramnist: largest digit scale (0: the benchmark's)"),
      field("data.digit_size", &data.digit_size, "scattered_mnist: the digit's side in pixels; tissue_tiles: in level-0 pixels"),
      field("data.train_csv", &data.train_csv, "csv: training rows path,label (paths relative to the CSV)"),
      field("data.test_csv", &data.test_csv, "csv: test rows path,label"),
      field("data.classes", &data.classes,
            "csv, slides: the class names in index order (normal,tumor), or their number; empty: every name the labels "
            "hold, sorted (labels that are indices: up to the largest)"),
      field("data.mean", &data.mean, "per-channel normalisation mean, e.g. 0.485,0.456,0.406 (empty: none)"),
      field("data.std", &data.std, "per-channel normalisation std (with data.mean)"),
      field("data.ordinal", &data.ordinal, "classes are ordered grades: also report quadratic weighted kappa"),
      field("data.workers", &data.workers, "background threads preparing batches"),
      field("data.prefetch", &data.prefetch, "batches prepared ahead per worker"),
      field("model.encoder", &model.encoder,
            "encoder: a registered name (resnet18, vit_base_patch16_224, uni, ...; tessera embed --list-encoders), "
            "a model folder (config.json + weights), or projector (feature bags)"),
      field("model.encoder_args", &model.encoder_args,
            "encoder arguments over its defaults, a JSON object in timm's names, e.g. '{\"depth\": 2, \"embed_dim\": 64}'"),
      field("model.in_features", &model.in_features, "projector: width of the feature rows"),
      field("model.dim", &model.dim, "projector (and model.projection_head): embedding width D"),
      field("model.projection_head", &model.projection_head,
            "IPS with an image encoder: the feature-bag projector (LayerNorm, Linear to model.dim, BatchNorm over the "
            "winners, ReLU) between the encoder and the aggregator"),
      field("model.in_channels", &model.in_channels, "input channels of the encoder's stem"),
      field("model.stages", &model.stages, "ResNet stages kept, 2 or 4"),
      field("model.width", &model.width, "channels of the first ResNet stage (torchvision: 64)"),
      field("model.width_mult", &model.width_mult, "MobileNetV2 width multiplier"),
      field("model.weights", &model.weights,
            "encoder weights: safetensors or a torch.save state dict (a model folder's own file when empty)"),
      field("model.init_from", &model.init_from, "a tessera checkpoint whose backbone starts this run (progressive resolution)"),
      field("model.heads", &model.heads, "IPS cross-attention heads H"),
      field("model.d_k", &model.d_k, "IPS per-head query/key size D_k"),
      field("model.d_v", &model.d_v, "IPS per-head value size D_v (0: D_k)"),
      field("model.d_inner", &model.d_inner, "IPS aggregator MLP width"),
      field("model.dropout", &model.dropout, "IPS dropout after attention output and MLP"),
      field("model.attn_dropout", &model.attn_dropout, "IPS dropout on attention weights"),
      field("model.pos_enc", &model.pos_enc, "IPS: add sinusoidal encodings of patch indices"),
      field("model.freeze_bn", &model.freeze_bn,
            "keep the encoder's BatchNorm in eval mode: fixed statistics (from model.weights / init_from, else identity)"),
      field("model.train_blocks", &model.train_blocks,
            "ViT encoders: train only the last K blocks and the final norm (-1: all)"),
      field("model.lora_rank", &model.lora_rank,
            "ViT encoders: LoRA adapters of this rank on model.lora_targets, every base weight frozen (0: none)"),
      field("model.lora_alpha", &model.lora_alpha, "LoRA scale alpha / rank (0: alpha = rank)"),
      field("model.lora_targets", &model.lora_targets, "Linear layers LoRA adapts: any of qkv, proj, mlp, comma-separated"),
      field("model.grad_checkpointing", &model.grad_checkpointing,
            "ViT encoders: recompute each block in the backward pass instead of keeping its activations"),
      field("slide.backend", &slide.backend, "slide reader: auto | openslide | vips"),
      field("slide.level", &slide.level, "pyramid level patches are read at"),
      field("slide.mpp", &slide.mpp, "read patches at this resolution in um/px instead (0: use slide.level)"),
      field("slide.tissue", &slide.tissue, "tissue detector: otsu | saturation"),
      field("slide.min_tissue", &slide.min_tissue, "tissue fraction a patch needs, in [0, 1]"),
      field("slide.annotations", &slide.annotations,
            "folder of QuPath GeoJSON exports <slide id>.geojson: keep patches inside the drawn regions (empty: all tissue)"),
      field("slide.cache_dir", &slide.cache_dir, "patch coordinate cache (tessera preprocess --out; empty: beside the manifest)"),
      field("slide.features_dir", &slide.features_dir, "feature_bags: folder of <id>.h5 bags (tessera extract-features --out)"),
      field("slide.skip_errors", &slide.skip_errors, "record bad slides and go on instead of stopping"),
      field("slide.read_workers", &slide.read_workers, "threads reading the patches of one chunk"),
      field("ips.M", &ips.M, "patches kept per image (memory size)"),
      field("ips.I", &ips.I, "patches scored per selection iteration"),
      field("ips.shuffle", &ips.shuffle, "patch order shuffling: none | batch | instance"),
      field("ips.loading", &ips.loading, "eager | eager_sequential | lazy"),
      field("ips.seq_batch", &ips.seq_batch, "eager_sequential: images per selection pass"),
      field("ips.grad_chunk", &ips.grad_chunk,
            "winners encoded with gradients at a time: peak activations of one chunk whatever M is, for one more "
            "no-gradient encoding of the winners (0: all at once)"),
      field("patchgd.q", &patchgd.q, "fraction of patches re-encoded per inner iteration, in (0, 1]"),
      field("patchgd.zeta", &patchgd.zeta, "inner iterations per batch (0: ceil(1/q))"),
      field("patchgd.eps", &patchgd.eps, "inner iterations per optimiser step (0: zeta)"),
      field("patchgd.latent", &patchgd.latent, "channels s of the latent grid Z"),
      field("patchgd.head", &patchgd.head, "head variant: pool | max (ours: mean or max of Z, then Linear) | original (reference) | smaller | larger | smaller_feat | larger_feat"),
      field("patchgd.fill_mode", &patchgd.fill_mode, "BatchNorm mode of the no-gradient fill: train (reference) | eval"),
      field("patchgd.fill_chunk", &patchgd.fill_chunk, "positions per fill chunk (0: k)"),
      field("patchgd.head_norm", &patchgd.head_norm, "normalisation in the head's blocks: batch (reference) | none"),
      field("patchgd.head_dropout", &patchgd.head_dropout, "Dropout2d after each head block (reference: 0.2)"),
      field("gd.image_size", &gd.image_size, "full-image baselines: downscale to this side first (0: native)"),
      field("train.method", &train.method, "ips | patchgd | gd | gd_extended"),
      field("train.epochs", &train.epochs, "epochs to train"),
      field("train.batch_size", &train.batch_size, "images per step"),
      field("train.lr", &train.lr, "peak learning rate"),
      field("train.weight_decay", &train.weight_decay, "AdamW weight decay"),
      field("train.warmup_epochs", &train.warmup_epochs, "epochs of linear warm-up"),
      field("train.min_lr_factor", &train.min_lr_factor, "cosine: final LR as a fraction of the peak"),
      field("train.schedule", &train.schedule, "cosine (IPS) | linear (PatchGD)"),
      field("train.decay_epochs", &train.decay_epochs, "linear: epoch where the LR reaches 0 (0: 2 x epochs)"),
      field("train.seed", &train.seed, "seed of initialisation, order and sampling"),
      field("train.deterministic", &train.deterministic, "deterministic kernels (bitwise resume)"),
      field("train.threads", &train.threads, "torch threads (0: all cores)"),
      field("train.device", &train.device, "cpu | cuda"),
      field("train.checkpoint_every", &train.checkpoint_every, "steps between checkpoints (0: each epoch end)"),
      field("train.log_every", &train.log_every,
            "steps between records of the training loss and learning rate in steps.jsonl (0: none); tessera report draws them"),
      field("train.eval_every", &train.eval_every, "epochs between test evaluations"),
      field("train.precise_bn", &train.precise_bn,
            "training batches that recompute BatchNorm statistics before each evaluation (0: off)"),
      field("train.memory_budget", &train.memory_budget, "cap on tensor memory, e.g. 4GiB (empty: none)"),
      field("train.auto_batch", &train.auto_batch, "find the largest batch (and PatchGD q) within the budget"),
      field("train.time_limit", &train.time_limit,
            "stop after this many seconds of training steps, a model.init_from run's included (0: none)"),
      field("train.precision", &train.precision, "fp32 | bf16 | fp16 (autocast; fp16 adds dynamic loss scaling)"),
      field("train.dist_timeout", &train.dist_timeout,
            "data-parallel runs: seconds a rank waits for the others before failing"),
  };
}

void Config::set(const std::string& key, const std::string& value) {
  for (auto& f : fields()) {
    if (f.key == key) {
      f.set(value);
      return;
    }
  }
  std::vector<std::string> keys;
  for (auto& f : fields()) keys.push_back(f.key);
  fail("unknown config key '", key, "'", did_you_mean(key, keys), " (tessera train --help lists every key)");
}

void Config::load_yaml(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    fail("config file '", path, "' cannot be opened; check the path (presets live in configs/)");
  } catch (const YAML::Exception& e) {
    fail("config file '", path, "' is not valid YAML: ", e.what());
  }
  merge(root, path);
}

void Config::load_yaml_text(const std::string& text, const std::string& origin) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(origin, ": the stored config is not valid YAML: ", e.what());
  }
  merge(root, origin);
}

void Config::merge(const YAML::Node& root, const std::string& origin) {
  std::map<std::string, std::string> flat;
  flatten(root, "", flat, origin);
  for (const auto& [key, value] : flat) {
    try {
      set(key, value);
    } catch (const Error& e) {
      fail(origin, ": ", e.what());
    }
  }
}

std::string Config::to_yaml() {
  YAML::Emitter out;
  out << YAML::BeginMap;
  std::string section;
  for (auto& f : fields()) {
    const auto dot = f.key.find('.');
    const std::string sec = f.key.substr(0, dot);
    if (sec != section) {
      if (!section.empty()) out << YAML::EndMap;
      out << YAML::Key << sec << YAML::Value << YAML::BeginMap;
      section = sec;
    }
    out << YAML::Key << f.key.substr(dot + 1) << YAML::Value << f.get();
  }
  out << YAML::EndMap << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

void Config::validate() const {
  TESSERA_CHECK(data.height > 0 && data.width > 0, "data.height and data.width must be positive");
  TESSERA_CHECK(data.patch > 0 && data.stride > 0, "data.patch and data.stride must be positive, got ", data.patch,
                " and ", data.stride);
  TESSERA_CHECK(data.train_size >= 0 && data.test_size >= 0, "data set sizes must be >= 0");
  TESSERA_CHECK(data.workers >= 0 && data.prefetch >= 1, "data.workers must be >= 0 and data.prefetch >= 1");
  TESSERA_CHECK(one_of(slide.backend, {"auto", "openslide", "vips"}), "slide.backend must be auto, openslide or vips");
  TESSERA_CHECK(one_of(slide.tissue, {"otsu", "saturation"}), "slide.tissue must be otsu or saturation");
  TESSERA_CHECK(slide.min_tissue >= 0 && slide.min_tissue <= 1 && slide.read_workers >= 0 && slide.level >= 0,
                "slide.min_tissue must be in [0, 1], slide.read_workers and slide.level >= 0");
  TESSERA_CHECK(data.channels == 1 || data.channels == 3, "data.channels must be 1 or 3, got ", data.channels);
  TESSERA_CHECK(!model.encoder.empty(), "model.encoder is empty; name an encoder, a model folder or projector");
  TESSERA_CHECK(model.in_features > 0 && model.dim > 0, "model.in_features and model.dim must be positive");
  TESSERA_CHECK(patchgd.q > 0 && patchgd.q <= 1, "patchgd.q must be in (0, 1], got ", patchgd.q);
  TESSERA_CHECK(patchgd.zeta >= 0 && patchgd.eps >= 0 && patchgd.fill_chunk >= 0 && patchgd.latent > 0,
                "patchgd.zeta, eps and fill_chunk must be >= 0 (0: default) and patchgd.latent > 0");
  TESSERA_CHECK(one_of(patchgd.head, {"pool", "max", "original", "smaller", "larger", "smaller_feat", "larger_feat"}),
                "patchgd.head '", patchgd.head, "' is not one of pool, max, original, smaller, larger, smaller_feat, larger_feat");
  TESSERA_CHECK(one_of(patchgd.head_norm, {"batch", "none"}), "patchgd.head_norm must be batch or none, got '",
                patchgd.head_norm, "'");
  TESSERA_CHECK(patchgd.head_dropout >= 0 && patchgd.head_dropout < 1, "patchgd.head_dropout must be in [0, 1), got ",
                patchgd.head_dropout);
  TESSERA_CHECK(model.dropout >= 0 && model.dropout < 1 && model.attn_dropout >= 0 && model.attn_dropout < 1,
                "model.dropout and model.attn_dropout must be in [0, 1), got ", model.dropout, " and ", model.attn_dropout);
  TESSERA_CHECK(one_of(patchgd.fill_mode, {"train", "eval"}), "patchgd.fill_mode must be train or eval");
  TESSERA_CHECK(gd.image_size >= 0, "gd.image_size must be >= 0 (0: native size)");
  TESSERA_CHECK(one_of(train.schedule, {"cosine", "linear"}), "train.schedule must be cosine or linear");
  TESSERA_CHECK(model.stages == 2 || model.stages == 4, "model.stages must be 2 or 4, got ", model.stages);
  TESSERA_CHECK(model.width > 0 && model.heads > 0 && model.d_k > 0 && model.d_v >= 0 && model.d_inner > 0,
                "model.width, heads, d_k and d_inner must be positive and model.d_v >= 0");
  TESSERA_CHECK(ips.M > 0 && ips.I > 0, "ips.M and ips.I must be positive, got ", ips.M, " and ", ips.I);
  TESSERA_CHECK(one_of(ips.shuffle, {"none", "batch", "instance"}), "ips.shuffle '", ips.shuffle,
                "' is not one of none, batch, instance");
  TESSERA_CHECK(one_of(ips.loading, {"eager", "eager_sequential", "lazy"}), "ips.loading '", ips.loading,
                "' is not one of eager, eager_sequential, lazy");
  TESSERA_CHECK(ips.seq_batch > 0, "ips.seq_batch must be positive");
  TESSERA_CHECK(model.train_blocks >= -1, "model.train_blocks must be -1 (all) or the number of last blocks to train");
  TESSERA_CHECK(model.lora_rank >= 0 && model.lora_alpha >= 0, "model.lora_rank and model.lora_alpha must be >= 0");
  TESSERA_CHECK(model.lora_rank == 0 || model.train_blocks < 0, "model.lora_rank and model.train_blocks are two ways to ",
                "fine-tune; set one of them");
  TESSERA_CHECK(ips.grad_chunk >= 0, "ips.grad_chunk must be >= 0 (0: the whole gradient pass at once), got ", ips.grad_chunk);
  TESSERA_CHECK(train.epochs > 0 && train.batch_size > 0, "train.epochs and train.batch_size must be positive");
  TESSERA_CHECK(train.lr > 0, "train.lr must be positive");
  TESSERA_CHECK(train.eval_every >= 1, "train.eval_every must be >= 1 (epochs)");
  TESSERA_CHECK(train.precise_bn >= 0, "train.precise_bn must be >= 0 (training batches; 0: off)");
  TESSERA_CHECK(train.threads >= 0, "train.threads must be >= 0 (0 = all cores)");
  TESSERA_CHECK(train.time_limit >= 0, "train.time_limit must be >= 0 seconds (0: no limit)");
  TESSERA_CHECK(one_of(train.device, {"cpu", "cuda"}), "train.device must be cpu or cuda");
  parse_precision(train.precision);
  TESSERA_CHECK(train.dist_timeout > 0, "train.dist_timeout must be positive (seconds)");
}

}  // namespace tessera
