// Errors for bad input: one line naming the file, the field, what was expected and what was found.
// IDSYNTH_CHECK is for input validation and stays on in release builds (never an assert).
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace idsynth {

// Every error idsynth reports about user input (configs, weights, images, benchmark files).
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
inline void format_into(std::ostringstream&) {}
template <typename T, typename... Rest>
void format_into(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  format_into(os, rest...);
}
}  // namespace detail

// Concatenates its arguments with operator<< (no format strings to get wrong).
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  detail::format_into(os, args...);
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

}  // namespace idsynth

// IDSYNTH_CHECK(cond, "file: field: expected ..., found ", x): throws idsynth::Error with the message.
#define IDSYNTH_CHECK(cond, ...)                 \
  do {                                           \
    if (!(cond)) ::idsynth::fail(__VA_ARGS__);   \
  } while (0)
