#include "tessera/core/version.h"

#include <torch/version.h>

#ifndef TESSERA_VERSION
#define TESSERA_VERSION "unknown"
#endif
#ifndef TESSERA_COMMIT
#define TESSERA_COMMIT "unknown"
#endif

namespace tessera {

std::string version() { return TESSERA_VERSION; }
std::string commit() { return TESSERA_COMMIT; }
std::string libtorch_version() { return TORCH_VERSION; }
std::string version_line() {
  return "tessera " + version() + " (commit " + commit() + ", LibTorch " + libtorch_version() + ")";
}

}  // namespace tessera
