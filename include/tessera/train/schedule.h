// Learning-rate schedule of the IPS reference: linear warm-up, then cosine down to min_factor x peak.
// The step counts loader items (batches), as in the reference.
#pragma once
#include <cstdint>

namespace tessera::train {

struct WarmupCosine {
  double peak_lr = 1e-3;
  double warmup_epochs = 10;
  int64_t epochs = 150;
  int64_t steps_per_epoch = 1;
  double min_factor = 1e-3;
  double at(int64_t step) const;
};

}  // namespace tessera::train
