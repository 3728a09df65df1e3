// The tessera subcommands. Each registers its options on the app and runs when selected.
#pragma once
#include <CLI/CLI.hpp>

#include "tessera/core/config.h"

namespace tessera::cli {

// --config FILE plus one --section.key option per config key, applied in that order.
class ConfigOptions {
 public:
  void add_to(CLI::App& app);
  Config resolve();  // defaults <- YAML file <- command-line overrides

 private:
  std::string file_;
  Config defaults_;
  std::vector<std::pair<std::string, std::string>> overrides_;
  std::map<std::string, std::string> values_;
  std::vector<CLI::Option*> options_;
};

void add_train(CLI::App& app);
void add_eval(CLI::App& app);
void add_predict(CLI::App& app);
void add_import_ips(CLI::App& app);
void add_export_data(CLI::App& app);
void add_prepare_images(CLI::App& app);
void add_bench(CLI::App& app);

#ifdef TESSERA_WITH_SLIDES
// Whole-slide commands: slide-info, make-slides, preprocess, extract-features (slide_commands.cpp).
void add_slide_commands(CLI::App& app);
// bench slide-read | slide-ips | feature-bags (slide_bench.cpp).
void add_slide_bench(CLI::App& bench);
struct SlidePredictOptions {
  std::string slide, bag, out;
  int64_t thumbnail = 1024;
  bool tiff = false;
};
// predict on a whole slide (or a feature bag): outputs JSON, per-patch scores CSV, heatmap PNG (+ TIFF).
void predict_slide(const Config& config, const std::string& run, const SlidePredictOptions& options);
#endif

}  // namespace tessera::cli
