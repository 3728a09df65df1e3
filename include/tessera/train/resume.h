// --resume: a run continues from its own config. What a command line or a Python call gives beside it
// may only change how the run proceeds (more epochs, threads, a time limit), never what it trains.
#pragma once
#include <string>
#include <vector>

#include "tessera/core/config.h"

namespace tessera::train {

// Keys a resumed run may change: when it stops (train.epochs, train.time_limit), how it logs and
// checkpoints, and the machine's threads and workers.
const std::vector<std::string>& resumable_keys();

// The config a resumed run continues with: the one stored in <requested.run_dir>/checkpoint.pt, with
// the resumable keys of `requested` applied. `given` lists the keys the caller set (command-line or
// keyword overrides); with `whole` (a config file was given) every key of `requested` counts as given.
// A given key that differs from the run's and may not change is an error listing every such key with
// both values.
Config resume_config(const Config& requested, const std::vector<std::string>& given, bool whole);

}  // namespace tessera::train
