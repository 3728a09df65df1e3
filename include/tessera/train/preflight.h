// What a run needs, checked before its first step and before its run directory is touched, so that a
// mistake in the data costs seconds, not an epoch.
#pragma once
#include "tessera/core/config.h"
#include "tessera/data/dataset.h"

namespace tessera::train {

// The method's checks against an image's patch grid (IPS: ips.M at most the patches); every task has
// samples of at least two classes in the training split and in the test split (a test
// split of one class has no AUC and says nothing of the classifier), and every file the splits list
// exists and opens (headers read in parallel). Errors name the split, the counts and the fix.
void check_data(const Config& config, const data::Dataset& train_set, const data::Dataset* test_set);

}  // namespace tessera::train
