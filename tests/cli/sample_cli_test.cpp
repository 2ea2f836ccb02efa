// `idsynth sample` end to end on the tiny golden pipeline: PNGs equal diffusers' images within one
// grey level, file names, sample.json, and one-line errors for bad inputs.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>
#include <limits>

#include "core/file_util.h"
#include "formats/image.h"
#include "core/json.h"
#include "formats/npy.h"
#include "core/safetensors.h"
#include "tests/support/goldens.h"
#include "tests/support/process.h"

namespace idsynth {
namespace {

using test::idsynth_binary;
using test::count_lines;
using test::run_command;

std::string sample_command(const std::string& model, const std::string& ids, const std::string& out, const std::string& extra = "") {
  return idsynth_binary() + " --threads 2 sample --model-dir " + model + " --ids " + ids + " --out " + out + " " + extra;
}

TEST(SampleCli, MatchesGoldenImagesAndWritesRecord) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  auto expected = SafeTensorsFile(dir + "/expected.safetensors").all();
  const std::string tmp = test::temp_dir("sample_cli");
  formats::save_npy(tmp + "/ids.npy", inputs.at("id_embeds").contiguous());
  const std::string out = tmp + "/out";
  auto r = run_command(sample_command(dir + "/pipeline", tmp + "/ids.npy", out,
                                      "--images-per-id 2 --seed 1234 --steps 5 --guidance 3.0 --height 32 --width 32"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Identity-major names; pixel values within one grey level of round(255 * diffusers' image).
  const auto want = (expected.at("images") * 255).round();
  const char* names[] = {"00000_000.png", "00000_001.png", "00001_000.png", "00001_001.png"};
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(names[i]);
    ASSERT_TRUE(file_exists(out + "/" + names[i]));
    auto png = formats::mat_to_tensor(formats::read_image_rgb(out + "/" + names[i])).to(at::kFloat);
    ASSERT_EQ(png.sizes(), (std::vector<int64_t>{32, 32, 3}));
    const double diff = (png - want[i]).abs().max().item<double>();
    std::cout << "  " << names[i] << " max grey-level diff = " << diff << "\n";
    EXPECT_LE(diff, 1.0);
  }
  EXPECT_FALSE(file_exists(out + "/00002_000.png"));
  auto rec = json::parse_file(out + "/sample.json");
  EXPECT_EQ(rec.at("seed").as_int(), 1234);
  EXPECT_EQ(rec.at("images_per_id").as_int(), 2);
  EXPECT_EQ(rec.at("num_identities").as_int(), 2);
  EXPECT_EQ(rec.at("steps").as_int(), 5);
  EXPECT_EQ(rec.at("guidance_scale").as_double(), 3.0);
  EXPECT_EQ(rec.at("scheduler").as_string(), "DPMSolverMultistepScheduler");
  EXPECT_EQ(rec.at("height").as_int(), 32);
  EXPECT_EQ(rec.at("dtype").as_string(), "float32");
  EXPECT_TRUE(rec.at("ids_were_normalised").as_bool());
  EXPECT_EQ(rec.at("images").as_array().size(), 4u);
  const auto& files = rec.at("model_files").as_array();
  ASSERT_EQ(files.size(), 7u);
  for (const auto& f : files) {
    EXPECT_EQ(f.at("sha256").as_string().size(), 64u);
    EXPECT_EQ(f.at("bytes").as_int(), static_cast<int64_t>(file_size(f.at("path").as_string())));
  }
  EXPECT_NE(files[1].at("path").as_string().find("unet/diffusion_pytorch_model.safetensors"), std::string::npos);
}

TEST(SampleCli, SafetensorsIdsAreNormalisedWithAWarning) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  auto inputs = SafeTensorsFile(dir + "/inputs.safetensors").all();
  const std::string tmp = test::temp_dir("sample_cli_st");
  save_safetensors(tmp + "/ids.safetensors", {{"ids", inputs.at("id_embeds").slice(0, 0, 1) * 3.0}});
  auto r = run_command(sample_command(dir + "/pipeline", tmp + "/ids.safetensors", tmp + "/out", "--seed 3 --steps 1"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("not L2-normalised"), std::string::npos) << r.err;
  EXPECT_TRUE(file_exists(tmp + "/out/00000_000.png"));
  auto rec = json::parse_file(tmp + "/out/sample.json");
  EXPECT_FALSE(rec.at("ids_were_normalised").as_bool());
  EXPECT_EQ(rec.at("height").as_int(), 32);  // default: UNet sample_size 16 x VAE factor 2
}

TEST(SampleCli, BadInputsExitOneWithOneLine) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  const std::string tmp = test::temp_dir("sample_cli_bad");
  const std::string model = dir + "/pipeline";
  auto expect_error = [&](const std::string& cmd, const std::string& needle) {
    auto r = run_command(cmd);
    EXPECT_EQ(r.exit_code, 1) << cmd << "\n" << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
  };
  // Missing ID file, missing model file.
  expect_error(sample_command(model, tmp + "/nope.npy", tmp + "/o1", "--seed 1"), tmp + "/nope.npy");
  formats::save_npy(tmp + "/ok.npy", at::ones({1, 16}) / 4.0);
  ASSERT_EQ(std::system(("mkdir -p " + tmp + "/m && cp -r " + model + "/unet " + model + "/vae " + model + "/scheduler " +
                         tmp + "/m/ && mkdir -p " + tmp + "/m/text_encoder && cp " + model + "/text_encoder/config.json " +
                         tmp + "/m/text_encoder/").c_str()), 0);
  expect_error(sample_command(tmp + "/m", tmp + "/ok.npy", tmp + "/o2", "--seed 1"), "pytorch_model.bin");
  // Wider than the text encoder's hidden size (32).
  formats::save_npy(tmp + "/wide.npy", at::ones({2, 33}));
  expect_error(sample_command(model, tmp + "/wide.npy", tmp + "/o3", "--seed 1"), "D <= 32");
  // NaN in a row.
  auto nan_ids = at::ones({3, 16});
  nan_ids[1][2] = std::numeric_limits<float>::quiet_NaN();
  formats::save_npy(tmp + "/nan.npy", nan_ids);
  expect_error(sample_command(model, tmp + "/nan.npy", tmp + "/o4", "--seed 1"), "NaN");
  EXPECT_FALSE(file_exists(tmp + "/o4/sample.json"));
  // Not a .npy at all.
  std::ofstream(tmp + "/junk.npy") << "hello";
  expect_error(sample_command(model, tmp + "/junk.npy", tmp + "/o5", "--seed 1"), "junk.npy");
  // LCM with no steps; a LoRA that is not there; a file that is no LoRA.
  expect_error(sample_command(model, tmp + "/ok.npy", tmp + "/o6", "--seed 1 --scheduler lcm --steps 0"),
               "--steps: expected >= 1, found 0");
  expect_error(sample_command(model, tmp + "/ok.npy", tmp + "/o7", "--seed 1 --lora " + tmp + "/none.safetensors:0.5"),
               tmp + "/none.safetensors: LoRA file: expected a file, found nothing");
  expect_error(sample_command(model, tmp + "/ok.npy", tmp + "/o8", "--seed 1 --lora " + model + "/vae/diffusion_pytorch_model.safetensors"),
               "expected LoRA tensors");
}

// Arc2Face's fast mode from the command line: LCM, guidance 1, a LoRA file; `weights` names the file.
TEST(SampleCli, LcmWithLoraRecordsTheLoraAndWeightsDescribesIt) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "pipeline_tiny");
  const std::string tmp = test::temp_dir("sample_cli_lora");
  const std::string lora = std::string(IDSYNTH_SOURCE_DIR) + "/tests/generator/data/lora/kohya.safetensors";
  formats::save_npy(tmp + "/ids.npy", at::ones({1, 16}) / 4.0);
  auto r = run_command(sample_command(dir + "/pipeline", tmp + "/ids.npy", tmp + "/out",
                                      "--seed 3 --images-per-id 2 --scheduler lcm --steps 4 --guidance 1 --lora " + lora + ":0.5"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("fused 18 LoRA layers into 18 UNet weights"), std::string::npos) << r.err;
  const json::Value record = json::parse_file(tmp + "/out/sample.json");
  const auto& loras = record.find("loras")->as_array();
  ASSERT_EQ(loras.size(), 1u);
  EXPECT_EQ(loras[0].find("path")->as_string(), lora);
  EXPECT_EQ(loras[0].find("scale")->as_double(), 0.5);
  EXPECT_EQ(record.find("scheduler")->as_string(), "LCMScheduler");
  EXPECT_TRUE(file_exists(tmp + "/out/00000_001.png"));
  r = run_command(idsynth_binary() + " weights " + lora);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("(LoRA (kohya form): 22 layers (UNet 18, text encoder 4), rank 4, alpha 2; targets: "), std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace idsynth
