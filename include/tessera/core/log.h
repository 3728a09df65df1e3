// The one logging header: spdlog stays behind it so call sites never include it.
#pragma once
#include <string>

#include <spdlog/fmt/fmt.h>

namespace tessera::log {

enum class Level { debug, info, warn, error };

void set_level(Level level);
void set_file(const std::string& path);  // also write to this file (the run directory's log)
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
