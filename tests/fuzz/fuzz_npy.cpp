// NumPy .npy and .npz files.
#include "fuzz.h"
#include "tessera/core/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto npy = tessera::fuzz::scratch(data, size, ".npy");
  tessera::fuzz::clear_errors_only([&] { tessera::read_npy(npy); });
  const auto npz = tessera::fuzz::scratch(data, size, ".npz");
  return tessera::fuzz::clear_errors_only([&] { tessera::read_npz(npz); });
}
