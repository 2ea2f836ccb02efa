// Locating ../shared/goldens (or $IDSYNTH_GOLDENS) for parity tests.
// Without them a test skips with one line saying why; with IDSYNTH_REQUIRE_GOLDENS=1 (set by
// .ci/run) a missing golden is a failure, so CI always runs every parity test.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "tests/support/process.h"

namespace idsynth::test {

// The goldens root: $IDSYNTH_GOLDENS, else <source>/../shared/goldens. Empty when absent.
std::string goldens_root();
// Path of a file or folder inside the goldens; empty if it does not exist.
std::string golden_path(const std::string& relative);
bool goldens_required();
// A fresh empty temporary directory for one test (removed at exit unless IDSYNTH_KEEP_TMP=1).
std::string temp_dir(const std::string& tag);
// The real pretrained recogniser that scripts/fetch-test-models.sh fetches (faceplugin
// fr_feature.onnx) under $IDSYNTH_TEST_MODELS or <source>/.test-data; empty when absent.
std::string test_recognizer_path();
// IDSYNTH_REQUIRE_TEST_MODELS set (as .ci/run does): a missing test model is a failure.
bool test_models_required();
// /usr/bin/python3 with torch importable, for tests that cross-check against real torch.save files.
std::string python_with_torch();

}  // namespace idsynth::test

// Declares `std::string var` = the golden path, or skips/fails the test when it is missing.
#define IDSYNTH_REQUIRE_GOLDEN(var, relative)                                                         \
  const std::string var = ::idsynth::test::golden_path(relative);                                    \
  if (var.empty()) {                                                                                 \
    if (::idsynth::test::goldens_required()) {                                                       \
      FAIL() << "golden '" << (relative) << "' not found under '" << ::idsynth::test::goldens_root() \
             << "' and IDSYNTH_REQUIRE_GOLDENS=1";                                                   \
    } else {                                                                                         \
      GTEST_SKIP() << "golden '" << (relative) << "' not found (set IDSYNTH_GOLDENS to ../shared/goldens)"; \
    }                                                                                                \
  }

// Declares `std::string var` = the test recogniser's path, or skips/fails the test when it is missing.
#define IDSYNTH_REQUIRE_TEST_RECOGNIZER(var)                                                    \
  const std::string var = ::idsynth::test::test_recognizer_path();                             \
  if (var.empty()) {                                                                           \
    if (::idsynth::test::test_models_required()) {                                             \
      FAIL() << "fr_feature.onnx not found and IDSYNTH_REQUIRE_TEST_MODELS is set";            \
    } else {                                                                                   \
      GTEST_SKIP() << "fr_feature.onnx not found (run scripts/fetch-test-models.sh)";          \
    }                                                                                          \
  }

// A test that needs something outside the test binary: the built idsynth program, or a system tool
// (`check` a shell command that succeeds when it is there). Skips with one line on a user's
// checkout; under IDSYNTH_REQUIRE_GOLDENS=1 (CI, which installs and builds everything) it fails.
#define IDSYNTH_REQUIRE_ENVIRONMENT(present, what)                                         \
  do {                                                                                    \
    if (!(present)) {                                                                     \
      if (::idsynth::test::goldens_required()) FAIL() << (what) << " (IDSYNTH_REQUIRE_GOLDENS=1)"; \
      GTEST_SKIP() << (what);                                                             \
    }                                                                                     \
  } while (0)
#define IDSYNTH_REQUIRE_PROGRAM()                                                           \
  IDSYNTH_REQUIRE_ENVIRONMENT(std::filesystem::exists(::idsynth::test::idsynth_binary()),  \
                              ::idsynth::test::idsynth_binary() + " not built (cmake --build build --target idsynth)")
