// Errors that carry context: every check names the input and says what to do.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace tessera {

// One exception type for every user-facing failure; the CLI prints what() on one line.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
inline void append(std::ostringstream&) {}
template <typename T, typename... Rest>
void append(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append(os, rest...);
}
}  // namespace detail

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  std::ostringstream os;
  detail::append(os, args...);
  throw Error(os.str());
}

}  // namespace tessera

// TESSERA_CHECK(cond, "message parts", ...): a user error; throws tessera::Error with the parts joined,
// which should name the input and the fix.
// TESSERA_ASSERT(cond, ...): an internal invariant; the message carries file:line, since no user input
// can fix it.
#define TESSERA_ASSERT(cond, ...)                                                                           \
  do {                                                                                                       \
    if (!(cond)) ::tessera::fail("internal error at ", __FILE__, ":", __LINE__, " (", #cond, "): ", __VA_ARGS__); \
  } while (0)

#define TESSERA_CHECK(cond, ...)          \
  do {                                    \
    if (!(cond)) ::tessera::fail(__VA_ARGS__); \
  } while (0)
