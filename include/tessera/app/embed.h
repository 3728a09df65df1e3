// tessera embed and export-encoder: features of image files from any registered encoder or model
// folder (the TRIDENT / CLAM patch-encoding step), and encoders written back as timm model folders.
#pragma once
#include <torch/types.h>

#include <string>
#include <vector>

#include "tessera/core/precision.h"
#include "tessera/models/encoder_registry.h"

namespace tessera::app {

struct EmbedOptions {
  std::string encoder;       // registered name or model folder
  std::string weights;       // overrides a folder's weight file; required for nothing (random weights warn)
  std::string encoder_args;  // JSON object over the encoder's arguments
  std::vector<std::string> images;
  std::string list;          // a file with one image path a line (added after images)
  std::string out;           // .npy: float32 (n, D), row i for the i-th image
  int64_t batch = 16;
  Precision precision = Precision::fp32;
  bool no_resize = false;    // feed each image at its own size (dynamic-size encoders)
};

struct EmbedResult {
  int64_t images = 0;
  std::vector<int64_t> shape;  // of the written array
  double seconds = 0;
};

// The image (C, H, W) in [0, 1] as the encoder reads it: resized so the shorter side is size / crop_pct
// and centre-cropped to the input size (an image already at the input size is not resampled), then
// normalised with the preprocessing's mean and std. resize false: only normalised.
torch::Tensor preprocess_for_encoder(const torch::Tensor& image, const models::Preprocessing& p, bool resize);

// Builds the encoder (weights loaded strictly), in eval mode.
models::BackbonePtr load_encoder(const models::EncoderSpec& spec, const std::string& weights);

EmbedResult embed(const EmbedOptions& options);

struct ExportEncoderOptions {
  std::string run;      // a trained run whose encoder is exported ...
  std::string encoder;  // ... or a registered encoder / model folder
  std::string weights;
  std::string encoder_args;
  std::string out;      // the folder written: config.json + model.safetensors
};
void export_encoder(const ExportEncoderOptions& options);

}  // namespace tessera::app
