// CSV files as spreadsheets and pandas write them: a header line, then comma-separated fields; a field
// in double quotes may hold commas, doubled quotes ("") and line breaks; LF or CRLF; blank lines are
// skipped. The one CSV reader of the library (manifests, image lists).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tessera {

struct CsvTable {
  std::string path;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::vector<int64_t> lines;  // the file line each row starts on, for errors
  int column(const std::string& name) const;  // -1 when absent
};

// what names the file's role in errors ("slide manifest", "image list"). Errors: the file cannot be
// opened, has no header, or has an unterminated quoted field.
CsvTable read_csv(const std::string& path, const std::string& what);
// A field (or option) that must be exactly one integer: nothing when it is empty, has other
// characters around the number, or is out of range. Callers say what was expected where.
std::optional<int64_t> parse_integer(const std::string& text);

}  // namespace tessera
