// tessera: train and run classifiers on images far larger than accelerator memory.
#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include <fmt/format.h>

#include <iostream>

#include "commands.h"
#include "tessera/core/distributed.h"
#include "tessera/core/error.h"
#include "tessera/core/memory.h"
#include "tessera/core/suggest.h"
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

// Usage errors exit with 2, in the words every interface uses: the unknown name and the nearest valid
// ones, the key given twice, where to find the list.
constexpr int kUsageError = 2;

// The subcommand being parsed when the error came (e.g. "bench encoder"), or the app itself.
CLI::App* innermost(CLI::App* app, std::string& path) {
  path = "tessera";
  while (true) {
    const auto subs = app->get_subcommands();
    if (subs.empty()) return app;
    app = subs.front();
    path += " " + app->get_name();
  }
}

std::vector<std::string> option_names(CLI::App* app) {
  std::vector<std::string> out;
  for (const auto* opt : app->get_options()) {
    for (const auto& name : opt->get_lnames()) out.push_back("--" + name);
  }
  return out;
}

std::vector<std::string> command_names(CLI::App* app) {
  std::vector<std::string> out;
  for (const auto* sub : app->get_subcommands([](CLI::App*) { return true; })) out.push_back(sub->get_name());
  return out;
}

std::string usage_message(CLI::App& app, const CLI::ParseError& e) {
  std::string path;
  CLI::App* sub = innermost(&app, path);
  const auto extras = app.remaining(/*recurse=*/true);  // an unknown option may fall through to the parent
  const bool has_commands = !command_names(sub).empty();
  if (!extras.empty() && (dynamic_cast<const CLI::ExtrasError*>(&e) || dynamic_cast<const CLI::RequiredError*>(&e))) {
    const auto& word = extras.front();
    if (word.rfind("-", 0) == 0) {
      const auto name = word.substr(0, word.find('='));
      return fmt::format("{}: unknown option '{}'{} ({} --help lists every option)", path, name,
                         tessera::did_you_mean(name, option_names(sub)), path);
    }
    if (has_commands) {
      return fmt::format("{}: unknown command '{}'{} ({} --help lists the commands)", path, word,
                         tessera::did_you_mean(word, command_names(sub)), path);
    }
    return fmt::format("{}: unexpected argument '{}' ({} --help shows the usage)", path, word, path);
  }
  if (dynamic_cast<const CLI::ArgumentMismatch*>(&e)) {
    for (const auto* opt : sub->get_options()) {
      if (opt->count() > 1 && opt->get_expected_max() == 1) {
        return fmt::format("{}: option {} is given {} times; give it once", path, opt->get_name(), opt->count());
      }
    }
  }
  if (has_commands && sub->get_subcommands().empty() && dynamic_cast<const CLI::RequiredError*>(&e)) {
    std::string commands;
    for (const auto& c : command_names(sub)) commands += (commands.empty() ? "" : ", ") + c;
    return fmt::format("{}: give a command: {} ({} --help says what each does)", path, commands, path);
  }
  return fmt::format("{}: {} ({} --help shows the usage)", path, e.what(), path);
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
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << "error: " << usage_message(app, e) << "\n";
    return kUsageError;
  } catch (const tessera::Error& e) {
    return fail(e.what());
  } catch (const c10::Error& e) {
    return fail(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return 0;
}
