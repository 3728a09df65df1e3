// What built this binary: tessera's version, the git commit and the LibTorch it links. Written into
// every run spec and benchmark record so results can be traced to the code that made them.
#pragma once
#include <string>

namespace tessera {

std::string version();          // e.g. "0.2.0"
std::string commit();           // git describe of the checkout at build time ("-dirty" with local changes), or "unknown"
std::string libtorch_version(); // e.g. "1.13.1"
// "tessera 0.2.0 (commit abc1234, LibTorch 1.13.1)"
std::string version_line();

}  // namespace tessera
