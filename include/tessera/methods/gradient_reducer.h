// Data-parallel gradient averaging: the parameters' gradients are all-reduced in buckets of about
// bucket_bytes, in a fixed bucket order on every rank. When armed for a backward pass, a hook on each
// parameter copies its final gradient into its bucket as autograd produces it and a bucket starts its
// all-reduce as soon as it is full, so communication overlaps the rest of the backward pass (as
// DistributedDataParallel's reducer does). finish() starts what is left, waits, and writes the average
// back into the gradients. A parameter that received no gradient on any rank keeps none, as in one
// process (AdamW then skips it).
#pragma once
#include <torch/types.h>

#include <functional>
#include <mutex>
#include <vector>

namespace tessera::methods {

class GradientReducer {
 public:
  explicit GradientReducer(std::vector<torch::Tensor> params, int64_t bucket_bytes = 25 << 20);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // The next backward pass produces final gradients: reduce buckets as they fill.
  void arm();
  // Reduces everything not reduced yet, waits, averages; gradients are then equal on every rank.
  void finish();
  double communication_seconds() const { return wait_seconds_; }  // time spent waiting in finish()
  int64_t buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    std::vector<int64_t> params;  // indices into params_
    torch::Tensor flat;           // concatenated gradients
    int64_t ready = 0;            // params whose gradient is in flat
    std::function<void()> wait;   // set once launched
  };
  void on_gradient(int64_t param, const torch::Tensor& grad);
  void launch_ready();
  void launch(Bucket& bucket);

  std::vector<torch::Tensor> params_;
  std::vector<int64_t> bucket_of_, offset_;  // per parameter
  std::vector<Bucket> buckets_;
  std::vector<bool> filled_;  // per parameter, in this armed pass
  std::vector<unsigned> hooks_;
  bool armed_ = false;
  size_t next_launch_ = 0;
  std::mutex mutex_;
  double wait_seconds_ = 0;
};

}  // namespace tessera::methods
