// Dynamic loss scaling for fp16 training, with torch.cuda.amp.GradScaler's maths: the loss is
// multiplied by the scale before backward; before the optimiser step the gradients are unscaled and
// checked; a step with an inf/NaN gradient is skipped and the scale halved; after growth_interval
// finite steps in a row the scale doubles. On CUDA the unscale/check and the update are ATen's fused
// kernels; on the CPU (LibTorch 1.13 has those kernels for CUDA only) the same maths in plain ops.
#pragma once
#include <torch/types.h>

#include <vector>

namespace tessera::methods {

struct LossScalerOptions {
  double init_scale = 65536.0;  // 2^16, GradScaler's default
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
};

class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions options = {});

  torch::Tensor scale(const torch::Tensor& loss) const;
  // Divides every defined gradient by the scale in place; false when any of them is inf or NaN (the
  // gradients are then garbage and the step must be skipped).
  bool unscale(const std::vector<torch::Tensor>& params);
  // After each step attempt: backs off on overflow, grows after growth_interval good steps.
  void update(bool found_inf);

  double scale_value() const;
  int64_t growth_tracker() const;  // finite steps since the last change of scale
  int64_t skipped_steps() const { return skipped_; }

  // What a checkpoint keeps so a resumed run scales exactly as the uninterrupted one.
  void restore(double scale, int64_t growth_tracker, int64_t skipped_steps);

 private:
  void to_device(const torch::Device& device);
  LossScalerOptions options_;
  torch::Tensor scale_;           // (1) float, on the gradients' device
  torch::Tensor growth_tracker_;  // (1) int32, same device
  int64_t skipped_ = 0;
};

}  // namespace tessera::methods
