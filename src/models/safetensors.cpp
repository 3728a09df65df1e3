#include "tessera/models/safetensors.h"

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/run_dir.h"

namespace tessera::models {
namespace {

struct DType {
  const char* name;
  c10::ScalarType type;
  int64_t bytes;
};
constexpr DType kDTypes[] = {
    {"F32", torch::kFloat32, 4}, {"F16", torch::kFloat16, 2}, {"BF16", torch::kBFloat16, 2},
    {"F64", torch::kFloat64, 8}, {"I64", torch::kInt64, 8},   {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},   {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DType* dtype_named(const std::string& name) {
  for (const auto& d : kDTypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

const DType& dtype_of(c10::ScalarType type, const std::string& tensor) {
  for (const auto& d : kDTypes) {
    if (d.type == type) return d;
  }
  fail("tensor '", tensor, "' has dtype ", type, ", which safetensors files here do not hold; cast it first");
}

// The largest header the reference implementation accepts.
constexpr uint64_t kMaxHeader = 100 * 1000 * 1000;

struct Entry {
  std::string name;
  const DType* dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

}  // namespace

StateDict read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in, "cannot open safetensors file '", path, "'");
  std::error_code ec;
  const uint64_t file_size = std::filesystem::file_size(path, ec);
  TESSERA_CHECK(!ec, "cannot read the size of '", path, "': ", ec.message());
  const auto bad = [&](const auto&... why) {
    fail("'", path, "' is not a valid safetensors file: ", why..., "; download or export it again");
  };
  if (file_size < 8) bad("it has ", file_size, " bytes, fewer than the 8-byte header length");
  unsigned char len_bytes[8];
  in.read(reinterpret_cast<char*>(len_bytes), 8);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > kMaxHeader) bad("its header claims ", header_len, " bytes (at most ", kMaxHeader, ")");
  if (header_len > file_size - 8) bad("its header claims ", header_len, " bytes but the file has ", file_size - 8, " after the length");
  std::string text(header_len, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_len));
  TESSERA_CHECK(in, "cannot read the header of '", path, "'");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    bad("its header is not JSON (", e.what(), ")");
  }
  if (!header.is_object()) bad("its header is not a JSON object");
  const uint64_t data_size = file_size - 8 - header_len;

  std::vector<Entry> entries;
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") continue;
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      bad("entry '", name, "' lacks dtype, shape or data_offsets");
    const auto& dt = v["dtype"];
    const DType* dtype = dt.is_string() ? dtype_named(dt.get<std::string>()) : nullptr;
    if (!dtype) bad("entry '", name, "' has dtype ", dt.dump(), " (supported: F32 F16 BF16 F64 I64 I32 I16 I8 U8 BOOL)");
    const auto& sh = v["shape"];
    const auto& off = v["data_offsets"];
    if (!sh.is_array() || sh.size() > 8) bad("entry '", name, "' has shape ", sh.dump(), " (a list of at most 8 sizes)");
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      bad("entry '", name, "' has data_offsets ", off.dump(), " (two non-negative integers)");
    Entry e{name, dtype, {}, off[0].get<uint64_t>(), off[1].get<uint64_t>()};
    if (e.begin > e.end || e.end > data_size)
      bad("entry '", name, "' has data_offsets [", e.begin, ", ", e.end, "] outside the ", data_size, " data bytes");
    // Bytes the shape needs, computed without overflow: any product beyond the file is already wrong.
    uint64_t bytes = static_cast<uint64_t>(dtype->bytes);
    for (const auto& s : sh) {
      if (!s.is_number_unsigned()) bad("entry '", name, "' has shape ", sh.dump(), " (sizes must be non-negative integers)");
      const uint64_t n = s.get<uint64_t>();
      if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || (n != 0 && bytes > data_size / n && bytes != 0))
        bad("entry '", name, "' has shape ", sh.dump(), ", larger than the file's ", data_size, " data bytes");
      bytes *= n;
      e.shape.push_back(static_cast<int64_t>(n));
    }
    if (e.end - e.begin != bytes)
      bad("entry '", name, "' spans ", e.end - e.begin, " bytes but ", dtype->name, " x ", sh.dump(), " needs ", bytes);
    entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < entries.size(); ++i) {
    if (entries[i].begin < entries[i - 1].end)
      bad("entries '", entries[i - 1].name, "' and '", entries[i].name, "' overlap");
  }

  StateDict out;
  for (const auto& e : entries) {
    auto t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype->type));
    in.seekg(static_cast<std::streamoff>(8 + header_len + e.begin));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(e.end - e.begin));
    TESSERA_CHECK(in, "cannot read entry '", e.name, "' of '", path, "'");
    out[e.name] = t;
  }
  return out;
}

void write_safetensors(const std::string& path, const StateDict& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::json header = nlohmann::json::object();
  std::vector<torch::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    TESSERA_CHECK(name != "__metadata__", "a tensor cannot be named __metadata__ in a safetensors file");
    const auto& dtype = dtype_of(tensor.scalar_type(), name);
    auto t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * dtype.bytes;
    header[name] = {{"dtype", dtype.name}, {"shape", t.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(t);
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned, as the reference writes
  std::string blob;
  blob.reserve(8 + text.size() + offset);
  for (int i = 0; i < 8; ++i) blob.push_back(static_cast<char>((static_cast<uint64_t>(text.size()) >> (8 * i)) & 0xff));
  blob += text;
  for (const auto& t : data) blob.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  write_file_atomic(path, blob);
}

}  // namespace tessera::models
