#include "tessera/data/loader.h"

#include <torch/torch.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "tessera/core/error.h"

namespace tessera::data {

Loader::Loader(DatasetPtr dataset, std::vector<int64_t> order, int64_t batch_size, int64_t workers, int64_t prefetch)
    : dataset_(std::move(dataset)), order_(std::move(order)), batch_size_(batch_size) {
  TESSERA_CHECK(batch_size_ > 0, "batch size must be positive, got ", batch_size_);
  num_batches_ = (static_cast<int64_t>(order_.size()) + batch_size_ - 1) / batch_size_;
  ahead_ = std::max<int64_t>(1, workers) * std::max<int64_t>(1, prefetch);
  for (int64_t w = 0; w < workers; ++w) threads_.emplace_back([this] { work(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

Batch Loader::make(int64_t batch) const {
  const int64_t begin = batch * batch_size_;
  const int64_t end = std::min<int64_t>(begin + batch_size_, order_.size());
  std::vector<Sample> samples;
  std::vector<int64_t> indices(order_.begin() + begin, order_.begin() + end);
  for (int64_t i : indices) samples.push_back(dataset_->get(i));
  return collate(std::move(samples), std::move(indices));
}

void Loader::work() {
  while (true) {
    int64_t batch;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stop_ || (next_to_make_ < num_batches_ && next_to_make_ < next_to_give_ + ahead_); });
      if (stop_) return;
      batch = next_to_make_++;
    }
    try {
      Batch b = make(batch);
      std::lock_guard<std::mutex> lock(mutex_);
      ready_.emplace(batch, std::move(b));
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
    cv_.notify_all();
  }
}

std::optional<Batch> Loader::next() {
  if (next_to_give_ >= num_batches_) return std::nullopt;
  if (threads_.empty()) return make(next_to_give_++);
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [this] { return error_ || ready_.count(next_to_give_); });
  if (error_) std::rethrow_exception(error_);
  Batch b = std::move(ready_.at(next_to_give_));
  ready_.erase(next_to_give_++);
  lock.unlock();
  cv_.notify_all();
  return b;
}

std::vector<int64_t> epoch_order(int64_t n, int64_t seed, int64_t epoch, bool shuffle) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  if (shuffle) {
    std::mt19937_64 rng(static_cast<uint64_t>(seed) * 1000003ULL + static_cast<uint64_t>(epoch));
    for (int64_t i = n - 1; i > 0; --i) std::swap(order[i], order[std::uniform_int_distribution<int64_t>(0, i)(rng)]);
  }
  return order;
}

std::vector<int64_t> epoch_shard(int64_t n, int64_t seed, int64_t epoch, int64_t start, int64_t rank, int64_t world) {
  TESSERA_ASSERT(world >= 1 && rank >= 0 && rank < world && n > 0, "bad shard request");
  const auto order = epoch_order(n, seed, epoch, /*shuffle=*/true);
  std::vector<int64_t> rest(order.begin() + std::min(n, std::max<int64_t>(0, start)), order.end());
  for (int64_t i = 0; rest.size() % static_cast<size_t>(world) != 0; ++i) rest.push_back(order[i % n]);
  std::vector<int64_t> shard;
  for (size_t i = static_cast<size_t>(rank); i < rest.size(); i += static_cast<size_t>(world)) shard.push_back(rest[i]);
  return shard;
}

}  // namespace tessera::data
