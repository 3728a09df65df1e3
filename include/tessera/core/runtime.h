// Process-wide settings a run needs before any tensor work: threads, seeds, determinism, device.
#pragma once
#include <torch/types.h>

#include <cstdint>
#include <string>

namespace tessera::runtime {

// threads == 0 means all cores (shared among this node's data-parallel ranks). Torch's OpenMP pool otherwise
// defaults to 1 thread on some machines. Process-wide: for the CLI's main and callers that own the process.
void set_threads(int64_t threads);

// Torch's thread count for one library call: set on construction (as set_threads), the caller's count put back on destruction, so a call from Python or another program never
// leaves the process with a thread count it did not ask for.
class ScopedThreads {
 public:
  explicit ScopedThreads(int64_t threads);
  ~ScopedThreads();
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int previous_;
};
void seed_everything(int64_t seed);
void set_deterministic(bool on);
torch::Device device_from_name(const std::string& name);

}  // namespace tessera::runtime
