#include "tessera/core/npy.h"

#include <cctype>
#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <regex>

#include "tessera/core/error.h"
#include "tessera/core/run_dir.h"

namespace tessera {
namespace {

struct Kind {
  const char* descr;
  c10::ScalarType type;
};
constexpr Kind kKinds[] = {{"<f4", torch::kFloat32}, {"<f8", torch::kFloat64}, {"<i8", torch::kInt64},
                           {"<i4", torch::kInt32},   {"|u1", torch::kUInt8}};

// Parses one .npy held in memory; origin names it in errors.
torch::Tensor parse_npy(const std::string& bytes, const std::string& origin) {
  const auto bad = [&](const auto&... why) { fail("'", origin, "' is not a valid .npy array: ", why...); };
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) bad("no NumPy magic");
  const int major = static_cast<unsigned char>(bytes[6]);
  size_t header_len = 0, start = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
    start = 10;
  } else if (major == 2 || major == 3) {
    if (bytes.size() < 12) bad("truncated header");
    for (int i = 3; i >= 0; --i) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + i]);
    start = 12;
  } else {
    bad("format version ", major);
  }
  if (header_len > bytes.size() - start) bad("the header runs past the end");
  // NumPy writes a few hundred bytes (and reads at most 10,000 by default); the regexes below recurse per character.
  if (header_len > 65536) bad("a header of ", header_len, " bytes (at most 65,536)");
  const std::string header = bytes.substr(start, header_len);
  std::smatch m;
  if (!std::regex_search(header, m, std::regex(R"('descr':\s*'([^']+)')"))) bad("no descr in the header");
  const std::string descr = m[1];
  const Kind* kind = nullptr;
  for (const auto& k : kKinds) {
    if (descr == k.descr || (descr == "<u1" && std::string(k.descr) == "|u1")) kind = &k;
  }
  if (!kind) bad("dtype ", descr, " (supported: <f4 <f8 <i8 <i4 |u1)");
  if (std::regex_search(header, std::regex(R"('fortran_order':\s*True)"))) bad("Fortran order");
  if (!std::regex_search(header, m, std::regex(R"('shape':\s*\(([^)]*)\))"))) bad("no shape in the header");
  std::vector<int64_t> shape;
  const std::string dims = m[1];
  // Non-negative integers of at most 18 digits: '-1' is not read as 1, nor 10^30 as an overflow.
  size_t digits = 0;
  for (const char ch : dims) {
    digits = std::isdigit(static_cast<unsigned char>(ch)) ? digits + 1 : 0;
    if (digits > 18 || !(digits > 0 || ch == ',' || ch == ' ')) bad("shape (", dims, ") is not a tuple of non-negative integers");
  }
  const std::regex number(R"(\d+)");
  const size_t data = start + header_len;
  const size_t element = c10::elementSize(kind->type);
  size_t available = (bytes.size() - data) / element, count = 1;
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number); it != std::sregex_iterator(); ++it) {
    const auto n = std::stoull(it->str());
    if (n != 0 && count > available / n) bad("shape (", dims, ") needs more than the file's ", bytes.size() - data, " data bytes");
    count *= n;
    shape.push_back(static_cast<int64_t>(n));
  }
  if (count * element != bytes.size() - data) bad("shape (", dims, ") needs ", count * element, " data bytes, the file has ",
                                                  bytes.size() - data);
  auto t = torch::empty(shape, torch::TensorOptions().dtype(kind->type));
  if (count > 0) std::memcpy(t.data_ptr(), bytes.data() + data, count * element);  // an empty array has no data pointer
  return t;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in, "cannot open '", path, "'");
  return {std::istreambuf_iterator<char>(in), {}};
}

uint32_t le32(const std::string& b, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}
uint16_t le16(const std::string& b, size_t at) {
  return static_cast<uint16_t>(static_cast<unsigned char>(b[at]) | (static_cast<unsigned char>(b[at + 1]) << 8));
}

}  // namespace

void write_npy(const std::string& path, const torch::Tensor& tensor) {
  const auto t = tensor.detach().to(torch::kCPU).contiguous();
  const Kind* kind = nullptr;
  for (const auto& k : kKinds) {
    if (k.type == t.scalar_type()) kind = &k;
  }
  TESSERA_CHECK(kind, "write_npy: dtype ", t.scalar_type(), " is not written; cast to float32 first");
  std::string shape;
  for (int64_t d = 0; d < t.dim(); ++d) shape += std::to_string(t.size(d)) + (t.dim() == 1 || d + 1 < t.dim() ? ", " : "");
  std::string header = std::string("{'descr': '") + kind->descr + "', 'fortran_order': False, 'shape': (" + shape + "), }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string bytes("\x93NUMPY\x01\x00", 8);
  bytes.push_back(static_cast<char>(header.size() & 0xff));
  bytes.push_back(static_cast<char>(header.size() >> 8));
  bytes += header;
  bytes.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  write_file_atomic(path, bytes);
}

torch::Tensor read_npy(const std::string& path) { return parse_npy(read_all(path), path); }

std::map<std::string, torch::Tensor> read_npz(const std::string& path) {
  const auto b = read_all(path);
  std::map<std::string, torch::Tensor> out;
  size_t at = 0;
  // Local file headers one after another (np.savez writes sizes in them, uncompressed).
  while (at + 30 <= b.size() && le32(b, at) == 0x04034b50) {
    const auto method = le16(b, at + 8);
    const auto flags = le16(b, at + 6);
    uint64_t size = le32(b, at + 18);
    const auto name_len = le16(b, at + 26), extra_len = le16(b, at + 28);
    TESSERA_CHECK(at + 30 + name_len + extra_len <= b.size(), "'", path, "' is a truncated .npz archive");
    const std::string name = b.substr(at + 30, name_len);
    TESSERA_CHECK(method == 0 && !(flags & 0x8), "'", path, "' member '", name,
                  "' is compressed or streamed; write it with np.savez (not savez_compressed)");
    if (size == 0xffffffff) {  // zip64: the sizes are in the extra field
      const size_t extra = at + 30 + name_len;
      TESSERA_CHECK(extra_len >= 20 && le16(b, extra) == 1, "'", path, "' member '", name, "' has a damaged zip64 field");
      size = le32(b, extra + 12) | (static_cast<uint64_t>(le32(b, extra + 16)) << 32);
    }
    const size_t data = at + 30 + name_len + extra_len;
    TESSERA_CHECK(size <= b.size() - data, "'", path, "' member '", name, "' runs past the end of the archive");
    const std::string key = name.size() > 4 && name.substr(name.size() - 4) == ".npy" ? name.substr(0, name.size() - 4) : name;
    out[key] = parse_npy(b.substr(data, size), path + ":" + name);
    at = data + size;
  }
  TESSERA_CHECK(!out.empty(), "'", path, "' holds no arrays (is it an .npz archive?)");
  return out;
}

}  // namespace tessera
