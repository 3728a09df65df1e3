// Every input the fuzz campaign found (tests/fuzz/corpus/<harness>/regression-*) replayed through the
// same reader in the normal build: each must now end in one clear tessera::Error, never a crash or
// another exception. (The sanitizer builds replay them too: scripts/fuzz.sh starts from the corpus.)
#include <filesystem>

#include "fuzz/readers.h"
#include "helpers.h"

namespace tessera {
namespace {
namespace fs = std::filesystem;

TEST(FuzzRegressions, EveryKeptFindingIsAClearError) {
  const fs::path corpus = fs::path(TESSERA_TESTS_DIR) / "fuzz" / "corpus";
  int replayed = 0;
  for (const auto& harness : fs::directory_iterator(corpus)) {
    for (const auto& input : fs::directory_iterator(harness.path())) {
      if (input.path().filename().string().rfind("regression-", 0) != 0) continue;
#ifndef TESSERA_WITH_SLIDES
      if (harness.path().filename() == "geojson" || harness.path().filename() == "h5") continue;
#endif
      testing::TempDir dir;
      const auto copy = dir.file("input");  // readers may write beside it (the config harness does)
      fs::copy_file(input.path(), copy);
      try {
        fuzz::read_as(harness.path().filename().string(), copy);
        ADD_FAILURE() << input.path() << " was accepted; it was kept because it is invalid";
      } catch (const Error& e) {
        EXPECT_FALSE(std::string(e.what()).empty());
      } catch (const std::exception& e) {
        ADD_FAILURE() << input.path() << ": " << e.what() << " (not a tessera::Error)";
      }
      ++replayed;
    }
  }
  EXPECT_GE(replayed, 4);  // the campaign's first findings: config, h5, pickle, run
}

}  // namespace
}  // namespace tessera
