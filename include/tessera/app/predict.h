// Prediction workflows: one image, one whole slide or one feature bag, with the run's own
// normalisation, a JSON of outputs and a picture of what the model looked at.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "tessera/methods/method.h"
#ifdef TESSERA_WITH_SLIDES
#include "tessera/slides/reader.h"
#include "tessera/slides/tissue.h"
#endif
#include "tessera/train/experiment.h"

namespace tessera::app {

struct PredictOptions {
  std::string run;    // run directory (or checkpoint file)
  std::string image;  // PNG/JPEG/TIFF, or a .pt tensor (C, H, W) in [0, 1]
  std::string slide;  // whole-slide image (runs trained on slides; with bag: the picture's background)
  std::string bag;    // feature bag (.h5) for runs trained on feature bags
  std::string out;    // output folder; empty: <run>/predict
  int64_t thumbnail = 1024;  // slides: longest side of heatmap.png
  bool tiff = false;         // slides: also a full-resolution pyramidal TIFF overlay
  bool geojson = false;      // slides: also scores.geojson (QuPath detections with the attention)
  int64_t threads = 0;       // 0: all cores
};

struct Prediction {
  nlohmann::json result;           // what prediction.json holds
  std::vector<std::string> files;  // files written
};

struct ImagePrediction {
  nlohmann::json result;                    // prediction.json's outputs, predicted classes, patches, method
  methods::Method::PatchScores scores;      // undefined scores for methods without a picture
  torch::Tensor picture;                    // the image as the run reads it (C, H, W) in [0, 1]
};
// One image (C, H, W) in [0, 1] (any channel count and size the run accepts: conformed as `predict`
// does) through an opened run, nothing written. what names the input in errors.
ImagePrediction predict_picture(train::OpenedRun& run, const torch::Tensor& image, const std::string& what);

#ifdef TESSERA_WITH_SLIDES
struct SlidePrediction {
  nlohmann::json result;           // prediction.json's outputs, predicted classes, patch count, method
  slides::PatchCoords grid;        // the patches scored (level-0 top-left corners)
  torch::Tensor scores, selected;  // (N) attention of every patch, (N) bool the top M
  slides::SlideReaderPtr reader;   // the slide (null for a feature bag without its slide)
};
// One slide (its tissue patches at the run's grid) or one feature bag (.h5, with slide optional for
// pictures) through an opened slide run, nothing written.
SlidePrediction predict_slide(train::OpenedRun& run, const std::string& slide, const std::string& bag);
#endif

// Writes prediction.json (outputs per task, predicted classes, per-patch scores) and a picture:
// selection.png for IPS (selected patches outlined, blue = low to red = high attention),
// patches.png for PatchGD (each patch tinted by its occlusion score), heatmap.png for slides.
Prediction predict(const PredictOptions& options);

// The image with the patches drawn on it: outlines (a selection) or translucent fills (a full grid),
// coloured from blue (lowest score) to red (highest). image (C, H, W) in [0, 1].
torch::Tensor draw_patch_scores(const torch::Tensor& image, const methods::Method::PatchScores& scores);

}  // namespace tessera::app
