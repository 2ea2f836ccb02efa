#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

#include "core/check.h"
#include "core/log.h"

namespace idsynth {

Progress::Progress(int64_t total, std::string label, std::string unit)
    : total_(total), label_(std::move(label)), unit_(std::move(unit)), start_(std::chrono::steady_clock::now()),
      last_draw_(start_), tty_(::isatty(STDERR_FILENO) == 1 && log::enabled(log::Level::info)) {}

Progress::~Progress() {
  if (!finished_ && tty_) std::fputc('\n', stderr);
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::format_duration(double s) {
  if (!(s >= 0) || s > 1e7) return "--";
  const auto total = static_cast<int64_t>(s + 0.5);
  char buf[32];
  if (total >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", static_cast<long>(total / 3600), static_cast<long>(total % 3600 / 60));
  else if (total >= 60) std::snprintf(buf, sizeof buf, "%ldm%02lds", static_cast<long>(total / 60), static_cast<long>(total % 60));
  else std::snprintf(buf, sizeof buf, "%lds", static_cast<long>(total));
  return buf;
}

void Progress::advance(int64_t n) {
  done_ += n;
  if (tty_ || log::enabled(log::Level::info)) draw(false);
}

void Progress::set_note(const std::string& note) {
  std::lock_guard<std::mutex> lock(mutex_);
  note_ = note;
}

void Progress::draw(bool force) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto now = std::chrono::steady_clock::now();
  // A terminal gets a redrawn bar; logs and pipes (a Slurm job's output, a script's) a line every 30 s.
  const auto interval = tty_ ? std::chrono::milliseconds(200) : std::chrono::milliseconds(30000);
  if (!force && now - last_draw_ < interval) return;
  last_draw_ = now;
  const int64_t done = done_.load();
  const double elapsed = elapsed_seconds();
  const double rate = elapsed > 0 ? static_cast<double>(done) / elapsed : 0.0;
  const double eta = rate > 0 ? static_cast<double>(total_ - done) / rate : -1.0;
  if (!tty_) {
    // Tagged with the label, not this function's name ("I generate: 40/100 images ...").
    log::write(log::Level::info, label_.c_str(),
               cat(done, "/", total_, " ", unit_, ", ", format_number("%.2f", rate), " ", unit_, "/s, ETA ", format_duration(eta),
                   note_.empty() ? "" : ", ", note_));
    return;
  }
  constexpr int kWidth = 24;
  const int filled = total_ > 0 ? static_cast<int>(kWidth * std::min<int64_t>(done, total_) / total_) : 0;
  std::string bar(static_cast<size_t>(filled), '=');
  bar.resize(kWidth, ' ');
  std::fprintf(stderr, "\r%s %ld/%ld [%s] %.2f %s/s ETA %s %s\x1b[K", label_.c_str(), static_cast<long>(done),
               static_cast<long>(total_), bar.c_str(), rate, unit_.c_str(), format_duration(eta).c_str(), note_.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (finished_) return;
  if (tty_) {
    draw(true);
    std::fputc('\n', stderr);
  }
  finished_ = true;
  const double elapsed = elapsed_seconds();
  if (log::enabled(log::Level::info))
    log::write(log::Level::info, label_.c_str(),
               cat(done_.load(), " ", unit_, " in ", Progress::format_duration(elapsed), " (",
                   elapsed > 0 ? static_cast<double>(done_.load()) / elapsed : 0.0, " ", unit_, "/s)", note_.empty() ? "" : ", ", note_));
}

}  // namespace idsynth
