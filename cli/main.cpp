// tessera: train and run classifiers on images far larger than accelerator memory.
#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include <fmt/format.h>

#include <iostream>

#include "commands.h"
#include "tessera/core/distributed.h"
#include "tessera/core/error.h"
#include "tessera/core/memory.h"
#include "tessera/core/version.h"

namespace {
// One line on stderr; in a data-parallel run the other ranks learn the cause too.
int fail(const std::string& message) {
  const bool names_rank = message.rfind("rank ", 0) == 0;  // collective failures already say which
  const std::string tag =
      tessera::dist::world_size() > 1 && !names_rank ? fmt::format("rank {}: ", tessera::dist::rank()) : "";
  std::cerr << "error: " << tag << message << "\n";
  tessera::dist::report_failure(message);
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  tessera::memory::install_tracking();  // before any tensor exists, so every byte is counted
  CLI::App app{"tessera: image classifiers on images far larger than memory (IPS, PatchGD)"};
  app.set_version_flag("--version", tessera::version_line());
  app.require_subcommand(1);
  tessera::cli::add_train(app);
  tessera::cli::add_plan(app);
  tessera::cli::add_eval(app);
  tessera::cli::add_predict(app);
  tessera::cli::add_import(app);
  tessera::cli::add_export_data(app);
  tessera::cli::add_report(app);
  tessera::cli::add_prepare_images(app);
  tessera::cli::add_bench(app);
  tessera::cli::add_encoder_commands(app);
  tessera::cli::add_launch(app);
#ifdef TESSERA_WITH_SLIDES
  tessera::cli::add_slide_commands(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const tessera::Error& e) {
    return fail(e.what());
  } catch (const c10::Error& e) {
    return fail(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}
