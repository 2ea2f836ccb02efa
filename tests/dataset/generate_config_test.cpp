// The config machinery (core/config) on the real schema it exists for: `generate`'s config.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>

#include "core/check.h"
#include "core/config.h"
#include "dataset/generate_config.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"

namespace idsynth {
namespace {

std::string write_yaml(const std::string& text) {
  const std::string path = test::temp_dir("cfg") + "/c.yaml";
  std::ofstream(path) << text;
  return path;
}

using test::error_of;

TEST(Config, DefaultsFileAndOverridesResolveInOrder) {
  const std::string path = write_yaml("generation:\n  steps: 30\n  devices: [cuda:0, cuda:1]\noutput:\n  dir: /tmp/x\n");
  const auto cfg = config::load<dataset::GenerateConfig>(path, {"generation.steps=12", "identities.max_similarity=0.4"});
  EXPECT_EQ(cfg.generation.steps, 12);
  EXPECT_EQ(cfg.generation.devices, (std::vector<std::string>{"cuda:0", "cuda:1"}));
  EXPECT_DOUBLE_EQ(cfg.identities.max_similarity, 0.4);
  EXPECT_DOUBLE_EQ(cfg.generation.guidance, 3.0);  // default
  EXPECT_EQ(cfg.output.dir, "/tmp/x");
  // The resolved YAML reads back to the same config.
  const std::string again = write_yaml(config::to_yaml(cfg));
  EXPECT_EQ(config::to_yaml(config::load<dataset::GenerateConfig>(again)), config::to_yaml(cfg));
}

TEST(Config, ErrorsNameFileKeyExpectationAndValue) {
  std::string err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("generation:\n  stpes: 30\n")); });
  EXPECT_NE(err.find("c.yaml: generation.stpes: unknown key (expected one of: "), std::string::npos) << err;
  EXPECT_NE(err.find("steps"), std::string::npos) << err;

  err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("generation:\n  steps: many\n")); });
  EXPECT_NE(err.find("generation.steps: expected an integer, found 'many'"), std::string::npos) << err;

  err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("output:\n  images_per_identity: -3\n")); });
  EXPECT_NE(err.find("output.images_per_identity: expected an integer >= 1 and <= 100000, found -3"), std::string::npos) << err;

  err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("generation:\n  scheduler: plms\n")); });
  EXPECT_NE(err.find("expected one of dpmsolver++, ddim, euler, lcm, found 'plms'"), std::string::npos) << err;

  err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("modle:\n  dir: x\n")); });
  EXPECT_NE(err.find("modle: unknown key"), std::string::npos) << err;

  err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("generation: 5\n")); });
  EXPECT_NE(err.find("generation: expected a mapping"), std::string::npos) << err;

  err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("generation:\n  steps: [1\n")); });
  EXPECT_NE(err.find("YAML syntax error at line"), std::string::npos) << err;

  err = error_of([&] { config::load<dataset::GenerateConfig>("", {"generation.nope=1"}); });
  EXPECT_NE(err.find("generation.nope: unknown key"), std::string::npos) << err;

  // SCRFD sizes: a range read with the file, then the stride rule; each one line.
  err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("filter:\n  det_size: 16\n")); });
  EXPECT_NE(err.find("c.yaml: filter.det_size: expected an integer >= 32 and <= 2048, found 16"), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("filter:\n  det_size: 100\n")); });
  EXPECT_NE(err.find("filter.det_size: expected a multiple of 32, found 100"), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  EXPECT_EQ(config::load<dataset::GenerateConfig>("", {"filter.det_size=320"}).filter.det_size, 320);
  EXPECT_EQ(config::load<dataset::GenerateConfig>("").filter.det_size, 640);

  err = error_of([&] { config::load<dataset::GenerateConfig>("/nonexistent/x.yaml"); });
  EXPECT_NE(err.find("/nonexistent/x.yaml: cannot open"), std::string::npos) << err;
}

// model.loras as the issue writes it ({path, scale} maps) or as the CLI does (FILE[:SCALE]), mixed;
// stored in one form, which the written config keeps.
TEST(Config, LoraListsTakeMapsAndStrings) {
  const auto cfg = config::load<dataset::GenerateConfig>(
      write_yaml("model:\n  loras:\n    - {path: lcm.safetensors, scale: 0.8}\n    - path: style.safetensors\n    - plain.pt:0.5\n"));
  EXPECT_EQ(cfg.model.loras, (std::vector<std::string>{"lcm.safetensors:0.8", "style.safetensors:1", "plain.pt:0.5"}));
  const std::string again = write_yaml(config::to_yaml(cfg));
  EXPECT_EQ(config::load<dataset::GenerateConfig>(again).model.loras, cfg.model.loras);
  EXPECT_EQ(config::load<dataset::GenerateConfig>(write_yaml("model:\n  loras: {path: one.safetensors}\n")).model.loras,
            std::vector<std::string>{"one.safetensors:1"});

  std::string err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("model:\n  loras: [{path: a, weight: 2}]\n")); });
  EXPECT_NE(err.find("c.yaml: model.loras: expected map keys path and scale, found 'weight'"), std::string::npos) << err;
  err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("model:\n  loras: [{scale: 2}]\n")); });
  EXPECT_NE(err.find("model.loras: expected a path in every {path, scale} map, found a map without one"), std::string::npos) << err;
  err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("model:\n  loras: [{path: a, scale: strong}]\n")); });
  EXPECT_NE(err.find("model.loras: expected a number as scale, found 'strong'"), std::string::npos) << err;
  err = error_of([&] { config::load<dataset::GenerateConfig>(write_yaml("model:\n  loras: [[a, b]]\n")); });
  EXPECT_NE(err.find("model.loras: expected a list of FILE[:SCALE] strings or {path: FILE, scale: S} maps"), std::string::npos) << err;
}

TEST(Config, DefaultsDocumentEveryKey) {
  const std::string doc = config::to_yaml(dataset::GenerateConfig{}, true);
  for (const char* key : {"steps: 25", "guidance: 3", "max_similarity: 0.3", "identities_per_shard: 100", "# denoising steps"})
    EXPECT_NE(doc.find(key), std::string::npos) << key << "\n" << doc;
}

TEST(Config, IncludeLaysPresetsUnderTheFile) {
  const std::string dir = test::temp_dir("cfg-include");
  std::ofstream(dir + "/base.yaml") << "generation:\n  steps: 30\n  guidance: 2.5\noutput:\n  dir: base-out\n";
  std::ofstream(dir + "/mid.yaml") << "include: base.yaml\ngeneration:\n  guidance: 4\n";
  std::ofstream(dir + "/top.yaml") << "include: [mid.yaml]\noutput:\n  dir: top-out\n";
  const auto cfg = config::load<dataset::GenerateConfig>(dir + "/top.yaml", {"generation.steps=7"});
  EXPECT_EQ(cfg.generation.steps, 7);         // --set over everything
  EXPECT_EQ(cfg.generation.guidance, 4.0);    // mid over base
  EXPECT_EQ(cfg.output.dir, "top-out");       // the file over its presets
  EXPECT_EQ(cfg.identities.count, 100);       // untouched default

  std::ofstream(dir + "/loop.yaml") << "include: loop.yaml\n";
  EXPECT_NE(error_of([&] { config::load<dataset::GenerateConfig>(dir + "/loop.yaml"); }).find("includes itself"),
            std::string::npos);
  std::ofstream(dir + "/missing.yaml") << "include: nowhere.yaml\n";
  EXPECT_NE(error_of([&] { config::load<dataset::GenerateConfig>(dir + "/missing.yaml"); }).find("nowhere.yaml: cannot open"),
            std::string::npos);
  std::ofstream(dir + "/bad.yaml") << "include: {a: 1}\n";
  EXPECT_NE(error_of([&] { config::load<dataset::GenerateConfig>(dir + "/bad.yaml"); }).find("include: expected a file name"),
            std::string::npos);
}

TEST(Config, ShippedPresetsLoad) {
  for (const char* name : {"quickstart.yaml", "arc2face-10k.yaml", "arc2face-20k.yaml", "arc2face-10k-lcm.yaml"}) {
    SCOPED_TRACE(name);
    const auto cfg = config::load<dataset::GenerateConfig>(std::string(IDSYNTH_SOURCE_DIR) + "/configs/" + name);
    EXPECT_FALSE(cfg.output.dir.empty());
  }
  const auto k10 = config::load<dataset::GenerateConfig>(std::string(IDSYNTH_SOURCE_DIR) + "/configs/arc2face-10k.yaml");
  const auto k20 = config::load<dataset::GenerateConfig>(std::string(IDSYNTH_SOURCE_DIR) + "/configs/arc2face-20k.yaml");
  EXPECT_EQ(k20.identities.count, 2 * k10.identities.count);
  EXPECT_EQ(k20.generation.steps, k10.generation.steps);
  EXPECT_EQ(k20.model.dir, k10.model.dir);
  // The fast mode: the 10K set with the LCM-LoRA, 4 LCM steps and no guidance batch.
  const auto lcm = config::load<dataset::GenerateConfig>(std::string(IDSYNTH_SOURCE_DIR) + "/configs/arc2face-10k-lcm.yaml");
  EXPECT_EQ(lcm.model.loras, std::vector<std::string>{"models/lcm-lora-sdv1-5/pytorch_lora_weights.safetensors:1.0"});
  EXPECT_EQ(lcm.generation.scheduler, "lcm");
  EXPECT_EQ(lcm.generation.steps, 4);
  EXPECT_EQ(lcm.identities.count, k10.identities.count);
  EXPECT_EQ(lcm.model.recognizer, k10.model.recognizer);
}

}  // namespace
}  // namespace idsynth
