// Whole-slide workflows: synthetic slide sets for trying the pipeline, and feature extraction into
// HDF5 bags with a frozen encoder (resumable).
#pragma once
#include <torch/types.h>

#include <functional>
#include <string>
#include <vector>

#include "tessera/slides/preprocess.h"
#include "tessera/slides/synthetic.h"

namespace tessera::app {

struct MakeSlidesOptions {
  std::string out;                       // folder for slide_NNN.tif and manifest.csv
  std::string mnist_dir = "data/mnist";  // digits for the positive slides' "tumours"
  int64_t count = 8, test_count = 4;     // training and test slides (alternately negative / positive)
  int64_t digits = 6;                    // digits per positive slide
  slides::SyntheticSlideOptions slide;
};

// The ground truth make-slides writes beside the manifest: one row per digit "tumour",
// slide,x,y,size,digit with the level-0 top-left corner and side of the digit's square.
inline constexpr const char* kTumourFile = "tumours.csv";

// The same tumours as QuPath annotations: annotations/<slide id>.geojson beside the manifest, one
// "Tumor" polygon per digit (an empty FeatureCollection for a slide without).
inline constexpr const char* kAnnotationDir = "annotations";

// Writes the slides, the manifest (slide,label,split), tumours.csv and annotations/, atomically;
// returns the manifest's path.
std::string make_slides(const MakeSlidesOptions& options);

// Where a slide run's attention goes, against annotated tumours: per slide of the run's manifest
// split, the tissue patches that overlap a tumour and the fraction of the top-M attention mass
// (M = the run's ips.M, attention = ips score_all) that falls on them.
struct LocalizationOptions {
  std::string run;    // an IPS run trained on slides
  std::string truth;  // tumours.csv (slide,x,y,size[,digit]); empty: beside the run's manifest
  std::string annotations;       // or: folder of <slide id>.geojson (QuPath); a slide without a file has no tumour
  std::string annotation_class;  // with annotations: only regions of this class (empty: all but Exclude / Ignore*)
  std::string split = "test";
  std::string out;    // JSON of the per-slide rows and the summary; empty: none
  int64_t threads = 0;
};

struct SlideLocalization {
  std::string slide;
  int64_t label = 0, patches = 0, tumour_patches = 0, top_tumour_patches = 0;
  double probability = 0;          // the model's positive-class probability
  double tumour_fraction = 0;      // tumour_patches / patches
  double attention_on_tumour = 0;  // share of the top-M attention mass on tumour patches
};

struct LocalizationSummary {
  std::vector<SlideLocalization> slides;
  int64_t M = 0;
  double mean_attention_on_tumour = 0;  // over slides with tumour
  double max_tumour_fraction = 0;
};

LocalizationSummary localize(const LocalizationOptions& options);
// Tumour flags (N) bool of patches with level-0 top-left coords (N, 2) (x, y) and side `footprint`:
// a patch is tumour when it overlaps any box (x, y, size) by at least one pixel.
torch::Tensor tumour_patches(const torch::Tensor& coords, int64_t footprint, const torch::Tensor& boxes);

struct ExtractFeaturesOptions {
  std::string manifest, out, cache_dir;  // cache_dir empty: <manifest folder>/tessera-cache
  std::string backend = "auto";
  std::string encoder = "resnet50";      // a registered encoder or a model folder (encoder_registry.h)
  std::string encoder_args;              // JSON arguments over the encoder's
  std::string weights;                   // safetensors or torch.save (a folder's own file by default)
  std::string run;                       // or: the encoder of a tessera run (rebuilt from its spec)
  std::string mean, std;                 // empty: the encoder's preprocessing
  int64_t stages = 4, width = 64, batch = 64, read_workers = 2, threads = 0;
  bool skip_errors = false;
  std::string precision = "fp32";  // fp32 | bf16 | fp16: the encoder's autocast precision (bags stay float32)
  std::string json;                // non-empty: the summary, settings and provenance written here (rank 0)
  double dist_timeout = 300;       // data-parallel launches: seconds a rank waits for the others
  std::function<bool()> interrupted;  // asked before each slide; true: stop after the bag in progress
  slides::PatchGridOptions grid = [] {
    slides::PatchGridOptions g;
    g.patch = 0;  // 0: the encoder's input size
    return g;
  }();
};

struct ExtractSummary {
  int64_t written = 0, existing = 0;
  int64_t patches = 0;   // encoded (read + encoded) in the bags written
  double seconds = 0;    // wall time of reading and encoding (the slowest rank's)
  std::vector<std::string> failed;  // "id: reason"
};

// One <id>.h5 bag per slide (features (N, D) float32 + coords (N, 2)); slides whose bag exists are
// skipped, so an interrupted run resumes. Launched as several ranks, rank r encodes slides r, r + W, ...
// and every rank returns the summary of them all.
ExtractSummary extract_features(ExtractFeaturesOptions options);

}  // namespace tessera::app
