// Levelled logging to stderr. The macros skip argument evaluation below the threshold, so a DEBUG
// line that formats a tensor costs nothing at INFO.
#pragma once

#include <chrono>
#include <string>

#include "core/check.h"

namespace idsynth::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3, quiet = 4 };

Level threshold();
void set_threshold(Level level);
// Parses "debug|info|warn|error|quiet"; throws idsynth::Error naming the value otherwise.
Level parse_level(const std::string& name);
void set_timestamps(bool on);
void write(Level level, const char* func, const std::string& message);

inline bool enabled(Level level) { return level >= threshold(); }

// Measures a stage for "... completed, taking N.NN s" lines.
class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

}  // namespace idsynth::log

#define IDSYNTH_LOG_AT(level, ...)                                                   \
  do {                                                                               \
    if (::idsynth::log::enabled(level))                                              \
      ::idsynth::log::write(level, __func__, ::idsynth::cat(__VA_ARGS__));           \
  } while (0)
#define LOG_DBG(...) IDSYNTH_LOG_AT(::idsynth::log::Level::debug, __VA_ARGS__)
#define LOG_INF(...) IDSYNTH_LOG_AT(::idsynth::log::Level::info, __VA_ARGS__)
#define LOG_WRN(...) IDSYNTH_LOG_AT(::idsynth::log::Level::warn, __VA_ARGS__)
#define LOG_ERR(...) IDSYNTH_LOG_AT(::idsynth::log::Level::error, __VA_ARGS__)
