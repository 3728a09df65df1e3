// A one-line progress display with rate and ETA for long loops.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace tessera {

class Progress {
 public:
  Progress(std::string label, int64_t total);
  // Advances by n and redraws (on a terminal) or logs every ~10 % (otherwise).
  void advance(int64_t n = 1, const std::string& status = "");
  void finish(const std::string& status = "");

 private:
  std::string line(const std::string& status) const;
  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  int64_t next_log_ = 0;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace tessera
