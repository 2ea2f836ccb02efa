// Graceful stop on SIGTERM / SIGINT for long jobs (generate, train-generator): the first signal sets
// a flag that the job polls between units of work (finish the unit, save, exit 130, resume later);
// a second signal ends the process at once, as SIGKILL would (what is saved stays safe).
#pragma once

namespace idsynth {

// The signal that asked the job to stop (0: none).
int stop_signal();

// Installs the handlers for its scope (when `install`) and restores the previous ones; clears the
// flag either way.
class StopSignals {
 public:
  explicit StopSignals(bool install);
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

 private:
  struct Saved;
  bool installed_;
  Saved* saved_ = nullptr;
};

}  // namespace idsynth
