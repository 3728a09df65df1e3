// Process-wide settings a run needs before any tensor work: threads, seeds, determinism, device.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>

namespace tessera::runtime {

// threads == 0 means all cores. Torch's OpenMP pool otherwise defaults to 1 thread on some machines.
void set_threads(int64_t threads);
void seed_everything(int64_t seed);
void set_deterministic(bool on);
torch::Device device_from_name(const std::string& name);

}  // namespace tessera::runtime
