#include "tessera/train/schedule.h"

#include <algorithm>
#include <cmath>

namespace tessera::train {

double LrSchedule::at(int64_t step) const {
  const auto warmup_steps = static_cast<int64_t>(warmup_epochs * steps_per_epoch);
  if (step < warmup_steps) return peak_lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (kind == "linear") {
    const double end = (decay_epochs > 0 ? decay_epochs : 2.0 * epochs) * steps_per_epoch;
    const double left = (end - step) / std::max(1.0, end - warmup_steps);
    return peak_lr * std::clamp(left, 0.0, 1.0);
  }
  const auto max_steps = static_cast<int64_t>(epochs * steps_per_epoch);
  const double progress = static_cast<double>(step - warmup_steps) / static_cast<double>(std::max<int64_t>(1, max_steps - warmup_steps));
  const double q = 0.5 * (1.0 + std::cos(M_PI * progress));
  return peak_lr * q + peak_lr * min_factor * (1.0 - q);
}

}  // namespace tessera::train
