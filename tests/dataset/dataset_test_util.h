// Helpers shared by the dataset tests: a tiny random model with a recogniser, a small config, and
// byte-level comparison of two dataset folders.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "dataset/generate.h"
#include "dataset/generate_config.h"
#include "core/config.h"
#include "core/file_util.h"
#include "generator/model_init.h"
#include "tests/support/goldens.h"

namespace idsynth::test {

inline std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

// A tiny diffusers-layout model (32x32 images, text width 32) + recognizer.safetensors.
inline std::string tiny_model_dir() {
  static std::string dir;
  if (dir.empty()) {
    dir = temp_dir("dataset_model");
    generator::ModelInitOptions o;
    o.text_hidden_size = 32;
    o.with_recognizer = true;
    generator::write_random_model(dir, o);
  }
  return dir;
}

// 8 identities x 3 images, one identity per shard (8 shards), 2 steps, batches of 2, and a filter
// at cosine 0 with 2 attempts: some images are redrawn, some identities end up short.
inline dataset::GenerateConfig tiny_config(const std::string& out_dir) {
  dataset::GenerateConfig c;
  c.model.dir = tiny_model_dir();
  c.model.recognizer = c.model.dir + "/recognizer.safetensors";
  c.generation.steps = 2;
  c.generation.height = 32;
  c.generation.width = 32;
  c.generation.batch_size = 2;
  c.generation.devices = {"cpu"};
  c.generation.threads = 2;
  c.generation.seed = 11;
  c.identities.count = 8;
  c.identities.dim = 32;
  c.identities.max_similarity = 0.5;
  c.identities.seed = 3;
  c.filter.min_similarity = 0.0;
  c.filter.max_attempts = 2;
  c.output.dir = out_dir;
  c.output.images_per_identity = 3;
  c.output.identities_per_shard = 1;
  return c;
}

// Generation without a progress bar.
inline dataset::GenerateOptions quiet() {
  dataset::GenerateOptions o;
  o.progress = false;
  return o;
}

// The reference every other run of tiny_config must equal byte for byte: one CPU worker, one task,
// uninterrupted; made once per test binary.
inline std::string reference_dataset() {
  static std::string dir;
  if (dir.empty()) {
    dir = temp_dir("dataset_reference");
    EXPECT_TRUE(dataset::generate_dataset(tiny_config(dir), quiet()).complete());
  }
  return dir;
}

// Debian's python3 (with python3-numpy / python3-h5py) rather than whatever python3 is first in PATH.
inline std::string system_python() {
  return std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

inline std::string write_config(const dataset::GenerateConfig& cfg, const std::string& path) {
  write_file_atomic(path, config::to_yaml(cfg));
  return path;
}

// Every output file that must not depend on how the run was split (config.resolved.yaml names
// the devices and the folder, so it is left out).
inline std::map<std::string, std::string> dataset_bytes(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = std::filesystem::relative(e.path(), dir).generic_string();
    // Temporaries a SIGKILL can leave behind (never read; `idsynth merge` removes those in shards/).
    if (rel == "config.resolved.yaml" || rel.find(".tmp.") != std::string::npos) continue;
    files[rel] = read_bytes(e.path().string());
  }
  return files;
}

inline void expect_same_dataset(const std::string& a, const std::string& b) {
  const auto fa = dataset_bytes(a), fb = dataset_bytes(b);
  std::string names_a, names_b;
  for (const auto& [k, v] : fa) names_a += k + " ";
  for (const auto& [k, v] : fb) names_b += k + " ";
  ASSERT_EQ(names_a, names_b) << a << " vs " << b;
  for (const auto& [name, bytes] : fa) EXPECT_TRUE(bytes == fb.at(name)) << name << " differs between " << a << " and " << b;
}

}  // namespace idsynth::test
