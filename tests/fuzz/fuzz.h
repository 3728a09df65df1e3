// Shared by the libFuzzer harnesses (one per parser of files users are handed; docs/testing.md).
// The readers take paths, as users hand them files, so each input is written to a scratch file first.
// A tessera::Error (one clear message naming the file) is the expected answer to hostile bytes; any
// other exception escapes and libFuzzer reports it as a finding, as it reports crashes, sanitizer
// errors, leaks, hangs and allocations over -rss_limit_mb / -malloc_limit_mb.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "tessera/core/error.h"

namespace tessera::fuzz {

// The input as a file named with `suffix` (readers dispatch on extensions), one per process.
inline std::string scratch(const uint8_t* data, size_t size, const std::string& suffix) {
  const std::string path = "/tmp/tessera-fuzz-" + std::to_string(getpid()) + suffix;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

// Runs f; a tessera::Error is the clear error bad input should get.
template <typename F>
int clear_errors_only(F&& f) {
  try {
    f();
  } catch (const Error&) {
  }
  return 0;
}

}  // namespace tessera::fuzz
