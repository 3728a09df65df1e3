#include "tessera/core/memory.h"

#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <type_traits>
#include <unordered_map>

#include <sys/resource.h>
#include <unistd.h>

#ifdef TESSERA_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime_api.h>
#include <torch/cuda.h>
#endif

#include "tessera/core/error.h"

namespace tessera::memory {
namespace {

std::atomic<int64_t> g_live{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_budget{0};

// Wraps the default CPU allocator. Callers of raw_allocate() need context == data pointer, so sizes
// live in a side table keyed by pointer rather than in the context.
std::mutex g_sizes_mutex;
std::unordered_map<void*, int64_t> g_sizes;
c10::DeleterFnPtr g_base_deleter = nullptr;

void tracked_delete(void* ptr) {
  if (ptr) {
    std::lock_guard<std::mutex> lock(g_sizes_mutex);
    auto it = g_sizes.find(ptr);
    if (it != g_sizes.end()) {
      g_live.fetch_sub(it->second, std::memory_order_relaxed);
      g_sizes.erase(it);
    }
  }
  g_base_deleter(ptr);
}

// The tracking shared by both allocator interfaces below.
class TrackingBase : public c10::Allocator {
 public:
  explicit TrackingBase(c10::Allocator* base) : base_(base) { g_base_deleter = base->raw_deleter(); }

  c10::DeleterFnPtr raw_deleter() const override { return &tracked_delete; }

 protected:
  c10::DataPtr track(size_t nbytes) const {
    const auto bytes = static_cast<int64_t>(nbytes);
    const int64_t budget = g_budget.load(std::memory_order_relaxed);
    const int64_t live = g_live.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    if (budget > 0 && live > budget) {
      g_live.fetch_sub(bytes, std::memory_order_relaxed);
      throw BudgetExceeded("memory budget exceeded: allocating " + format_bytes(bytes) + " would bring live tensors to " +
                           format_bytes(live) + ", over the budget of " + format_bytes(budget), live);
    }
    int64_t peak = g_peak.load(std::memory_order_relaxed);
    while (live > peak && !g_peak.compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
    }
    c10::DataPtr inner = base_->allocate(nbytes);
    void* data = inner.release_context();  // the default allocator's context is the data pointer
    {
      std::lock_guard<std::mutex> lock(g_sizes_mutex);
      g_sizes[data] = bytes;
    }
    return {data, data, &tracked_delete, c10::Device(c10::DeviceType::CPU)};
  }

 private:
  c10::Allocator* base_;
};

// LibTorch 2.x (2.6 has it) made Allocator::allocate non-const and, with it, added the pure virtual
// copy_data: the allocator takes whichever interface the installed headers declare (templates, so that
// only the one used is checked against them).
template <typename Base>
class ConstAllocate final : public Base {
 public:
  using Base::Base;
  c10::DataPtr allocate(size_t nbytes) const override { return this->track(nbytes); }
};
template <typename Base>
class MutableAllocate final : public Base {
 public:
  using Base::Base;
  c10::DataPtr allocate(size_t nbytes) override { return this->track(nbytes); }
  void copy_data(void* dest, const void* src, std::size_t count) const override { std::memcpy(dest, src, count); }
};
constexpr bool kConstAllocate =
    std::is_same_v<decltype(&c10::Allocator::allocate), c10::DataPtr (c10::Allocator::*)(size_t) const>;
using TrackingAllocator =
    std::conditional_t<kConstAllocate, ConstAllocate<TrackingBase>, MutableAllocate<TrackingBase>>;

int64_t read_status_kib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::string prefix = std::string(key) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return std::stoll(line.substr(prefix.size()));
  }
  return -1;
}

}  // namespace

void install_tracking() {
  static std::once_flag once;
  std::call_once(once, [] {
    static TrackingAllocator allocator(c10::GetDefaultCPUAllocator());
    c10::SetCPUAllocator(&allocator, /*priority=*/100);
  });
}

int64_t cpu_live_bytes() { return g_live.load(); }
int64_t cpu_peak_bytes() { return g_peak.load(); }

int64_t current_rss_bytes() {
  const int64_t kib = read_status_kib("VmRSS");
  return kib < 0 ? 0 : kib * 1024;
}

Snapshot snapshot() {
  Snapshot s;
  s.live_tensor_bytes = cpu_live_bytes();
  s.peak_tensor_bytes = cpu_peak_bytes();
#ifdef TESSERA_WITH_CUDA
  if (torch::cuda::is_available()) {
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(c10::cuda::current_device());
    constexpr size_t kAggregate = 0;  // StatType::AGGREGATE, whose namespace LibTorch 2.x moved
    s.live_tensor_bytes += stats.allocated_bytes[kAggregate].current;
    s.peak_tensor_bytes += stats.allocated_bytes[kAggregate].peak;
  }
#endif
  const int64_t hwm = read_status_kib("VmHWM");
  if (hwm >= 0) {
    s.peak_rss_bytes = hwm * 1024;
  } else {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    s.peak_rss_bytes = static_cast<int64_t>(usage.ru_maxrss) * 1024;
  }
  return s;
}

void reset_peaks() {
  g_peak.store(g_live.load());
  // Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
  if (FILE* f = std::fopen("/proc/self/clear_refs", "w")) {
    std::fputs("5", f);
    std::fclose(f);
  }
#ifdef TESSERA_WITH_CUDA
  if (torch::cuda::is_available()) c10::cuda::CUDACachingAllocator::resetPeakStats(c10::cuda::current_device());
#endif
}

void set_budget(int64_t bytes) {
  TESSERA_CHECK(bytes >= 0, "memory budget must be >= 0, got ", bytes);
  g_budget.store(bytes);
#ifdef TESSERA_WITH_CUDA
  if (torch::cuda::is_available()) {
    // The caching allocator refuses to grow past the fraction and raises its out-of-memory error,
    // which the trainer turns into BudgetExceeded.
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    const double fraction = bytes > 0 ? std::min(1.0, static_cast<double>(bytes) / static_cast<double>(total_bytes)) : 1.0;
    c10::cuda::CUDACachingAllocator::setMemoryFraction(fraction, c10::cuda::current_device());
  }
#endif
}

int64_t budget() { return g_budget.load(); }

int64_t parse_bytes(const std::string& text) {
  size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    fail("cannot read a size from '", text, "'; write e.g. 4GiB, 512MiB or 1000000");
  }
  std::string unit = text.substr(pos);
  while (!unit.empty() && std::isspace(static_cast<unsigned char>(unit.front()))) unit.erase(0, 1);
  double scale = 1;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KiB" || unit == "K") scale = 1024.0;
  else if (unit == "MiB" || unit == "M") scale = 1024.0 * 1024;
  else if (unit == "GiB" || unit == "G") scale = 1024.0 * 1024 * 1024;
  else if (unit == "kB" || unit == "KB") scale = 1e3;
  else if (unit == "MB") scale = 1e6;
  else if (unit == "GB") scale = 1e9;
  else fail("unknown size unit '", unit, "' in '", text, "'; use B, KiB, MiB, GiB, kB, MB or GB");
  TESSERA_CHECK(value >= 0 && std::isfinite(value), "size must be non-negative: '", text, "'");
  return static_cast<int64_t>(value * scale);
}

std::string format_bytes(int64_t bytes) {
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (std::abs(b) >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  else if (std::abs(b) >= 1024.0 * 1024) std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024));
  else if (std::abs(b) >= 1024.0) std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else std::snprintf(buf, sizeof buf, "%lld B", static_cast<long long>(bytes));
  return buf;
}

}  // namespace tessera::memory
