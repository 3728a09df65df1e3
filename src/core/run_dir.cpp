#include "tessera/core/run_dir.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tessera/core/error.h"

namespace tessera {

RunDir::RunDir(std::string path) : path_(std::move(path)) {
  std::error_code ec;
  std::filesystem::create_directories(path_, ec);
  TESSERA_CHECK(!ec, "cannot create run directory '", path_, "': ", ec.message());
}

std::string RunDir::file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }

void RunDir::write_text(const std::string& name, const std::string& text) const { write_file_atomic(file(name), text); }

void RunDir::append_metrics(const nlohmann::json& record) const { append_line("metrics.jsonl", record); }

void RunDir::append_line(const std::string& name, const nlohmann::json& record) const {
  std::ofstream out(file(name), std::ios::app);
  TESSERA_CHECK(out, "cannot append to '", file(name), "'");
  out << record.dump() << "\n";
}

void write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    TESSERA_CHECK(out, "cannot write '", tmp, "'; check the directory exists and is writable");
    out << text;
    out.flush();
    TESSERA_CHECK(out, "writing '", tmp, "' failed (disk full?)");
  }
  TESSERA_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, "cannot move '", tmp, "' onto '", path, "'");
}

}  // namespace tessera
