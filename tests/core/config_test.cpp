#include <gtest/gtest.h>

#include <fstream>

#include "core/app_config.h"
#include "core/check.h"
#include "core/config.h"
#include "core/hashing.h"
#include "core/progress.h"
#include "tests/support/goldens.h"

namespace idsynth {
namespace {

std::string write_yaml(const std::string& text) {
  const std::string path = test::temp_dir("cfg") + "/c.yaml";
  std::ofstream(path) << text;
  return path;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsFileAndOverridesResolveInOrder) {
  const std::string path = write_yaml("generation:\n  steps: 30\n  devices: [cuda:0, cuda:1]\noutput:\n  dir: /tmp/x\n");
  const auto cfg = config::load<AppConfig>(path, {"generation.steps=12", "identities.max_similarity=0.4"});
  EXPECT_EQ(cfg.generation.steps, 12);
  EXPECT_EQ(cfg.generation.devices, (std::vector<std::string>{"cuda:0", "cuda:1"}));
  EXPECT_DOUBLE_EQ(cfg.identities.max_similarity, 0.4);
  EXPECT_DOUBLE_EQ(cfg.generation.guidance, 3.0);  // default
  EXPECT_EQ(cfg.output.dir, "/tmp/x");
  // The resolved YAML reads back to the same config.
  const std::string again = write_yaml(config::to_yaml(cfg));
  EXPECT_EQ(config::to_yaml(config::load<AppConfig>(again)), config::to_yaml(cfg));
}

TEST(Config, ErrorsNameFileKeyExpectationAndValue) {
  std::string err = error_of([&] { config::load<AppConfig>(write_yaml("generation:\n  stpes: 30\n")); });
  EXPECT_NE(err.find("c.yaml: generation.stpes: unknown key (expected one of: "), std::string::npos) << err;
  EXPECT_NE(err.find("steps"), std::string::npos) << err;

  err = error_of([&] { config::load<AppConfig>(write_yaml("generation:\n  steps: many\n")); });
  EXPECT_NE(err.find("generation.steps: expected an integer, found 'many'"), std::string::npos) << err;

  err = error_of([&] { config::load<AppConfig>(write_yaml("output:\n  images_per_identity: -3\n")); });
  EXPECT_NE(err.find("output.images_per_identity: expected an integer >= 1 and <= 100000, found -3"), std::string::npos) << err;

  err = error_of([&] { config::load<AppConfig>(write_yaml("generation:\n  scheduler: plms\n")); });
  EXPECT_NE(err.find("expected one of dpmsolver++, ddim, euler, found 'plms'"), std::string::npos) << err;

  err = error_of([&] { config::load<AppConfig>(write_yaml("modle:\n  dir: x\n")); });
  EXPECT_NE(err.find("modle: unknown key"), std::string::npos) << err;

  err = error_of([&] { config::load<AppConfig>(write_yaml("generation: 5\n")); });
  EXPECT_NE(err.find("generation: expected a mapping"), std::string::npos) << err;

  err = error_of([&] { config::load<AppConfig>(write_yaml("generation:\n  steps: [1\n")); });
  EXPECT_NE(err.find("YAML syntax error at line"), std::string::npos) << err;

  err = error_of([&] { config::load<AppConfig>("", {"generation.nope=1"}); });
  EXPECT_NE(err.find("generation.nope: unknown key"), std::string::npos) << err;

  err = error_of([&] { config::load<AppConfig>("/nonexistent/x.yaml"); });
  EXPECT_NE(err.find("/nonexistent/x.yaml: cannot open"), std::string::npos) << err;
}

TEST(Config, DefaultsDocumentEveryKey) {
  const std::string doc = config::to_yaml(AppConfig{}, true);
  for (const char* key : {"steps: 25", "guidance: 3", "max_similarity: 0.3", "identities_per_shard: 100", "# denoising steps"})
    EXPECT_NE(doc.find(key), std::string::npos) << key << "\n" << doc;
}

TEST(Hashing, Sha256KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string path = test::temp_dir("hash") + "/f";
  std::ofstream(path) << "abc";
  EXPECT_EQ(sha256_file(path), sha256_hex("abc"));
}

TEST(Progress, DurationFormatting) {
  EXPECT_EQ(Progress::format_duration(5), "5s");
  EXPECT_EQ(Progress::format_duration(185), "3m05s");
  EXPECT_EQ(Progress::format_duration(3720), "1h02m");
  EXPECT_EQ(Progress::format_duration(-1), "--");
  Progress p(10, "test");
  p.advance(4);
  p.advance(6);
  EXPECT_EQ(p.done(), 10);
  p.finish();
}

}  // namespace
}  // namespace idsynth
