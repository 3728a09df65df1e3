// A fixed set of worker threads that runs parallel loops: the one thread pool of the library (slide
// reading, preprocessing, benchmarks). Threads start once and live as long as the pool.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tessera {

class ThreadPool {
 public:
  // on_exit runs on each worker thread as it ends (e.g. to release per-thread library buffers).
  explicit ThreadPool(int64_t threads, std::function<void()> on_exit = {});
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Runs f(i) for every i in [0, n) on the workers and waits; rethrows the first exception after all
  // have finished. Calls from several threads take turns.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& f);
  int64_t size() const { return static_cast<int64_t>(threads_.size()); }

 private:
  void work();

  std::vector<std::thread> threads_;
  std::function<void()> on_exit_;
  std::mutex call_mutex_;  // one loop at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t next_ = 0, total_ = 0, finished_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace tessera
