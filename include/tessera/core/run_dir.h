// A run directory: resolved config, JSONL metrics log, checkpoints and pictures of one run.
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <string>

namespace tessera {

class RunDir {
 public:
  explicit RunDir(std::string path);  // creates the directory if needed
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const;
  void write_text(const std::string& name, const std::string& text) const;  // atomic
  void append_metrics(const nlohmann::json& record) const;                   // one line in metrics.jsonl
  void append_line(const std::string& name, const nlohmann::json& record) const;  // one line in <name> (JSON lines)

 private:
  std::string path_;
};

// Writes text to path through a temporary file and a rename, so readers never see half a file.
void write_file_atomic(const std::string& path, const std::string& text);

}  // namespace tessera
