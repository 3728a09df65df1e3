// Learning-rate schedules, stepped once per loader batch (image batch), as in both references.
// IPS: linear warm-up, then cosine down to min_factor x peak at the last epoch.
// PatchGD: linear warm-up, then linear decay reaching 0 at decay_epochs (the reference: 2 x epochs).
#pragma once
#include <cstdint>
#include <string>

namespace tessera::train {

struct LrSchedule {
  std::string kind = "cosine";  // cosine | linear
  double peak_lr = 1e-3;
  double warmup_epochs = 10;
  int64_t epochs = 150;
  int64_t steps_per_epoch = 1;
  double min_factor = 1e-3;   // cosine
  double decay_epochs = 0;    // linear; 0: 2 x epochs
  double at(int64_t step) const;
};

}  // namespace tessera::train
