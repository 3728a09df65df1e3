#include "tessera/core/progress.h"

#include <unistd.h>

#include <cstdio>

#include "tessera/core/distributed.h"
#include "tessera/core/log.h"

namespace tessera {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), tty_(isatty(fileno(stderr)) != 0 && dist::is_main()),
      start_(std::chrono::steady_clock::now()) {}

std::string Progress::line(const std::string& status) const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? done_ / elapsed : 0;
  const double eta = rate > 0 ? (total_ - done_) / rate : 0;
  return fmt::format("{} {}/{} [{:.0f}s elapsed, ETA {:.0f}s]{}{}", label_, done_, total_, elapsed, eta,
                     status.empty() ? "" : " ", status);
}

void Progress::advance(int64_t n, const std::string& status) {
  done_ += n;
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s", line(status).c_str());
    std::fflush(stderr);
  } else if (done_ >= next_log_ || done_ == total_) {
    log::info("{}", line(status));
    next_log_ = done_ + std::max<int64_t>(1, total_ / 10);
  }
}

void Progress::finish(const std::string& status) {
  if (tty_) std::fprintf(stderr, "\r\033[K");
  log::info("{}", line(status));
}

}  // namespace tessera
