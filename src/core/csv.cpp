#include "tessera/core/csv.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "tessera/core/error.h"

namespace tessera {

int CsvTable::column(const std::string& name) const {
  const auto it = std::find(header.begin(), header.end(), name);
  return it == header.end() ? -1 : static_cast<int>(it - header.begin());
}

namespace {
// Manifests and image lists are read whole: far above what millions of rows need, far below what
// would exhaust memory. A field is a path, a label or an id: 64 KiB is 16 times PATH_MAX.
constexpr int64_t kMaxCsvBytes = int64_t{1} << 30;
constexpr size_t kMaxFieldBytes = size_t{1} << 16;
}  // namespace

CsvTable read_csv(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in, what, " '", path, "' cannot be opened; check the path");
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  TESSERA_CHECK(ec || bytes <= static_cast<uintmax_t>(kMaxCsvBytes), what, " '", path, "' is ", bytes,
                " bytes, more than the 1 GiB a table is read up to; split it");
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CsvTable table;
  table.path = path;
  std::vector<std::vector<std::string>> records;
  std::vector<int64_t> starts;
  std::vector<std::string> record;
  std::string field;
  bool quoted = false, record_has_data = false;
  int64_t line = 1, record_line = 1, quote_line = 0;
  const auto end_record = [&] {
    record.push_back(std::move(field));
    field.clear();
    if (record_has_data || record.size() > 1) {
      records.push_back(std::move(record));
      starts.push_back(record_line);
    }
    record.clear();
    record_has_data = false;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const char ch = text[i];
    TESSERA_CHECK(field.size() <= kMaxFieldBytes, path, ":", quoted ? quote_line : line, ": a field of more than ",
                  kMaxFieldBytes, " bytes", quoted ? " (a quote never closed?)" : "", "; check the file");
    if (quoted) {
      if (ch == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (ch == '"') {
        quoted = false;
      } else {
        if (ch == '\n') ++line;
        field += ch;
      }
      continue;
    }
    if (!record_has_data && record.empty() && field.empty()) record_line = line;
    if (ch == '"') {
      quoted = true;
      quote_line = line;
      record_has_data = true;
    } else if (ch == ',') {
      record.push_back(std::move(field));
      field.clear();
      record_has_data = true;
    } else if (ch == '\n') {
      end_record();
      ++line;
    } else if (ch != '\r') {
      field += ch;
      record_has_data = true;
    }
  }
  TESSERA_CHECK(!quoted, path, ":", quote_line, ": a quoted field is never closed; check the quotes");
  end_record();
  TESSERA_CHECK(!records.empty(), what, " '", path, "' is empty; it needs a header line");
  table.header = std::move(records.front());
  table.rows.assign(std::make_move_iterator(records.begin() + 1), std::make_move_iterator(records.end()));
  table.lines.assign(starts.begin() + 1, starts.end());
  return table;
}

std::optional<int64_t> parse_integer(const std::string& text) {
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used == 0 || used != text.size()) return std::nullopt;
  return value;
}

}  // namespace tessera
