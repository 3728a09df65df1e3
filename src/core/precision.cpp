#include "tessera/core/precision.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include "tessera/core/error.h"

// LibTorch 2.4 replaced the per-device autocast setters with ones taking a device type.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define TESSERA_AUTOCAST_BY_DEVICE 1
#endif

namespace tessera {
namespace {

bool cpu_enabled() {
#ifdef TESSERA_AUTOCAST_BY_DEVICE
  return at::autocast::is_autocast_enabled(at::kCPU);
#else
  return at::autocast::is_cpu_enabled();
#endif
}
bool cuda_enabled() {
#ifdef TESSERA_AUTOCAST_BY_DEVICE
  return at::autocast::is_autocast_enabled(at::kCUDA);
#else
  return at::autocast::is_enabled();
#endif
}
c10::ScalarType cpu_dtype() {
#ifdef TESSERA_AUTOCAST_BY_DEVICE
  return at::autocast::get_autocast_dtype(at::kCPU);
#else
  return at::autocast::get_autocast_cpu_dtype();
#endif
}
c10::ScalarType cuda_dtype() {
#ifdef TESSERA_AUTOCAST_BY_DEVICE
  return at::autocast::get_autocast_dtype(at::kCUDA);
#else
  return at::autocast::get_autocast_gpu_dtype();
#endif
}
void set_cpu(bool on, c10::ScalarType dtype) {
#ifdef TESSERA_AUTOCAST_BY_DEVICE
  at::autocast::set_autocast_dtype(at::kCPU, dtype);
  at::autocast::set_autocast_enabled(at::kCPU, on);
#else
  at::autocast::set_autocast_cpu_dtype(dtype);
  at::autocast::set_cpu_enabled(on);
#endif
}
void set_cuda(bool on, c10::ScalarType dtype) {
#ifdef TESSERA_AUTOCAST_BY_DEVICE
  at::autocast::set_autocast_dtype(at::kCUDA, dtype);
  at::autocast::set_autocast_enabled(at::kCUDA, on);
#else
  at::autocast::set_autocast_gpu_dtype(dtype);
  at::autocast::set_enabled(on);
#endif
}

}  // namespace

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::fp32;
  if (name == "bf16") return Precision::bf16;
  if (name == "fp16") return Precision::fp16;
  fail("unknown precision '", name, "'; use fp32, bf16 or fp16");
}

std::string precision_name(Precision p) {
  switch (p) {
    case Precision::bf16: return "bf16";
    case Precision::fp16: return "fp16";
    default: return "fp32";
  }
}

c10::ScalarType precision_dtype(Precision p) {
  switch (p) {
    case Precision::bf16: return at::kBFloat16;
    case Precision::fp16: return at::kHalf;
    default: return at::kFloat;
  }
}

int64_t precision_bytes(Precision p) { return p == Precision::fp32 ? 4 : 2; }

c10::ScalarType cpu_autocast_dtype() { return cpu_enabled() ? cpu_dtype() : at::kFloat; }

bool cpu_autocast_supports(Precision p) {
  if (p != Precision::fp16) return true;
#if TORCH_VERSION_MAJOR >= 2
  return true;
#else
  return false;
#endif
}

AutocastGuard::AutocastGuard(Precision p)
    : cpu_enabled_(cpu_enabled()), cuda_enabled_(cuda_enabled()), cpu_dtype_(cpu_dtype()), cuda_dtype_(cuda_dtype()) {
  const bool on = p != Precision::fp32;
  const auto dtype = precision_dtype(p);
  const bool cpu_on = on && cpu_autocast_supports(p);
  set_cpu(cpu_on, cpu_on ? dtype : cpu_dtype_);
#ifdef TESSERA_WITH_CUDA
  set_cuda(on, on ? dtype : cuda_dtype_);
#else
  (void)set_cuda;
#endif
  // No weight-cast cache: a cast made in a no-gradient pass (IPS selection, PatchGD's fill) and reused in
  // the gradient pass would carry no gradient to the fp32 weight. Re-casting the weights costs little.
  at::autocast::set_autocast_cache_enabled(false);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
    at::autocast::set_autocast_cache_enabled(true);
  }
  set_cpu(cpu_enabled_, cpu_dtype_);
#ifdef TESSERA_WITH_CUDA
  set_cuda(cuda_enabled_, cuda_dtype_);
#endif
}

}  // namespace tessera
