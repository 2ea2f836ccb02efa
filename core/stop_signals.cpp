#include "core/stop_signals.h"

#include <csignal>

namespace idsynth {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal != 0) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
    return;
  }
  g_stop_signal = sig;
}

}  // namespace

int stop_signal() { return static_cast<int>(g_stop_signal); }

struct StopSignals::Saved {
  struct sigaction term {}, interrupt {};
};

StopSignals::StopSignals(bool install) : installed_(install) {
  g_stop_signal = 0;
  if (!installed_) return;
  saved_ = new Saved;
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, &saved_->term);
  sigaction(SIGINT, &sa, &saved_->interrupt);
}

StopSignals::~StopSignals() {
  if (!installed_) return;
  sigaction(SIGTERM, &saved_->term, nullptr);
  sigaction(SIGINT, &saved_->interrupt, nullptr);
  delete saved_;
}

}  // namespace idsynth
