// safetensors files.
#include "fuzz.h"
#include "tessera/models/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = tessera::fuzz::scratch(data, size, ".safetensors");
  return tessera::fuzz::clear_errors_only([&] { tessera::models::read_safetensors(path); });
}
