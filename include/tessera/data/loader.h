// Batches in a fixed order, prepared ahead by background threads and delivered in order.
#pragma once
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "tessera/data/dataset.h"

namespace tessera::data {

class Loader {
 public:
  // order: the sample indices to visit; a final partial batch is kept.
  // workers == 0 prepares batches on the calling thread.
  Loader(DatasetPtr dataset, std::vector<int64_t> order, int64_t batch_size, int64_t workers, int64_t prefetch);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t num_batches() const { return num_batches_; }
  // The next batch, or nothing at the end. Rethrows a worker's error.
  std::optional<Batch> next();

 private:
  Batch make(int64_t batch) const;
  void work();

  DatasetPtr dataset_;
  std::vector<int64_t> order_;
  int64_t batch_size_, num_batches_, ahead_;
  int64_t next_to_make_ = 0, next_to_give_ = 0;
  std::map<int64_t, Batch> ready_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::thread> threads_;
};

// Order of one epoch: a permutation of [0, n) seeded by (seed, epoch), or identity if !shuffle.
std::vector<int64_t> epoch_order(int64_t n, int64_t seed, int64_t epoch, bool shuffle);

// One data-parallel rank's samples of a shuffled epoch from global sample `start` on: the epoch's order
// from there, padded with its first samples to a multiple of `world` (as DistributedSampler pads), every
// world-th taken from `rank`. A step of B per rank then covers the next B x world samples of the order,
// so a run resumes from its global position with any number of ranks.
std::vector<int64_t> epoch_shard(int64_t n, int64_t seed, int64_t epoch, int64_t start, int64_t rank, int64_t world);

}  // namespace tessera::data
