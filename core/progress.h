// A progress bar for long work: count, rate, ETA. Drawn in place on a terminal (stderr); when
// stderr is not a TTY it stays quiet and only the final summary line is logged.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace idsynth {

class Progress {
 public:
  Progress(int64_t total, std::string label, std::string unit = "it");
  ~Progress();
  void advance(int64_t n = 1);
  // Extra text after the rate, e.g. "accepted 92%".
  void set_note(const std::string& note);
  void finish();  // logs "label: N unit in T s (R unit/s)"
  int64_t done() const { return done_.load(); }
  double elapsed_seconds() const;

  // "1h02m", "3m05s", "12s"
  static std::string format_duration(double seconds);

 private:
  void draw(bool force);

  int64_t total_;
  std::string label_;
  std::string unit_;
  std::string note_;
  std::atomic<int64_t> done_{0};
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  std::mutex mutex_;
  bool tty_;
  bool finished_ = false;
};

}  // namespace idsynth
