// A run's checkpoint (torch.save zip with the run spec and config) opened as `tessera eval/predict` do.
#include "fuzz.h"
#include "tessera/train/experiment.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = tessera::fuzz::scratch(data, size, ".pt");
  return tessera::fuzz::clear_errors_only([&] { tessera::train::open_run(path); });
}
