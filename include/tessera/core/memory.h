// Memory accounting: live tensor bytes (tracked by a CPU allocator wrapper, and by the CUDA caching
// allocator's statistics on GPU) and the process's resident set size.
#pragma once
#include <cstdint>
#include <string>

#include "tessera/core/error.h"

namespace tessera::memory {

// Installs the tracking CPU allocator. Idempotent; call before creating tensors to count them all.
void install_tracking();

struct Snapshot {
  int64_t live_tensor_bytes = 0;  // CPU tensors now, plus CUDA if in use
  int64_t peak_tensor_bytes = 0;  // since the last reset_peaks()
  int64_t peak_rss_bytes = 0;     // process high-water mark since the last reset_peaks()
};

Snapshot snapshot();
// Starts a new measurement window for peaks (tensor peak := live; RSS high-water mark reset by the kernel).
void reset_peaks();

int64_t cpu_live_bytes();
int64_t cpu_peak_bytes();
int64_t current_rss_bytes();

// Thrown when an allocation would exceed the memory budget.
class BudgetExceeded : public Error {
 public:
  // needed: the live tensor bytes the refused allocation would have brought (what the work needs at
  // least); 0 when unknown.
  explicit BudgetExceeded(const std::string& what, int64_t needed = 0) : Error(what), needed_(needed) {}
  int64_t needed() const { return needed_; }

 private:
  int64_t needed_ = 0;
};

// Caps live CPU tensor bytes: an allocation that would exceed it throws BudgetExceeded naming the
// budget. 0 removes the cap. On CUDA the caching allocator's memory fraction is set to the budget.
void set_budget(int64_t bytes);
// The cap in force (0: none).
int64_t budget();


// "1.5GiB", "800MB", "4096" -> bytes; throws on anything else.
int64_t parse_bytes(const std::string& text);
std::string format_bytes(int64_t bytes);

}  // namespace tessera::memory
