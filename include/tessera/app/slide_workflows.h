// Whole-slide workflows: synthetic slide sets for trying the pipeline, and feature extraction into
// HDF5 bags with a frozen encoder (resumable).
#pragma once
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

// Writes the slides and the manifest (slide,label,split), atomically; returns the manifest's path.
std::string make_slides(const MakeSlidesOptions& options);

struct ExtractFeaturesOptions {
  std::string manifest, out, cache_dir;  // cache_dir empty: <manifest folder>/tessera-cache
  std::string backend = "auto";
  std::string encoder = "resnet50";      // resnet18 | resnet34 | resnet50 (pooled features)
  std::string weights;                   // torchvision state dict
  std::string run;                       // or: the encoder of a tessera run (rebuilt from its spec)
  std::string mean = "0.485,0.456,0.406", std = "0.229,0.224,0.225";
  int64_t stages = 4, width = 64, batch = 64, read_workers = 2, threads = 0;
  bool skip_errors = false;
  slides::PatchGridOptions grid;
};

struct ExtractSummary {
  int64_t written = 0, existing = 0;
  std::vector<std::string> failed;  // "id: reason"
};

// One <id>.h5 bag per slide (features (N, D) float32 + coords (N, 2)); slides whose bag exists are
// skipped, so an interrupted run resumes.
ExtractSummary extract_features(ExtractFeaturesOptions options);

}  // namespace tessera::app
