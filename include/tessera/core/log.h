// The one logging header: spdlog stays behind it so call sites never include it.
#pragma once
#include <string>

#include <spdlog/fmt/fmt.h>

namespace tessera::log {

enum class Level { debug, info, warn, error };

void set_level(Level level);
// Also writes to a file (a run's train.log) while it lives; its sink goes with it, so a library call
// leaves the process's sinks as it found them.
class FileSink {
 public:
  explicit FileSink(const std::string& path);
  ~FileSink();
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;
  // To this file only: what the caller reports on the console itself (the error a run stops with).
  void record(Level level, const std::string& message);

 private:
  std::shared_ptr<void> sink_;
};
void set_tag(const std::string& tag);    // printed before every message, e.g. "[rank 1]" in data-parallel runs
void write(Level level, const std::string& message);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::debug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  write(Level::error, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace tessera::log
