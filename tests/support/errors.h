// The message of the idsynth::Error a call throws, for tests of error texts.
#pragma once

#include <functional>
#include <string>

#include "core/check.h"

namespace idsynth::test {

// what() of the idsynth::Error `f` throws; "<no error>" when it returns normally.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

}  // namespace idsynth::test
