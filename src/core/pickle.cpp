#include "tessera/core/pickle.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/unpickler.h>
#include <torch/serialize.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <tuple>

#include "tessera/core/error.h"

namespace tessera {

namespace {

// LibTorch 1.13's unpickler cannot read what torch.save writes for model.state_dict() (pytorch#37213,
// fixed upstream only in 2.6): it turns every collections.OrderedDict into None, and cannot apply the
// `_metadata` attribute Python sets on it with BUILD. This walks the pickle's opcodes, tracking where
// each stack item was built, and rewrites (a) every OrderedDict() construction into
// torch.jit._pickle.restore_type_tag({}, "Dict[str, Tensor]"), which this unpickler knows and which
// yields an empty dict, and (b) cuts every BUILD applied to a dict together with its state argument
// (the attribute only records module versions, which loading weights does not need), and (c) turns
// SETITEM, which it lacks (Python writes it for one-entry dicts), into MARK key value SETITEMS.
// Returns the input unchanged on anything it does not expect.
std::string rewrite_ordered_dicts(const std::string& p) {
  constexpr size_t none = std::string::npos;
  struct Item {
    size_t start;
    bool is_dict = false;
    bool is_ordered_dict_class = false;
  };
  std::vector<Item> stack;
  std::vector<size_t> marks;
  std::vector<size_t> dict_reduces;  // positions of the EMPTY_TUPLE argument of OrderedDict()
  std::vector<size_t> dict_globals;  // positions of GLOBAL collections.OrderedDict
  std::set<size_t> ordered_dict_memo;
  std::vector<std::pair<size_t, size_t>> cuts;
  std::vector<std::pair<size_t, size_t>> setitems;  // (key start, SETITEM position)
  // An argument that runs past the end (a truncated or hostile file) reads as a length that ends the
  // walk; the pickle is then returned unchanged and the unpickler reports it.
  const auto u32 = [&](size_t at) {
    if (at > p.size() || p.size() - at < 4) return p.size() + 1;
    uint32_t v;
    std::memcpy(&v, p.data() + at, 4);
    return static_cast<size_t>(v);
  };
  size_t i = 0;
  while (i < p.size()) {
    const size_t pos = i;
    const auto op = static_cast<unsigned char>(p[i++]);
    const auto push = [&](bool is_dict = false) { stack.push_back({pos, is_dict}); };
    switch (op) {
      case 0x80: i += 1; break;                        // PROTO
      case 0x95: i += 8; break;                        // FRAME
      case 0x94: break;                                // MEMOIZE
      case 'q': case 'r': {                            // BINPUT, LONG_BINPUT
        const size_t id = op == 'q' ? static_cast<unsigned char>(p[i]) : u32(i);
        i += op == 'q' ? 1 : 4;
        if (!stack.empty() && stack.back().is_ordered_dict_class) ordered_dict_memo.insert(id);
        break;
      }
      case 'h': case 'j': {                            // BINGET, LONG_BINGET
        const size_t id = op == 'h' ? static_cast<unsigned char>(p[i]) : u32(i);
        i += op == 'h' ? 1 : 4;
        push();
        stack.back().is_ordered_dict_class = ordered_dict_memo.count(id) > 0;
        break;
      }
      case 'c': {                                      // GLOBAL module\nname\n
        const size_t a = p.find('\n', i), b = a == none ? a : p.find('\n', a + 1);
        if (b == none) return p;
        const bool ordered = p.compare(i, b - i, "collections\nOrderedDict") == 0;
        if (ordered) dict_globals.push_back(pos);
        i = b + 1;
        push();
        stack.back().is_ordered_dict_class = ordered;
        break;
      }
      case ')': case ']': case 'N': case 0x88: case 0x89: push(); break;
      case '}': push(true); break;
      case '(': marks.push_back(stack.size()); break;
      case 't': case 'l': case 'd': {                  // TUPLE, LIST, DICT
        if (marks.empty() || marks.back() > stack.size()) return p;
        const size_t start = marks.back() < stack.size() ? stack[marks.back()].start : pos;
        stack.resize(marks.back());
        marks.pop_back();
        stack.push_back({std::min(start, pos), op == 'd'});
        break;
      }
      case 0x85: case 0x86: case 0x87: {               // TUPLE1..3
        const size_t n = op - 0x84;
        if (stack.size() < n) return p;
        const size_t start = stack[stack.size() - n].start;
        stack.resize(stack.size() - n);
        stack.push_back({start});
        break;
      }
      case 'R': case 0x81: {                           // REDUCE, NEWOBJ
        if (stack.size() < 2) return p;
        const Item callable = stack[stack.size() - 2];
        const Item args = stack.back();
        stack.resize(stack.size() - 2);
        stack.push_back({callable.start, callable.is_ordered_dict_class});
        if (callable.is_ordered_dict_class) {
          if (op != 'R' || args.start != pos - 1 || p[pos - 1] != ')') return p;  // only OrderedDict()
          dict_reduces.push_back(pos - 1);
        }
        break;
      }
      case 'b': {                                      // BUILD
        if (stack.size() < 2) return p;
        const Item state = stack.back();
        stack.pop_back();
        if (stack.back().is_dict) cuts.emplace_back(state.start, i);
        break;
      }
      case 'Q': if (stack.empty()) return p; stack.back() = {stack.back().start}; break;  // BINPERSID
      case 'X': case 'T': case 'B': i += 4 + u32(i); push(); break;  // BINUNICODE, BINSTRING, BINBYTES
      case 0x8c: case 'U': case 'C': i += 1 + static_cast<unsigned char>(p[i]); push(); break;
      case 'J': i += 4; push(); break;
      case 'K': i += 1; push(); break;
      case 'M': i += 2; push(); break;
      case 'G': i += 8; push(); break;
      case 0x8a: i += 1 + static_cast<unsigned char>(p[i]); push(); break;  // LONG1
      case 's': {                                      // SETITEM (Python writes it for one-entry dicts)
        if (stack.size() < 3) return p;
        setitems.emplace_back(stack[stack.size() - 2].start, pos);
        stack.resize(stack.size() - 2);
        break;
      }
      case 'u': case 'e': {                            // SETITEMS, APPENDS
        if (marks.empty() || marks.back() == 0 || marks.back() > stack.size()) return p;
        stack.resize(marks.back());
        marks.pop_back();
        break;
      }
      case 'a': if (stack.size() < 2) return p; stack.pop_back(); break;  // APPEND
      case '0': if (stack.empty()) return p; stack.pop_back(); break;      // POP
      case '.': i = p.size(); break;                                        // STOP
      default: return p;
    }
  }
  if (i > p.size() || (cuts.empty() && dict_reduces.empty() && setitems.empty())) return p;
  static const std::string kGlobal = "ctorch.jit._pickle\nrestore_type_tag\n";
  static const std::string kType = "Dict[str, Tensor]";
  // MARK EMPTY_DICT BINUNICODE(type) TUPLE: the argument tuple ({}, type).
  std::string args = "(}X";
  for (int b = 0; b < 4; ++b) args.push_back(static_cast<char>((kType.size() >> (8 * b)) & 0xff));
  args += kType + "t";
  const size_t global_length = std::string("ccollections\nOrderedDict\n").size();
  // Edits in file order: replacements, and cuts (which may contain some of them).
  std::vector<std::tuple<size_t, size_t, std::string>> edits;
  for (size_t g : dict_globals) edits.emplace_back(g, g + global_length, kGlobal);
  for (size_t r : dict_reduces) edits.emplace_back(r, r + 1, args);
  for (const auto& [begin, end] : cuts) edits.emplace_back(begin, end, "");
  // SETITEM, which this unpickler lacks, becomes MARK key value SETITEMS.
  for (const auto& [key, op] : setitems) {
    edits.emplace_back(key, key, "(");
    edits.emplace_back(op, op + 1, "u");
  }
  std::sort(edits.begin(), edits.end(), [](const auto& a, const auto& b) {
    return std::get<0>(a) != std::get<0>(b) ? std::get<0>(a) < std::get<0>(b) : std::get<1>(a) > std::get<1>(b);
  });
  std::string out;
  size_t from = 0;
  for (const auto& [begin, end, replacement] : edits) {
    if (begin < from) continue;  // inside an earlier cut
    out.append(p, from, begin - from);
    out.append(replacement);
    from = end;
  }
  out.append(p, from, none);
  return out;
}

bool is_zip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[2] = {};
  in.read(magic, 2);
  return in && magic[0] == 'P' && magic[1] == 'K';
}

}  // namespace

c10::IValue read_pickle(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in, "cannot open '", path, "'; check the path");
  try {
    if (!is_zip(path)) {  // legacy (pre-1.6) format: LibTorch's own loader
      std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      TESSERA_CHECK(!bytes.empty(), "'", path, "' is empty");
      return torch::pickle_load(bytes);
    }
    caffe2::serialize::PyTorchStreamReader archive(path);
    auto [data, size] = archive.getRecord("data.pkl");
    const std::string pickle = rewrite_ordered_dicts(std::string(static_cast<const char*>(data.get()), size));
    size_t offset = 0;
    torch::jit::Unpickler unpickler(
        [&](char* buffer, size_t length) {
          const size_t n = std::min(length, pickle.size() - offset);
          std::memcpy(buffer, pickle.data() + offset, n);
          offset += n;
          return n;
        },
        nullptr, nullptr, [&](const std::string& name) { return std::get<0>(archive.getRecord("data/" + name)); },
        at::Device(at::kCPU));  // files saved on a GPU tag their storages cuda:0; everything loads to the CPU
    unpickler.set_version(archive.version());
    return unpickler.parse_ivalue();
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    fail("'", path, "' is not a readable torch.save file (", std::string(e.what_without_backtrace()).substr(0, 200),
         "); save it with torch.save from PyTorch >= 1.6");
  } catch (const std::exception& e) {  // LibTorch's type parser throws its own errors for a malformed type tag
    fail("'", path, "' is not a readable torch.save file (", std::string(e.what()).substr(0, 200),
         "); save it with torch.save from PyTorch >= 1.6");
  }
}

}  // namespace tessera
