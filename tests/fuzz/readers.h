// What each fuzz harness feeds its input to, by harness name: the readers as the commands call them.
// Shared by the harnesses (harness.cpp) and by the suite's replay of every kept finding
// (tests/test_fuzz_regressions.cpp), so a fixed finding stays fixed in the normal build too.
#pragma once
#include <string>

namespace tessera::fuzz {

std::string read_bytes(const std::string& path);

// Feeds the file at path to harness `name`'s reader; a tessera::Error is the expected answer to bad bytes.
void read_as(const std::string& name, const std::string& path);

}  // namespace tessera::fuzz
