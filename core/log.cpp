#include "core/log.h"

#include <atomic>
#include <cstdio>
#include <ctime>
#include <mutex>

namespace idsynth::log {
namespace {
std::atomic<int> g_threshold{static_cast<int>(Level::info)};
std::atomic<bool> g_timestamps{false};
std::mutex g_mutex;

const char* level_tag(Level level) {
  switch (level) {
    case Level::debug: return "D";
    case Level::info: return "I";
    case Level::warn: return "W";
    case Level::error: return "E";
    default: return "?";
  }
}
}  // namespace

Level threshold() { return static_cast<Level>(g_threshold.load()); }
void set_threshold(Level level) { g_threshold = static_cast<int>(level); }
void set_timestamps(bool on) { g_timestamps = on; }

Level parse_level(const std::string& name) {
  if (name == "debug") return Level::debug;
  if (name == "info") return Level::info;
  if (name == "warn") return Level::warn;
  if (name == "error") return Level::error;
  if (name == "quiet") return Level::quiet;
  fail("--log-level: expected one of debug, info, warn, error, quiet; found '", name, "'");
}

void write(Level level, const char* func, const std::string& message) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_timestamps) {
    std::time_t now = std::time(nullptr);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%H:%M:%S ", std::localtime(&now));
    std::fputs(stamp, stderr);
  }
  std::fprintf(stderr, "%s %s: %s\n", level_tag(level), func, message.c_str());
  std::fflush(stderr);
}

}  // namespace idsynth::log
