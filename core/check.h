// Errors for bad input: one line naming the file, the field, what was expected and what was found.
// IDSYNTH_CHECK is for input validation and stays on in release builds (never an assert).
#pragma once

#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>

namespace idsynth {

// Every error idsynth reports about user input (configs, weights, images, benchmark files). what() is
// the one line for the user; an IDSYNTH_CHECK failure also carries the failed condition and where it
// is in the source, which the CLI prints at --log-level debug.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, const char* condition = nullptr, const char* file = nullptr, int line = 0)
      : std::runtime_error(what), condition_(condition), file_(file), line_(line) {}
  const char* condition() const { return condition_; }  // nullptr when not from IDSYNTH_CHECK
  const char* file() const { return file_; }
  int line() const { return line_; }

 private:
  const char* condition_;
  const char* file_;
  int line_;
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

// One number through a printf conversion ("%.4f", "%.6g"): for tables and fixed-width logs.
inline std::string format_number(const char* spec, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, spec, v);
  return buf;
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

namespace detail {
template <typename... Args>
[[noreturn]] void fail_check(const char* condition, const char* file, int line, const Args&... args) {
  throw Error(cat(args...), condition, file, line);
}
}  // namespace detail

}  // namespace idsynth

// IDSYNTH_CHECK(cond, "file: field: expected ..., found ", x): throws idsynth::Error with the message.
// The condition's text, file and line travel with the error (Error::condition, file, line).
#define IDSYNTH_CHECK(cond, ...)                                                      \
  do {                                                                                \
    if (!(cond)) ::idsynth::detail::fail_check(#cond, __FILE__, __LINE__, __VA_ARGS__); \
  } while (0)
