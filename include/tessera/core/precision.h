// Numeric precision of a run (train.precision): fp32, or bf16 / fp16 through ATen's autocast. Weights,
// BatchNorm statistics, softmax, losses and the optimiser state stay fp32 in every mode.
#pragma once
#include <c10/core/ScalarType.h>

#include <string>

namespace tessera {

enum class Precision { fp32, bf16, fp16 };

Precision parse_precision(const std::string& name);  // "fp32" | "bf16" | "fp16"; throws naming the value
std::string precision_name(Precision p);
c10::ScalarType precision_dtype(Precision p);  // kFloat, kBFloat16, kHalf
int64_t precision_bytes(Precision p);          // bytes per element of an autocast activation

// Whether CPU autocast computes in this precision with the linked LibTorch (1.13: bf16 only; fp16 on the
// CPU then runs the fp32 maths with loss scaling, which tests the scaler).
bool cpu_autocast_supports(Precision p);

// The CPU autocast dtype in effect (kFloat when autocast is off), for code autocast does not reach.
c10::ScalarType cpu_autocast_dtype();

// Autocast on for the scope (CPU and, in CUDA builds, CUDA), in the given precision; fp32 turns it off.
// Nests: the previous state comes back on exit. Autocast's cast-weight cache is off inside (a cast cached
// by a no-gradient pass would cut the weights' gradients in the next gradient pass).
class AutocastGuard {
 public:
  explicit AutocastGuard(Precision p);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool cpu_enabled_, cuda_enabled_;
  c10::ScalarType cpu_dtype_, cuda_dtype_;
};

}  // namespace tessera
