#include "tessera/core/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>

namespace tessera::log {
namespace {

std::shared_ptr<spdlog::logger>& logger() {
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto l = std::make_shared<spdlog::logger>("tessera",
                                              std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    l->set_pattern("%^[%H:%M:%S %l]%$ %v");
    l->set_level(spdlog::level::info);
    return l;
  }();
  return instance;
}

spdlog::level::level_enum to_spdlog(Level level) {
  switch (level) {
    case Level::debug: return spdlog::level::debug;
    case Level::info: return spdlog::level::info;
    case Level::warn: return spdlog::level::warn;
    case Level::error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

void set_level(Level level) { logger()->set_level(to_spdlog(level)); }

FileSink::FileSink(const std::string& path) {
  auto sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(path, /*truncate=*/false);
  sink->set_pattern("[%Y-%m-%d %H:%M:%S %l] %v");
  logger()->sinks().push_back(sink);
  logger()->flush_on(spdlog::level::info);
  sink_ = sink;
}

FileSink::~FileSink() {
  auto& sinks = logger()->sinks();
  sinks.erase(std::remove(sinks.begin(), sinks.end(), std::static_pointer_cast<spdlog::sinks::sink>(sink_)), sinks.end());
}

void FileSink::record(Level level, const std::string& message) {
  auto sink = std::static_pointer_cast<spdlog::sinks::sink>(sink_);
  spdlog::details::log_msg msg(logger()->name(), to_spdlog(level), message);
  sink->log(msg);
  sink->flush();
}

void set_tag(const std::string& tag) {
  logger()->set_pattern("%^[%H:%M:%S %l]%$ " + tag + " %v");
}

void write(Level level, const std::string& message) { logger()->log(to_spdlog(level), message); }

}  // namespace tessera::log
