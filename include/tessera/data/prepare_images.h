// PANDA-style preprocessing: every image (or slide) of a manifest is read at a pyramid level, shrunk to
// fit S x S keeping its aspect ratio and padded centred with white, saved as PNG; the rows are split
// into stratified folds and written as path,label CSVs ready for data.dataset csv. Images already
// written are skipped, so an interrupted run resumes.
#pragma once
#include <cstdint>
#include <string>

namespace tessera::data {

struct PrepareImagesOptions {
  std::string manifest;          // CSV with a header naming id_column and label_column
  std::string images;            // folder holding <id><extension>
  std::string out;               // PNGs plus folds.csv, train.csv, val.csv
  std::string id_column = "image_id";
  std::string label_column = "isup_grade";
  std::string extension = ".tiff";
  int64_t size = 512;
  int64_t level = 0;
  int64_t folds = 5;             // stratified; fold 0 is the validation set
  int64_t seed = 0;
};

struct PrepareImagesSummary {
  int64_t written = 0, skipped = 0;
};

PrepareImagesSummary prepare_images(const PrepareImagesOptions& options);

}  // namespace tessera::data
