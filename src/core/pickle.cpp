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

// What the unpickler would do with a pickle (a torch.save archive's data.pkl) that no check after it can undo:
// - depth: how deeply its containers nest (lists, dicts, tuples, objects and open MARKs on the
//   unpickler's stack at once). The unpickler builds any depth without recursion, but freeing a
//   10^6-deep value recurses once per level and overflows the stack; real files nest a few levels
//   (Python's own pickler stops near 1,000).
// - overlong: the largest string or bytes length an opcode declares beyond the pickle's end (0: none).
//   The unpickler reserves that many bytes before it reads them: 2.7 GB from a 1,374-byte file (a fuzz
//   finding, tests/fuzz/corpus/pickle/regression-oom-string-length).
// - underflow: an opcode takes more items than the stack holds (LibTorch 1.13's unpickler reads below
//   its stack: tests/fuzz/corpus/pickle/regression-segv-stack-underflow).
// - memo: the largest memo index stored (LONG_BINPUT); the unpickler grows its memo table to it, 68 GB
//   for an index of 2^32 (tests/fuzz/corpus/run/regression-oom-memo-index). Python numbers its memo
//   entries from 0, so no valid pickle stores an index beyond its own length.
// A malformed or unknown opcode ends the walk (the unpickler reports it).
struct PickleWalk {
  size_t depth = 0;
  uint64_t overlong = 0;
  bool underflow = false;
  uint64_t memo = 0;
};

PickleWalk walk_pickle(const std::string& p) {
  PickleWalk walk;
  std::vector<bool> stack;  // is each item a container
  std::vector<size_t> marks;
  size_t containers = 0;
  const auto push = [&](bool container) {
    stack.push_back(container);
    containers += container;
    walk.depth = std::max(walk.depth, containers + marks.size());
  };
  const auto pop = [&](size_t n) {
    if (n > stack.size()) walk.underflow = true;
    for (; n > 0 && !stack.empty(); --n) {
      containers -= stack.back();
      stack.pop_back();
    }
  };
  const auto pop_mark = [&]() {
    if (marks.empty()) return false;
    pop(stack.size() - std::min(marks.back(), stack.size()));
    marks.pop_back();
    return true;
  };
  const auto number = [&](size_t at, int bytes) -> uint64_t {  // little-endian; 0 when cut off by the end
    if (at > p.size() || p.size() - at < static_cast<size_t>(bytes)) return 0;
    uint64_t v = 0;
    for (int b = bytes - 1; b >= 0; --b) v = (v << 8) | static_cast<unsigned char>(p[at + b]);
    return v;
  };
  const auto length = [&](size_t at, int bytes) -> size_t {
    if (at > p.size() || p.size() - at < static_cast<size_t>(bytes)) return p.size() + 1;
    const uint64_t v = number(at, bytes);
    if (v > p.size() - at - bytes) {  // the unpickler would reserve it before noticing the end
      walk.overlong = std::max<uint64_t>(walk.overlong, v);
      return p.size() + 1;
    }
    return static_cast<size_t>(v);
  };
  size_t i = 0;
  while (i < p.size()) {
    const auto op = static_cast<unsigned char>(p[i++]);
    switch (op) {
      case '(': marks.push_back(stack.size()); walk.depth = std::max(walk.depth, containers + marks.size()); break;
      case ']': case '}': case 0x8f: push(true); break;             // EMPTY_LIST, EMPTY_DICT, EMPTY_SET
      case 't': case 'l': case 'd': case 0x91:                      // TUPLE, LIST, DICT, FROZENSET
        if (!pop_mark()) return walk;
        push(true);
        break;
      case 'u': case 'e': case 0x90: case '1':                      // SETITEMS, APPENDS, ADDITEMS, POP_MARK
        if (!pop_mark()) return walk;
        break;
      case 0x85: case 0x86: case 0x87: pop(op - 0x84); push(true); break;  // TUPLE1..3
      case 'R': case 0x81: pop(2); push(true); break;               // REDUCE, NEWOBJ: possibly a container
      case 0x92: pop(3); push(true); break;                         // NEWOBJ_EX
      case 'b': case 'a': case '0': pop(1); break;                  // BUILD, APPEND, POP
      case 's': pop(2); break;                                      // SETITEM
      case '2': if (stack.empty()) return walk; push(stack.back()); break;  // DUP
      case 'Q': pop(1); push(false); break;                         // BINPERSID
      case '.': return walk;                 // STOP
      case ')': case 'N': case 0x88: case 0x89: push(false); break;
      case 0x94: break;                                             // MEMOIZE
      case 0x80: i += 1; break;                                     // PROTO
      case 0x95: i += 8; break;                                     // FRAME
      case 'q': case 0x82: i += 1; break;                           // BINPUT, EXT1
      case 'r':                                                     // LONG_BINPUT
        walk.memo = std::max(walk.memo, number(i, 4));
        i += 4;
        break;
      case 0x84: i += 4; break;                                     // EXT4
      case 0x83: i += 2; push(false); break;                        // EXT2
      case 'h': case 'K': i += 1; push(false); break;               // BINGET, BININT1
      case 'j': case 'J': i += 4; push(false); break;               // LONG_BINGET, BININT
      case 'M': i += 2; push(false); break;                         // BININT2
      case 'G': i += 8; push(false); break;                         // BINFLOAT
      case 'U': case 'C': case 0x8c: case 0x8a:                     // 1-byte lengths
        i += 1 + length(i, 1);
        push(false);
        break;
      case 'T': case 'B': case 'X': case 0x8b:                      // 4-byte lengths
        i += 4 + length(i, 4);
        push(false);
        break;
      case 0x8d: case 0x8e: case 0x96:                              // 8-byte lengths
        i += 8 + length(i, 8);
        push(false);
        break;
      case 'c': case 'i': {                                         // GLOBAL, INST: two lines
        const size_t a = p.find('\n', i), b = a == std::string::npos ? a : p.find('\n', a + 1);
        if (b == std::string::npos) return walk;
        i = b + 1;
        if (op == 'i' && !pop_mark()) return walk;
        push(op == 'i');
        break;
      }
      case 'I': case 'L': case 'F': case 'S': case 'V': case 'P': case 'g': case 'p': {  // one line
        const size_t a = p.find('\n', i);
        if (a == std::string::npos) return walk;
        i = a + 1;
        if (op != 'p') push(false);
        break;
      }
      default: return walk;
    }
  }
  return walk;
}

constexpr size_t kMaxNesting = 1000;

void check_walk(const std::string& bytes, const std::string& path) {
  const auto walk = walk_pickle(bytes);
  TESSERA_CHECK(walk.overlong == 0, "'", path, "' declares a string of ", walk.overlong,
                " bytes past the end of its pickle; the file is truncated, damaged or hostile");
  TESSERA_CHECK(!walk.underflow, "'", path, "' is not a valid pickle (an instruction takes more values than it was "
                "given); the file is damaged or hostile");
  TESSERA_CHECK(walk.memo <= bytes.size(), "'", path, "' stores a value at memo index ", walk.memo,
                ", beyond anything its ", bytes.size(), "-byte pickle can number; the file is damaged or hostile");
  TESSERA_CHECK(walk.depth <= kMaxNesting, "'", path, "' nests its values ", walk.depth, " deep (at most ", kMaxNesting,
                " are read: real checkpoints and state dicts nest a few levels); the file is damaged or hostile");
}

// LibTorch 1.13's unpickler gives a tensor the sizes, strides and offset the pickle declares without
// checking them against its storage: a 200-byte file can declare a 10^12-element view of 4 bytes, and
// reading it reads past the storage. Every tensor is checked here before anyone reads it.
void check_tensor(const at::Tensor& t, const std::string& path) {
  const auto bad = [&](const auto&... why) {
    fail("'", path, "' holds a tensor of shape ", t.sizes(), " ", why..., "; the file is damaged or hostile");
  };
  if (t.storage_offset() < 0) bad("at a negative storage offset");
  int64_t last = 0;  // highest element index the view reaches
  bool empty = false;
  for (int64_t d = 0; d < t.dim(); ++d) {
    const int64_t size = t.size(d), stride = t.stride(d);
    if (size < 0 || stride < 0) bad("with a negative size or stride");
    if (size == 0) empty = true;
    int64_t reach = 0;
    if (size > 0 && (__builtin_mul_overflow(size - 1, stride, &reach) || __builtin_add_overflow(last, reach, &last)))
      bad("whose extent overflows");
  }
  if (empty) return;
  int64_t end = 0, bytes = 0;
  if (__builtin_add_overflow(t.storage_offset(), last, &end) || __builtin_add_overflow(end, int64_t{1}, &end) ||
      __builtin_mul_overflow(end, static_cast<int64_t>(t.element_size()), &bytes) ||
      bytes > static_cast<int64_t>(t.storage().nbytes()))
    bad("that needs more bytes than its storage's ", t.storage().nbytes());
}

void check_tensors(const c10::IValue& v, const std::string& path) {
  if (v.isTensor()) {
    check_tensor(v.toTensor(), path);
  } else if (v.isGenericDict()) {
    for (const auto& item : v.toGenericDict()) {
      check_tensors(item.key(), path);
      check_tensors(item.value(), path);
    }
  } else if (v.isList()) {
    for (const auto& item : v.toListRef()) check_tensors(item, path);
  } else if (v.isTuple()) {
    for (const auto& item : v.toTupleRef().elements()) check_tensors(item, path);
  }
}

}  // namespace

bool is_zip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[2] = {};
  in.read(magic, 2);
  return in && magic[0] == 'P' && magic[1] == 'K';
}

c10::IValue read_pickle(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in, "cannot open '", path, "'; check the path");
  try {
    // torch.save's pre-1.6 format (pickles, then raw storages) is not read: LibTorch's torch::pickle_load
    // reads only zip archives, and handed anything else it overflowed its buffer inside its zip reader
    // (a fuzz finding, tests/fuzz/corpus/run/regression-overflow-miniz-not-a-zip).
    TESSERA_CHECK(is_zip(path), "'", path, "' is not a torch.save zip archive (torch.save's pre-1.6 format, or not a "
                  "torch.save file at all); re-save it with torch.save from PyTorch >= 1.6");
    caffe2::serialize::PyTorchStreamReader archive(path);
    auto [data, size] = archive.getRecord("data.pkl");
    const std::string raw(static_cast<const char*>(data.get()), size);
    check_walk(raw, path);
    const std::string pickle = rewrite_ordered_dicts(raw);
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
    auto value = unpickler.parse_ivalue();
    check_tensors(value, path);
    return value;
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
