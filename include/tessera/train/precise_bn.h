// Precise BatchNorm (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): before an evaluation,
// every BatchNorm layer's running statistics become the plain average over a number of training
// batches under the current weights, instead of the exponential average of batches seen under older
// weights, which lags while the learning rate is high (evaluations at chance between good ones).
#pragma once
#include <cstdint>
#include <vector>

#include "tessera/data/dataset.h"
#include "tessera/methods/method.h"

namespace tessera::train {

// Recomputes the running statistics of every BatchNorm layer that trains (layers frozen in eval mode
// keep theirs) from the method's training-mode forward passes over the samples `indices`, in batches.
// A layer that sees no batch keeps its statistics. Data-parallel: each rank passes its own indices and
// the ranks' averages are averaged. Nothing else changes (momentum and batch counters are restored).
// Returns the number of batches passed.
int64_t recompute_batch_norm_statistics(methods::Method& method, const data::DatasetPtr& dataset,
                                        std::vector<int64_t> indices, int64_t batch_size, int64_t workers,
                                        int64_t prefetch);

}  // namespace tessera::train
