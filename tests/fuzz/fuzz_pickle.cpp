// torch.save files (zip and legacy forms) through tessera's pickle reader and state-dict loading.
#include "fuzz.h"
#include "tessera/models/state_dict.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = tessera::fuzz::scratch(data, size, ".pt");
  return tessera::fuzz::clear_errors_only([&] { tessera::models::read_state_dict(path); });
}
