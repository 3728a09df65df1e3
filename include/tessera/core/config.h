// Run configuration: typed sections, loaded from a YAML preset, every key overridable as --section.key.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace tessera {

struct DataConfig {
  std::string dataset = "megapixel_mnist";
  std::string mnist_dir = "data/mnist";  // IDX files (scripts/get-mnist.sh makes them)
  int64_t height = 1500;
  int64_t width = 1500;
  int64_t n_target = 3;       // digits of the majority class per image
  int64_t n_other = 2;        // digits of other classes per image
  int64_t noise_glyphs = 50;  // noise line glyphs pasted per image
  int64_t train_size = 5000;
  int64_t test_size = 1000;
  int64_t train_seed = 1;
  int64_t test_seed = 2;
  int64_t patch = 50;
  int64_t stride = 50;
  int64_t workers = 2;   // background threads preparing batches
  int64_t prefetch = 2;  // batches prepared ahead per worker
};

struct ModelConfig {
  std::string encoder = "resnet18";  // resnet18 | resnet34 | resnet50
  int64_t in_channels = 1;
  int64_t stages = 2;    // ResNet stages kept (2 or 4)
  int64_t width = 64;    // channels of the first stage (torchvision: 64)
  std::string weights;   // optional torchvision state dict (torch.save) for the encoder
  int64_t heads = 8;
  int64_t d_k = 16;
  int64_t d_inner = 512;
  double dropout = 0.1;
  double attn_dropout = 0.1;
  bool pos_enc = true;
};

struct IpsConfig {
  int64_t M = 100;
  int64_t I = 100;
  std::string shuffle = "none";    // none | batch | instance
  std::string loading = "eager";   // eager | eager_sequential | lazy
  int64_t seq_batch = 1;           // images per selection pass with eager_sequential
};

struct TrainConfig {
  int64_t epochs = 150;
  int64_t batch_size = 16;
  double lr = 1e-3;
  double weight_decay = 0.1;
  double warmup_epochs = 10;
  double min_lr_factor = 1e-3;
  int64_t seed = 0;
  bool deterministic = false;
  int64_t threads = 0;  // 0: all cores
  std::string device = "cpu";
  int64_t checkpoint_every = 0;  // steps between checkpoints; 0: at the end of each epoch
  int64_t eval_every = 1;        // epochs between test-set evaluations (the last epoch always evaluates)
  std::string memory_budget;     // e.g. 4GiB; empty: no cap
};

struct Config {
  DataConfig data;
  ModelConfig model;
  IpsConfig ips;
  TrainConfig train;
  std::string run_dir = "runs/default";

  struct Field {
    std::string key;  // "section.name"
    std::function<void(const std::string&)> set;
    std::function<std::string()> get;
  };
  // Every configurable key, bound to this object. Order is the order of the YAML dump.
  std::vector<Field> fields();

  // Merges a YAML file; unknown keys and unreadable values are errors naming file and key.
  void load_yaml(const std::string& path);
  void set(const std::string& key, const std::string& value);
  std::string to_yaml();
  void validate() const;
};

}  // namespace tessera
