// The tessera subcommands: each parses its options and calls one library function (tessera/app/).
#pragma once
#include <CLI/CLI.hpp>

#include "tessera/core/config.h"

namespace tessera::cli {

// --config FILE plus one --section.key option per config key, applied in that order.
class ConfigOptions {
 public:
  void add_to(CLI::App& app);
  // defaults <- YAML file <- command-line overrides; resuming, the run's own config with the overrides that
  // may change on resume (train/resume.h).
  Config resolve(bool resume = false);

 private:
  std::string file_;
  Config defaults_;
  std::map<std::string, std::string> values_;
  std::vector<CLI::Option*> options_;
};

void add_train(CLI::App& app);
void add_plan(CLI::App& app);
void add_eval(CLI::App& app);
void add_predict(CLI::App& app);
void add_import(CLI::App& app);  // import-ips, import-patchgd, upgrade-checkpoint
void add_export_data(CLI::App& app);
void add_report(CLI::App& app);
void add_prepare_images(CLI::App& app);
void add_launch(CLI::App& app);
void add_bench(CLI::App& app);
void add_encoder_commands(CLI::App& app);  // embed, export-encoder
void add_encoder_bench(CLI::App& bench);   // bench encoder

#ifdef TESSERA_WITH_SLIDES
// Whole-slide commands: slide-info, make-slides, preprocess, extract-features (slide_commands.cpp).
void add_slide_commands(CLI::App& app);
// bench slide-read | slide-ips | feature-bags (slide_bench.cpp).
void add_slide_bench(CLI::App& bench);
#endif

}  // namespace tessera::cli
