#include "tests/support/goldens.h"

#include <ftw.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

namespace idsynth::test {
namespace fs = std::filesystem;

std::string goldens_root() {
  if (const char* env = std::getenv("IDSYNTH_GOLDENS"); env && *env) return env;
  return std::string(IDSYNTH_SOURCE_DIR_FOR_SUPPORT) + "/../shared/goldens";
}

std::string golden_path(const std::string& relative) {
  fs::path p = fs::path(goldens_root()) / relative;
  std::error_code ec;
  return fs::exists(p, ec) ? p.string() : std::string();
}

bool goldens_required() {
  const char* env = std::getenv("IDSYNTH_REQUIRE_GOLDENS");
  return env && std::string(env) == "1";
}

std::string test_recognizer_path() {
  const char* env = std::getenv("IDSYNTH_TEST_MODELS");
  const std::string root = env && *env ? env : std::string(IDSYNTH_SOURCE_DIR_FOR_SUPPORT) + "/.test-data";
  const fs::path path = fs::path(root) / "faceplugin/package/model/fr_feature.onnx";
  std::error_code ec;
  return fs::is_regular_file(path, ec) ? path.string() : std::string();
}

bool test_models_required() {
  const char* env = std::getenv("IDSYNTH_REQUIRE_TEST_MODELS");
  return env && *env && std::string(env) != "0";
}

std::string temp_dir(const std::string& tag) {
  static int counter = 0;
  fs::path base = fs::temp_directory_path() / ("idsynth-test-" + std::to_string(::getpid()));
  fs::path p = base / (tag + "-" + std::to_string(counter++));
  fs::remove_all(p);
  fs::create_directories(p);
  static bool registered = false;
  if (!registered) {
    registered = true;
    static const std::string to_remove = base.string();
    // POSIX nftw, not std::filesystem: PyTorch's pip libtorch.so exports its own copy of
    // std::filesystem::remove_all, which crashes when called after libtorch's statics are gone.
    std::atexit([] {
      const char* keep = std::getenv("IDSYNTH_KEEP_TMP");
      if (keep && std::string(keep) == "1") return;
      ::nftw(
          to_remove.c_str(), [](const char* path, const struct stat*, int, struct FTW*) { return ::remove(path); }, 16,
          FTW_DEPTH | FTW_PHYS);
    });
  }
  return p.string();
}

std::string python_with_torch() {
  static const std::string found = [] {
    if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0) return std::string("/usr/bin/python3");
    return std::string();
  }();
  return found;
}

}  // namespace idsynth::test
