// Run configuration: typed sections, loaded from a YAML preset, every key overridable as --section.key.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace YAML {
class Node;
}

namespace tessera {

struct DataConfig {
  std::string dataset = "megapixel_mnist";  // megapixel_mnist | ultramnist | ultramnist28 | scattered_mnist | csv | slides | feature_bags
  std::string manifest;   // slides, feature_bags: CSV with slide,label[,split] (split train / test)
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
  int64_t channels = 1;     // ultramnist: grey (1) or grey replicated to RGB (3)
  int64_t max_scale = 0;    // ultramnist: largest digit scale r (0: the benchmark's 9, or 75 for ultramnist28)
  int64_t digit_size = 28;  // scattered_mnist: the digit's side in pixels
  std::string train_csv;    // csv: rows "path,label" (header line), paths relative to the CSV
  std::string test_csv;
  std::string classes;      // csv, slides: class names in index order ("normal,tumor"), or their number; empty: from the labels
  std::string mean;         // per-channel normalisation, e.g. "0.9770,0.9550,0.9667" (empty: none)
  std::string std;
  bool ordinal = false;     // classes are ordered grades: report quadratic weighted kappa
  int64_t workers = 2;   // background threads preparing batches
  int64_t prefetch = 2;  // batches prepared ahead per worker
};

struct ModelConfig {
  std::string encoder = "resnet18";  // a registered encoder (tessera embed --list-encoders), a model folder, or projector (feature bags)
  std::string encoder_args;          // JSON object of architecture arguments over the encoder's, e.g. {"depth": 2}
  int64_t in_features = 2048;  // projector: width of the bags' feature rows
  int64_t dim = 512;           // projector: embedding width D
  bool projection_head = false;  // image encoders: the projector (to width dim) between encoder and aggregator
  int64_t in_channels = 1;
  int64_t stages = 2;    // ResNet stages kept (2 or 4)
  int64_t width = 64;    // channels of the first stage (torchvision: 64)
  double width_mult = 1.0;  // MobileNetV2 width multiplier
  std::string weights;   // optional torchvision state dict (torch.save) for the encoder
  std::string init_from; // a tessera checkpoint whose backbone starts this run (progressive resolution)
  int64_t heads = 8;
  int64_t d_k = 16;
  int64_t d_v = 0;       // per-head value size; 0: d_k (the reference allows them to differ)
  int64_t d_inner = 512;
  double dropout = 0.1;
  double attn_dropout = 0.1;
  bool pos_enc = true;
  bool freeze_bn = false;  // encoder BatchNorm always in eval mode (fixed statistics)
  // Fine-tuning a ViT encoder (folded into its arguments, models::model_encoder_args).
  int64_t train_blocks = -1;        // train only the last K blocks and the final norm; -1: all
  int64_t lora_rank = 0;            // LoRA adapters of this rank, base weights frozen; 0: none
  double lora_alpha = 0;            // adapter scale alpha / rank; 0: alpha = rank
  std::string lora_targets = "qkv,proj";  // Linear layers adapted: any of qkv, proj, mlp
  bool grad_checkpointing = false;  // recompute each block in the backward pass instead of keeping its activations
};

// Whole-slide images (data.dataset slides | feature_bags) listed in data.manifest.
struct SlideConfig {
  std::string backend = "auto";    // auto | openslide | vips
  int64_t level = 0;               // pyramid level patches are read at ...
  double mpp = 0;                  // ... or this resolution (um/px) when > 0
  std::string tissue = "otsu";     // otsu | saturation
  double min_tissue = 0.5;         // tissue fraction a patch needs
  std::string annotations;         // folder of QuPath GeoJSON <slide id>.geojson: patches inside the drawn regions only
  std::string cache_dir;           // patch coordinates (tessera preprocess --out); empty: <manifest folder>/tessera-cache
  std::string features_dir;        // feature_bags: <id>.h5 files (tessera extract-features --out)
  bool skip_errors = false;        // record bad slides and go on instead of stopping
  int64_t read_workers = 2;        // threads reading patches of one chunk
};

struct IpsConfig {
  int64_t M = 100;
  int64_t I = 100;
  std::string shuffle = "none";    // none | batch | instance
  std::string loading = "eager";   // eager | eager_sequential | lazy
  int64_t seq_batch = 1;           // images per selection pass with eager_sequential
  int64_t grad_chunk = 0;          // winners encoded with gradients at a time (0: all B x M at once)
};

struct PatchGdConfig {
  double q = 0.125;         // sampling fraction per inner iteration
  int64_t zeta = 0;         // inner iterations per batch; 0: ceil(1/q)
  int64_t eps = 0;          // inner iterations per optimiser step; 0: zeta
  int64_t latent = 256;     // s, channels of the latent grid
  std::string head = "pool";     // pool | max (ours) | original | smaller | larger | smaller_feat | larger_feat (the reference's)
  std::string fill_mode = "train";   // train | eval (BatchNorm mode of the no-gradient fill)
  int64_t fill_chunk = 0;   // positions per fill chunk; 0: k
  std::string head_norm = "batch";  // batch (the reference's) | none
  double head_dropout = 0.2;        // Dropout2d after every head block (the reference's 0.2)
};

struct GdConfig {
  int64_t image_size = 0;  // full-image baselines: downscale the image to this side first (0: native)
};

struct TrainConfig {
  std::string method = "ips";  // ips | patchgd | gd | gd_extended
  int64_t epochs = 150;
  int64_t batch_size = 16;
  double lr = 1e-3;
  double weight_decay = 0.1;
  double warmup_epochs = 10;
  double min_lr_factor = 1e-3;
  std::string schedule = "cosine";  // cosine (IPS) | linear (PatchGD: warm-up, then linear decay)
  double decay_epochs = 0;          // linear: LR reaches 0 at this epoch; 0: 2 x epochs (the reference)
  int64_t seed = 0;
  bool deterministic = false;
  int64_t threads = 0;  // 0: all cores
  std::string device = "cpu";
  int64_t checkpoint_every = 0;  // steps between checkpoints; 0: at the end of each epoch
  int64_t log_every = 0;         // steps between training-loss records in steps.jsonl; 0: none
  int64_t eval_every = 1;        // epochs between test-set evaluations (the last epoch always evaluates)
  int64_t precise_bn = 0;        // training batches that recompute BatchNorm statistics before each evaluation; 0: off
  std::string memory_budget;     // e.g. 4GiB; empty: no cap
  bool auto_batch = false;       // find the largest batch <= batch_size (and PatchGD q) that fits memory_budget
  double time_limit = 0;         // seconds of training steps (a model.init_from run's included); 0: none
  std::string precision = "fp32";  // fp32 | bf16 | fp16 (autocast; fp16 with dynamic loss scaling)
  double dist_timeout = 300;       // data-parallel: seconds a collective waits for the other ranks
};

struct Config {
  DataConfig data;
  ModelConfig model;
  IpsConfig ips;
  SlideConfig slide;
  PatchGdConfig patchgd;
  GdConfig gd;
  TrainConfig train;
  std::string run_dir = "runs/default";

  struct Field {
    std::string key;  // "section.name"
    std::string type;  // TEXT | INT | FLOAT | BOOL
    std::string help;  // one line
    std::function<void(const std::string&)> set;
    std::function<std::string()> get;
  };
  // Every configurable key, bound to this object. Order is the order of the YAML dump.
  std::vector<Field> fields();

  // Merges a YAML file; unknown keys and unreadable values are errors naming file and key.
  void load_yaml(const std::string& path);
  // The same from YAML text (e.g. the config stored in a checkpoint); origin names it in errors.
  void load_yaml_text(const std::string& text, const std::string& origin);
  void set(const std::string& key, const std::string& value);
  std::string to_yaml();
  // Checks that hold for every method and data set; the registry (train/registry.h) adds theirs.
  void validate() const;

 private:
  void merge(const YAML::Node& root, const std::string& origin);
};

}  // namespace tessera
