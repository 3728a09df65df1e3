// Every paper preset against the reference settings written down in docs/reference-settings.md (from the
// papers and their reference code): a preset that drifts from its paper fails here.
#include <filesystem>
#include <map>

#include "helpers.h"
#include "tessera/train/registry.h"

namespace tessera {
namespace {

using Settings = std::map<std::string, std::string>;

// The values a preset must hold, by config key.
Settings ips_megapixel_mnist() {
  return {{"train.method", "ips"}, {"data.dataset", "megapixel_mnist"}, {"data.height", "1500"}, {"data.width", "1500"},
          {"data.train_size", "5000"}, {"data.test_size", "1000"}, {"data.patch", "50"}, {"data.stride", "50"},
          {"model.encoder", "resnet18"}, {"model.in_channels", "1"}, {"model.stages", "2"}, {"model.width", "64"},
          {"model.heads", "8"}, {"model.d_k", "16"}, {"model.d_inner", "512"}, {"model.pos_enc", "true"},
          {"model.dropout", "0.1"}, {"model.attn_dropout", "0.1"}, {"ips.M", "100"}, {"ips.I", "100"},
          {"ips.shuffle", "batch"}, {"ips.loading", "eager"}, {"train.epochs", "150"}, {"train.batch_size", "16"},
          {"train.lr", "0.001"}, {"train.weight_decay", "0.1"}, {"train.warmup_epochs", "10"}, {"train.seed", "0"},
          {"train.schedule", "cosine"}, {"train.min_lr_factor", "0.001"}};
}

Settings ips_camelyon16() {
  return {{"train.method", "ips"}, {"data.dataset", "feature_bags"}, {"model.encoder", "projector"},
          {"model.in_features", "2048"}, {"model.dim", "512"}, {"model.heads", "8"}, {"model.d_k", "64"},
          {"model.d_inner", "2048"}, {"model.pos_enc", "false"}, {"model.dropout", "0.1"}, {"model.attn_dropout", "0.1"},
          {"ips.M", "5000"}, {"ips.I", "5000"}, {"ips.shuffle", "batch"}, {"ips.loading", "eager_sequential"},
          {"ips.seq_batch", "1"}, {"train.epochs", "50"}, {"train.batch_size", "16"}, {"train.lr", "0.0003"},
          {"train.weight_decay", "0.1"}, {"train.warmup_epochs", "10"}, {"train.seed", "0"}};
}

Settings ips_traffic_signs() {
  return {{"train.method", "ips"}, {"data.dataset", "csv"}, {"data.height", "1200"}, {"data.width", "1600"},
          {"data.channels", "3"}, {"data.classes", "4"}, {"data.mean", "0.485,0.456,0.406"},
          {"data.std", "0.229,0.224,0.225"}, {"data.patch", "100"}, {"data.stride", "100"},
          {"model.encoder", "resnet18"}, {"model.in_channels", "3"}, {"model.stages", "4"},
          {"model.weights", "weights/resnet18-imagenet.pth"}, {"model.heads", "8"}, {"model.d_k", "64"},
          {"model.d_inner", "2048"}, {"model.pos_enc", "false"}, {"model.dropout", "0.1"}, {"model.attn_dropout", "0.1"},
          {"ips.M", "10"}, {"ips.I", "32"}, {"ips.shuffle", "batch"}, {"ips.loading", "eager"}, {"train.epochs", "150"},
          {"train.batch_size", "16"}, {"train.lr", "0.0003"}, {"train.weight_decay", "0.1"}, {"train.warmup_epochs", "10"},
          {"train.schedule", "cosine"}, {"train.min_lr_factor", "0.001"}, {"train.seed", "0"}};
}

// The PatchGD reference's training settings, shared by every PatchGD-paper row.
Settings patchgd_common() {
  return {{"model.stages", "4"}, {"data.channels", "3"}, {"model.in_channels", "3"}, {"patchgd.latent", "256"},
          {"patchgd.head", "original"}, {"train.epochs", "100"}, {"train.lr", "0.001"}, {"train.weight_decay", "0"},
          {"train.schedule", "linear"}, {"train.warmup_epochs", "2"}, {"train.decay_epochs", "0"}, {"train.seed", "42"},
          {"train.auto_batch", "true"}};
}

Settings with(Settings base, const Settings& more) {
  for (const auto& [k, v] : more) base[k] = v;
  return base;
}

// UltraMNIST 512 rows: backbone x budget x method; ImageNet starts, except the low-memory PatchGD rows,
// which start from the GD run of the same backbone and budget (appendix C); eps = 1.
std::map<std::string, Settings> ultramnist_rows() {
  std::map<std::string, Settings> rows;
  for (const std::string bb : {"resnet50", "mobilenetv2"}) {
    for (const std::string mem : {"16", "4"}) {
      for (const std::string method : {"patchgd", "gd", "gd-extended"}) {
        const std::string encoder = bb == "resnet50" ? "resnet50" : "mobilenet_v2";
        const std::string name = "patchgd/ultramnist-" + bb + "-" + mem + "gb-" + method + ".yaml";
        auto s = with(patchgd_common(), {{"train.method", method == "gd-extended" ? "gd_extended" : method},
                                          {"data.dataset", "ultramnist"}, {"data.height", "512"}, {"data.width", "512"},
                                          {"data.patch", "256"}, {"data.train_size", "8000"}, {"data.test_size", "2000"},
                                          {"model.encoder", encoder}, {"train.memory_budget", mem + "GiB"}});
        if (method == "patchgd") s["patchgd.eps"] = "1";
        if (method == "patchgd" && mem == "4") {
          s["model.init_from"] = "runs/ultramnist-" + encoder + "-4GiB-gd/checkpoint.pt";
        } else {
          s["model.weights"] = "weights/" + encoder + "-imagenet.pth";
        }
        rows[name] = s;
      }
    }
  }
  return rows;
}

// PANDA rows: resolution, patch and sampling from the paper's table; eps = zeta (accumulate over all
// inner iterations); 512 starts from ImageNet, each higher resolution from the run below it.
std::map<std::string, Settings> panda_rows() {
  const Settings panda = with(patchgd_common(), {{"data.dataset", "csv"}, {"data.classes", "6"}, {"data.ordinal", "true"},
                                                  {"data.mean", "0.9770,0.9550,0.9667"}, {"data.std", "0.0783,0.1387,0.1006"},
                                                  {"model.encoder", "resnet50"}, {"patchgd.eps", "0"}});
  struct Row {
    std::string file, method, size, patch, q, budget;
  };
  const Row table[] = {{"panda-512-gd", "gd", "512", "", "", "16GiB"},
                       {"panda-512-patchgd-p128", "patchgd", "512", "128", "0.3", "16GiB"},
                       {"panda-2048-gd", "gd", "2048", "", "", "16GiB"},
                       {"panda-2048-patchgd-p128", "patchgd", "2048", "128", "0.1", "16GiB"},
                       {"panda-2048-gd-fp16", "gd", "2048", "", "", "24GiB"},
                       {"panda-2048-patchgd-fp16-p128", "patchgd", "2048", "128", "0.1", "24GiB"},
                       {"panda-4096-gd-fp16", "gd", "4096", "", "", "24GiB"},
                       {"panda-4096-patchgd-fp16-p128", "patchgd", "4096", "128", "0.1", "24GiB"},
                       {"panda-4096-patchgd-fp16-p256", "patchgd", "4096", "256", "0.1", "24GiB"}};
  std::map<std::string, Settings> rows;
  for (const auto& r : table) {
    auto s = with(panda, {{"train.method", r.method}, {"data.height", r.size}, {"data.width", r.size},
                          {"train.memory_budget", r.budget}});
    if (!r.patch.empty()) s["data.patch"] = r.patch;
    if (!r.q.empty()) s["patchgd.q"] = r.q;
    if (r.size == "512") s["model.weights"] = "weights/resnet50-imagenet.pth";
    if (r.file.find("-fp16") != std::string::npos) s["train.precision"] = "fp16";  // the paper's fp16 rows
    if (r.file == "panda-2048-gd" || r.file == "panda-2048-gd-fp16") s["model.init_from"] = "runs/panda-512-gd/checkpoint.pt";
    if (r.file == "panda-4096-gd-fp16") s["model.init_from"] = "runs/panda-2048-gd-fp16/checkpoint.pt";
    if (r.file == "panda-2048-patchgd-p128" || r.file == "panda-2048-patchgd-fp16-p128") {
      s["model.init_from"] = "runs/panda-512-patchgd-p128/checkpoint.pt";
    }
    if (r.size == "4096" && r.method == "patchgd") s["model.init_from"] = "runs/panda-2048-patchgd-fp16-p128/checkpoint.pt";
    rows["patchgd/" + r.file + ".yaml"] = s;
  }
  return rows;
}

bool same_value(const std::string& a, const std::string& b) {
  if (a == b) return true;
  try {
    size_t pa = 0, pb = 0;
    const double x = std::stod(a, &pa), y = std::stod(b, &pb);
    return pa == a.size() && pb == b.size() && std::abs(x - y) <= 1e-12 * std::max(1.0, std::abs(y));
  } catch (const std::exception&) {
    return false;
  }
}

TEST(Presets, EveryPaperPresetHoldsTheReferenceSettings) {
  auto rows = ultramnist_rows();
  for (auto& [k, v] : panda_rows()) rows[k] = v;
  rows["megapixel-mnist.yaml"] = ips_megapixel_mnist();
  rows["camelyon16-features.yaml"] = ips_camelyon16();
  rows["traffic-signs.yaml"] = ips_traffic_signs();
  for (const auto& [file, expected] : rows) {
    const auto path = std::string(TESSERA_TESTS_DIR) + "/../configs/" + file;
    ASSERT_TRUE(std::filesystem::exists(path)) << path;
    Config config;
    config.load_yaml(path);
    EXPECT_NO_THROW(train::validate(config)) << file;
    std::map<std::string, std::string> actual;
    for (auto& f : config.fields()) actual[f.key] = f.get();
    for (const auto& [key, value] : expected) {
      ASSERT_TRUE(actual.count(key)) << key;
      EXPECT_TRUE(same_value(actual[key], value)) << file << ": " << key << " is " << actual[key] << ", the reference's " << value;
    }
  }
  EXPECT_EQ(rows.size(), 12u + 9u + 3u);
}

}  // namespace
}  // namespace tessera
