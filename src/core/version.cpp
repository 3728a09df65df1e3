#include "tessera/core/version.h"

#include <torch/version.h>

#include "tessera_commit.h"  // generated at build time (cmake/commit.cmake)

#ifndef TESSERA_VERSION
#define TESSERA_VERSION "unknown"
#endif

namespace tessera {

std::string version() { return TESSERA_VERSION; }
std::string commit() { return TESSERA_COMMIT; }
std::string libtorch_version() { return TORCH_VERSION; }
std::string version_line() {
  return "tessera " + version() + " (commit " + commit() + ", LibTorch " + libtorch_version() + ")";
}

}  // namespace tessera
