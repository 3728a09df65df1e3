#include "tessera/core/thread_pool.h"

#include <algorithm>

namespace tessera {

ThreadPool::ThreadPool(int64_t threads, std::function<void()> on_exit) : on_exit_(std::move(on_exit)) {
  for (int64_t t = 0; t < std::max<int64_t>(1, threads); ++t) threads_.emplace_back([this] { work(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t)>& f) {
  if (n <= 0) return;
  std::lock_guard<std::mutex> call(call_mutex_);
  std::unique_lock<std::mutex> lock(mutex_);
  job_ = &f;
  next_ = 0;
  total_ = n;
  finished_ = 0;
  error_ = nullptr;
  ++generation_;
  wake_.notify_all();
  done_.wait(lock, [&] { return finished_ == total_; });
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

void ThreadPool::work() {
  uint64_t seen = 0;
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stop_ || (generation_ != seen && next_ < total_); });
    if (stop_) break;
    seen = generation_;
    while (next_ < total_) {
      const int64_t i = next_++;
      const auto* job = job_;
      lock.unlock();
      std::exception_ptr error;
      try {
        (*job)(i);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (error && !error_) error_ = error;
      if (++finished_ == total_) done_.notify_all();
    }
  }
  lock.unlock();
  if (on_exit_) on_exit_();
}

}  // namespace tessera
