// The libFuzzer harness, built once per reader (the readers themselves once, in readers.cpp) (tests/fuzz/CMakeLists.txt sets TESSERA_FUZZ_HARNESS to the
// name readers.h knows and TESSERA_FUZZ_SUFFIX to the scratch file's extension).
#include "fuzz.h"
#include "readers.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = tessera::fuzz::scratch(data, size, TESSERA_FUZZ_SUFFIX);
  return tessera::fuzz::clear_errors_only([&] { tessera::fuzz::read_as(TESSERA_FUZZ_HARNESS, path); });
}
