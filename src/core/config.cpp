#include "tessera/core/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>
#include <type_traits>

#include "tessera/core/error.h"

namespace tessera {
namespace {

Config::Field field(const std::string& key, std::string* v) {
  return {key, [v](const std::string& s) { *v = s; }, [v] { return *v; }};
}
template <typename T>
Config::Field number_field(const std::string& key, T* v, const char* kind) {
  return {key,
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
Config::Field field(const std::string& key, int64_t* v) { return number_field(key, v, "an integer"); }
Config::Field field(const std::string& key, double* v) { return number_field(key, v, "a number"); }
Config::Field field(const std::string& key, bool* v) {
  return {key,
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
      const std::string key = kv.first.as<std::string>();
      flatten(kv.second, prefix.empty() ? key : prefix + "." + key, out, path);
    }
  } else if (node.IsScalar()) {
    out[prefix] = node.as<std::string>();
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
      field("run.dir", &run_dir),
      field("data.dataset", &data.dataset),
      field("data.manifest", &data.manifest),
      field("data.mnist_dir", &data.mnist_dir),
      field("data.height", &data.height),
      field("data.width", &data.width),
      field("data.n_target", &data.n_target),
      field("data.n_other", &data.n_other),
      field("data.noise_glyphs", &data.noise_glyphs),
      field("data.train_size", &data.train_size),
      field("data.test_size", &data.test_size),
      field("data.train_seed", &data.train_seed),
      field("data.test_seed", &data.test_seed),
      field("data.patch", &data.patch),
      field("data.stride", &data.stride),
      field("data.channels", &data.channels),
      field("data.max_scale", &data.max_scale),
      field("data.train_csv", &data.train_csv),
      field("data.test_csv", &data.test_csv),
      field("data.classes", &data.classes),
      field("data.mean", &data.mean),
      field("data.std", &data.std),
      field("data.ordinal", &data.ordinal),
      field("data.workers", &data.workers),
      field("data.prefetch", &data.prefetch),
      field("model.encoder", &model.encoder),
      field("model.in_features", &model.in_features),
      field("model.dim", &model.dim),
      field("model.in_channels", &model.in_channels),
      field("model.stages", &model.stages),
      field("model.width", &model.width),
      field("model.width_mult", &model.width_mult),
      field("model.weights", &model.weights),
      field("model.init_from", &model.init_from),
      field("model.heads", &model.heads),
      field("model.d_k", &model.d_k),
      field("model.d_inner", &model.d_inner),
      field("model.dropout", &model.dropout),
      field("model.attn_dropout", &model.attn_dropout),
      field("model.pos_enc", &model.pos_enc),
      field("slide.backend", &slide.backend),
      field("slide.level", &slide.level),
      field("slide.mpp", &slide.mpp),
      field("slide.tissue", &slide.tissue),
      field("slide.min_tissue", &slide.min_tissue),
      field("slide.cache_dir", &slide.cache_dir),
      field("slide.features_dir", &slide.features_dir),
      field("slide.skip_errors", &slide.skip_errors),
      field("slide.read_workers", &slide.read_workers),
      field("ips.M", &ips.M),
      field("ips.I", &ips.I),
      field("ips.shuffle", &ips.shuffle),
      field("ips.loading", &ips.loading),
      field("ips.seq_batch", &ips.seq_batch),
      field("patchgd.q", &patchgd.q),
      field("patchgd.zeta", &patchgd.zeta),
      field("patchgd.eps", &patchgd.eps),
      field("patchgd.latent", &patchgd.latent),
      field("patchgd.head", &patchgd.head),
      field("patchgd.fill_mode", &patchgd.fill_mode),
      field("patchgd.fill_chunk", &patchgd.fill_chunk),
      field("gd.image_size", &gd.image_size),
      field("train.method", &train.method),
      field("train.epochs", &train.epochs),
      field("train.batch_size", &train.batch_size),
      field("train.lr", &train.lr),
      field("train.weight_decay", &train.weight_decay),
      field("train.warmup_epochs", &train.warmup_epochs),
      field("train.min_lr_factor", &train.min_lr_factor),
      field("train.schedule", &train.schedule),
      field("train.decay_epochs", &train.decay_epochs),
      field("train.seed", &train.seed),
      field("train.deterministic", &train.deterministic),
      field("train.threads", &train.threads),
      field("train.device", &train.device),
      field("train.checkpoint_every", &train.checkpoint_every),
      field("train.eval_every", &train.eval_every),
      field("train.memory_budget", &train.memory_budget),
      field("train.auto_batch", &train.auto_batch),
  };
}

void Config::set(const std::string& key, const std::string& value) {
  for (auto& f : fields()) {
    if (f.key == key) {
      f.set(value);
      return;
    }
  }
  fail("unknown config key '", key, "'; run 'tessera train --help' for the list");
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
  const bool slides = data.dataset == "slides" || data.dataset == "feature_bags";
  TESSERA_CHECK(slides || (data.patch <= data.height && data.patch <= data.width), "patch ", data.patch,
                " is larger than the image ", data.height, "x", data.width, "; lower data.patch");
  TESSERA_CHECK(data.train_size >= 0 && data.test_size >= 0, "data set sizes must be >= 0");
  TESSERA_CHECK(data.workers >= 0 && data.prefetch >= 1, "data.workers must be >= 0 and data.prefetch >= 1");
  TESSERA_CHECK(one_of(data.dataset, {"megapixel_mnist", "ultramnist", "ultramnist28", "csv", "slides", "feature_bags"}),
                "data.dataset '", data.dataset,
                "' is not one of megapixel_mnist, ultramnist, ultramnist28, csv, slides, feature_bags");
  TESSERA_CHECK(!slides || !data.manifest.empty(), "data.dataset ", data.dataset,
                " needs data.manifest (a CSV with slide,label[,split] columns)");
  TESSERA_CHECK(data.dataset != "feature_bags" || (model.encoder == "projector" && train.method == "ips"),
                "feature bags train with train.method ips and model.encoder projector");
  TESSERA_CHECK(one_of(slide.backend, {"auto", "openslide", "vips"}), "slide.backend must be auto, openslide or vips");
  TESSERA_CHECK(one_of(slide.tissue, {"otsu", "saturation"}), "slide.tissue must be otsu or saturation");
  TESSERA_CHECK(slide.min_tissue >= 0 && slide.min_tissue <= 1 && slide.read_workers >= 0 && slide.level >= 0,
                "slide.min_tissue must be in [0, 1], slide.read_workers and slide.level >= 0");
  TESSERA_CHECK(data.channels == 1 || data.channels == 3, "data.channels must be 1 or 3, got ", data.channels);
  TESSERA_CHECK(one_of(model.encoder, {"resnet18", "resnet34", "resnet50", "mobilenet_v2", "projector"}),
                "model.encoder '", model.encoder, "' is not one of resnet18, resnet34, resnet50, mobilenet_v2, projector");
  TESSERA_CHECK(model.in_features > 0 && model.dim > 0, "model.in_features and model.dim must be positive");
  TESSERA_CHECK(one_of(train.method, {"ips", "patchgd", "gd", "gd_extended"}), "train.method '", train.method,
                "' is not one of ips, patchgd, gd, gd_extended");
  TESSERA_CHECK(model.encoder != "mobilenet_v2" || train.method != "ips",
                "IPS encoders are ResNets; use model.encoder resnet18/34/50 with train.method ips");
  TESSERA_CHECK(patchgd.q > 0 && patchgd.q <= 1, "patchgd.q must be in (0, 1], got ", patchgd.q);
  TESSERA_CHECK(patchgd.zeta >= 0 && patchgd.eps >= 0 && patchgd.fill_chunk >= 0 && patchgd.latent > 0,
                "patchgd.zeta, eps and fill_chunk must be >= 0 (0: default) and patchgd.latent > 0");
  TESSERA_CHECK(one_of(patchgd.head, {"small", "default", "large"}), "patchgd.head '", patchgd.head,
                "' is not one of small, default, large");
  TESSERA_CHECK(one_of(patchgd.fill_mode, {"train", "eval"}), "patchgd.fill_mode must be train or eval");
  TESSERA_CHECK(gd.image_size >= 0, "gd.image_size must be >= 0 (0: native size)");
  TESSERA_CHECK(one_of(train.schedule, {"cosine", "linear"}), "train.schedule must be cosine or linear");
  TESSERA_CHECK(model.stages == 2 || model.stages == 4, "model.stages must be 2 or 4, got ", model.stages);
  TESSERA_CHECK(model.width > 0 && model.heads > 0 && model.d_k > 0 && model.d_inner > 0,
                "model.width, heads, d_k and d_inner must be positive");
  TESSERA_CHECK(ips.M > 0 && ips.I > 0, "ips.M and ips.I must be positive, got ", ips.M, " and ", ips.I);
  TESSERA_CHECK(one_of(ips.shuffle, {"none", "batch", "instance"}), "ips.shuffle '", ips.shuffle,
                "' is not one of none, batch, instance");
  TESSERA_CHECK(one_of(ips.loading, {"eager", "eager_sequential", "lazy"}), "ips.loading '", ips.loading,
                "' is not one of eager, eager_sequential, lazy");
  TESSERA_CHECK(ips.seq_batch > 0, "ips.seq_batch must be positive");
  TESSERA_CHECK(train.epochs > 0 && train.batch_size > 0, "train.epochs and train.batch_size must be positive");
  TESSERA_CHECK(train.lr > 0, "train.lr must be positive");
  TESSERA_CHECK(train.eval_every >= 1, "train.eval_every must be >= 1 (epochs)");
  TESSERA_CHECK(train.threads >= 0, "train.threads must be >= 0 (0 = all cores)");
  TESSERA_CHECK(one_of(train.device, {"cpu", "cuda"}), "train.device must be cpu or cuda");
}

}  // namespace tessera
