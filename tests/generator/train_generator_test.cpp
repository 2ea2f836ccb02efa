// idsynth train-generator end to end on a tiny random Arc2Face model and eight (image, ID) pairs in
// an idsynth shard: the model learns them (full weights and LoRA), a run killed twice with SIGKILL
// resumes to the same bytes as an uninterrupted one, and bad input gives one line each.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>
#include <opencv2/imgproc.hpp>

#include <fcntl.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <spawn.h>
#include <sys/wait.h>
#include <thread>

#include "core/safetensors.h"
#include "formats/image.h"
#include "formats/shard_file.h"
#include "generator/arc2face_pipeline.h"
#include "generator/model_init.h"
#include "generator/train_generator.h"
#include "generator/train_generator_data.h"
#include "formats/shard_file.h"
#include "tests/support/goldens.h"
#include "tests/support/process.h"

namespace idsynth {
namespace {

namespace fs = std::filesystem;
using generator::TrainGeneratorConfig;

constexpr int64_t kPairs = 8, kIdWidth = 16, kSize = 32;

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Eight faces-to-be: each pair a distinct picture (background colour, a disc and a bar placed by the
// identity), and a random unit ID vector per identity.
const std::string& pairs_shard() {
  static const std::string path = [] {
    const std::string dir = test::temp_dir("train_generator_data");
    formats::ShardData d;
    d.dim = kIdWidth;
    at::Generator gen = at::detail::createCPUGenerator(7);
    const at::Tensor ids = at::randn({kPairs, kIdWidth}, gen);
    const at::Tensor unit = ids / ids.norm(2, 1, true);
    for (int64_t i = 0; i < kPairs; ++i) {
      cv::Mat img(kSize, kSize, CV_8UC3, cv::Scalar(40 + 25 * i, 200 - 20 * i, (90 * i) % 255));
      cv::circle(img, cv::Point(8 + 2 * i, 10 + i), 6 + (i % 3), cv::Scalar(255 - 30 * i, 30 * i, 128), cv::FILLED);
      cv::rectangle(img, cv::Rect(4 + (i * 3) % 20, 22, 10, 5), cv::Scalar(20, 20 + 25 * i, 240 - 25 * i), cv::FILLED);
      d.identity_index.push_back(i);
      for (int64_t k = 0; k < kIdWidth; ++k) d.identity_vectors.push_back(unit[i][k].item<float>());
      d.labels.push_back(i);
      d.image_index.push_back(0);
      d.attempt.push_back(0);
      d.seed.push_back(static_cast<uint64_t>(i));
      d.similarity.push_back(1.0f);
      d.images.push_back(formats::encode_image_rgb(img, ".png"));
    }
    d.has_aligned = false;
    d.config = "test";
    d.model_files = "{}";
    const std::string file = dir + "/shard-00000.h5";
    formats::write_shard(file, d);
    return file;
  }();
  return path;
}

const std::string& tiny_model() {
  static const std::string dir = [] {
    const std::string out = test::temp_dir("train_generator_model") + "/model";
    generator::ModelInitOptions o;
    o.seed = 3;
    o.text_hidden_size = 32;
    generator::write_random_model(out, o);
    return out;
  }();
  return dir;
}

constexpr int64_t kTrainSize = 16;  // images 16x16, latents 8x8: seconds per hundred steps

TrainGeneratorConfig base_config(const std::string& out) {
  TrainGeneratorConfig c;
  c.run.output = out;
  c.run.seed = 5;
  c.run.device = "cpu";
  c.run.log_every = 50;
  c.model.dir = tiny_model();
  c.data.paths = {pairs_shard()};
  c.data.id_vector = "identity";
  c.data.resolution = kTrainSize;
  c.data.batch_size = kPairs;
  c.optim.lr = 1e-3;
  c.optim.weight_decay = 0;
  c.train.condition_dropout = 0;
  c.train.snr_gamma = 5;
  c.schedule.max_steps = 300;
  c.checkpoint.every_steps = 0;
  c.samples.identities = 4;
  c.samples.seeds = 2;
  c.samples.steps = 10;
  return c;
}

// The random model's VAE cannot reproduce any picture, so no UNet could draw the targets through it:
// the learning tests start from the tiny model with its VAE trained on the eight images
// (train.target vae), as the miniature pipeline does.
const std::string& vae_trained_model() {
  static const std::string dir = [] {
    TrainGeneratorConfig c = base_config(test::temp_dir("train_generator_vae"));
    c.train.target = "vae";
    c.schedule.max_steps = 400;
    c.optim.lr = 2e-3;
    const generator::GeneratorTrainResult r = generator::train_generator(c);
    std::cout << "vae: loss " << r.first_loss << " -> " << r.last_loss << "\n";
    return r.model_dir;
  }();
  return dir;
}

struct SampleErrors {
  double own = 0;      // each ID's sample against its own training image
  double nearest = 0;  // each sample against the closest of the eight training images
};

// Mean absolute pixel errors in [0, 1] of the model's samples for the eight IDs (DPM-Solver++, 25
// steps, no guidance, seed 0) against the training images as the model sees them.
SampleErrors sample_errors(const std::string& model_dir, const std::vector<generator::LoraSpec>& loras = {}) {
  generator::PipelineOptions po;
  po.loras = loras;
  auto pipe = generator::Arc2FacePipeline::load(generator::Arc2FaceModelPaths::resolve(model_dir), po);
  const generator::GeneratorTrainData data(base_config("").data, kTrainSize, "");
  std::vector<at::Tensor> ids, targets;
  for (int64_t i = 0; i < kPairs; ++i) {
    ids.push_back(data.id_vector(i));
    targets.push_back((data.image(i).permute({1, 2, 0}) + 1.0) / 2.0);
  }
  generator::SampleOptions so;
  so.num_inference_steps = 25;
  so.guidance_scale = 1.0;
  const at::Tensor images = pipe.sample(at::stack(ids), pipe.draw_latents(0, kPairs, kTrainSize, kTrainSize), so);
  const at::Tensor t = at::stack(targets);
  // [sample, target] errors
  const at::Tensor errors = (images.unsqueeze(1) - t.unsqueeze(0)).abs().mean({2, 3, 4});
  return {errors.diagonal().mean().item<double>(), std::get<0>(errors.min(1)).mean().item<double>()};
}

TEST(TrainGenerator, VaeTrainingReconstructsTheImages) {
  const std::string model = vae_trained_model();
  auto before = generator::load_vae(tiny_model() + "/vae"), after = generator::load_vae(model + "/vae");
  const generator::GeneratorTrainData data(base_config("").data, kTrainSize, "");
  std::vector<at::Tensor> x;
  for (int64_t i = 0; i < kPairs; ++i) x.push_back(data.image(i));
  const at::Tensor images = at::stack(x);
  torch::NoGradGuard no_grad;
  const double e0 = (before->decode(before->encode(images).mean) - images).abs().mean().item<double>() / 2;
  const double e1 = (after->decode(after->encode(images).mean) - images).abs().mean().item<double>() / 2;
  std::cout << "vae reconstruction error " << e0 << " -> " << e1 << "\n";
  EXPECT_LE(e1 * 5.0, e0);
}

// After 300 steps the samples move towards the training pictures; which ID draws which picture is
// learnt far more slowly (the loss gains little from the ID at most timesteps: ~1000+ steps here), so
// the own-ID error is printed, not required to fall (issue #14's 5x own-ID goal is not met yet; see
// docs/train-generator.md).
TEST(TrainGenerator, FullTrainingMovesSamplesToTheTrainingImages) {
  const std::string out = test::temp_dir("train_generator_full");
  TrainGeneratorConfig c = base_config(out);
  c.model.dir = vae_trained_model();
  const generator::GeneratorTrainResult r = generator::train_generator(c);
  ASSERT_EQ(r.steps, c.schedule.max_steps);
  ASSERT_FALSE(r.model_dir.empty());
  const SampleErrors before = sample_errors(c.model.dir), after = sample_errors(r.model_dir);
  std::cout << "full: loss " << r.first_loss << " -> " << r.last_loss << "; pixel error to the nearest training image "
            << before.nearest << " -> " << after.nearest << ", to the ID's own " << before.own << " -> " << after.own << "\n";
  EXPECT_LT(r.last_loss, 0.5 * r.first_loss);
  EXPECT_LE(after.nearest * 1.5, before.nearest) << "the samples should be >= 1.5x closer to the training images";
  EXPECT_TRUE(fs::exists(r.report_path));
  EXPECT_TRUE(fs::exists(out + "/samples/step-00000000.png"));
  EXPECT_TRUE(fs::exists(out + "/samples/step-00000300.png"));
}

TEST(TrainGenerator, LoraTrainingMovesSamplesToTheTrainingImagesThroughTheLoraFile) {
  const std::string out = test::temp_dir("train_generator_lora");
  TrainGeneratorConfig c = base_config(out);
  c.model.dir = vae_trained_model();
  c.train.lora_rank = 8;
  c.train.lora_convolutions = true;
  c.optim.lr = 3e-3;
  const generator::GeneratorTrainResult r = generator::train_generator(c);
  ASSERT_FALSE(r.lora_path.empty());
  const SampleErrors before = sample_errors(c.model.dir), after = sample_errors(c.model.dir, {{r.lora_path, 1.0}});
  std::cout << "lora: loss " << r.first_loss << " -> " << r.last_loss << "; pixel error to the nearest training image "
            << before.nearest << " -> " << after.nearest << ", to the ID's own " << before.own << " -> " << after.own << "\n";
  EXPECT_LT(r.last_loss, 0.5 * r.first_loss);
  EXPECT_LE(after.nearest * 1.15, before.nearest) << "the LoRA's samples should be >= 1.15x closer to the training images";
}

// run.devices [cpu, cpu]: two replicas, each batch split 4 + 4, their gradients summed into the
// first's: the one-device gradient up to float summation order. AdamW's first steps move a weight by
// about lr·sign(gradient), which rounding flips wherever a gradient is near zero, so the optimiser is
// made SGD-like here (eps 1 >> |gradient|: the update is lr·g/(|g| + 1)); then the second step's
// update of two replicas equals one device's to rounding, while a dropped or double-counted shard
// would change it by tens of percent.
// Two steps of a small-step, SGD-like AdamW (eps 1: its first steps would otherwise be ~lr·sign(g),
// and rounding flips the signs of near-zero gradients) from the base config with `edit` applied;
// returns the checkpoints after steps 1 and 2.
using Checkpoints = std::pair<TensorDict, TensorDict>;
Checkpoints two_steps(const std::string& name, const std::function<void(TrainGeneratorConfig&)>& edit) {
  const std::string out = test::temp_dir("train_generator_two_steps_" + name);
  TrainGeneratorConfig c = base_config(out);
  c.optim.eps = 1.0;
  c.optim.lr = 1e-2;
  c.schedule.max_steps = 2;
  c.checkpoint.every_steps = 1;
  c.checkpoint.keep = 10;
  c.samples.identities = 1;
  c.samples.seeds = 1;
  c.samples.steps = 2;
  edit(c);
  EXPECT_EQ(generator::train_generator(c).steps, 2) << name;
  return {SafeTensorsFile(out + "/checkpoint-00000001.safetensors").all(), SafeTensorsFile(out + "/checkpoint-00000002.safetensors").all()};
}

// |step-2 update of b − that of a| / |step-2 update of a|, over the trained tensors ("param.*").
double relative_update_difference(const std::string& name, const Checkpoints& a, const Checkpoints& b) {
  double diff = 0, update = 0;
  int64_t compared = 0;
  for (const auto& [tensor, w2] : a.second) {
    if (tensor.rfind("param.", 0) != 0) continue;
    const at::Tensor* w2_b = b.second.find(tensor);
    const at::Tensor* w1 = a.first.find(tensor);
    EXPECT_TRUE(w2_b != nullptr && w1 != nullptr) << name << ": " << tensor;
    if (w2_b == nullptr || w1 == nullptr) return 1e9;
    diff += (w2 - *w2_b).to(at::kDouble).pow(2).sum().item<double>();
    update += (w2 - *w1).to(at::kDouble).pow(2).sum().item<double>();
    ++compared;
  }
  EXPECT_GT(compared, 0) << name;
  EXPECT_GT(update, 0) << name;
  const double relative = std::sqrt(diff / update);
  std::cout << name << ": " << compared << " trained tensors; step 2 update " << std::sqrt(update) << ", the runs differ by "
            << relative << " of it\n";
  return relative;
}

TEST(TrainGenerator, TwoReplicasTrainLikeOneDevice) {
  struct Case {
    const char* name;
    std::string target;
    int64_t lora_rank;
  };
  for (const Case& k : {Case{"full", "diffusion", 0}, Case{"lora", "diffusion", 4}, Case{"vae", "vae", 0}}) {
    const auto train = [&](const std::vector<std::string>& devices) {
      return two_steps(k.name + std::to_string(devices.size()), [&](TrainGeneratorConfig& c) {
        c.train.target = k.target;
        c.train.lora_rank = k.lora_rank;
        c.run.device = "auto";
        c.run.devices = devices;
      });
    };
    EXPECT_LT(relative_update_difference(k.name, train({"cpu"}), train({"cpu", "cpu"})), 1e-3)
        << k.name << ": two replicas should train what one device trains";
  }
}

// train.cache_latents auto samples each step's latents from posteriors encoded once, in chunks,
// for every image and its mirror image; that must train what encoding every batch trains. Flips on,
// so a row looked up in the wrong orientation (or as the wrong pair) would show.
TEST(TrainGenerator, CachedLatentsTrainLikeEncodingEveryBatch) {
  const auto train = [&](const std::string& cache) {
    return two_steps("cache_" + cache, [&](TrainGeneratorConfig& c) {
      c.train.cache_latents = cache;
      c.data.flip_p = 0.5;
      c.data.batch_size = 4;  // chunks of 4 while caching: other batch compositions than the steps'
    });
  };
  EXPECT_LT(relative_update_difference("cache", train("off"), train("auto")), 1e-3)
      << "cached posteriors should train what encoding every batch trains";
}

// The learning check: a tiny model (VAE trained first) overfits the eight pairs so well that
// each ID draws its own picture. The recipe that gets there on this scale: 8x8 pictures, v-prediction
// (at high noise its target is the picture itself, so the ID pays off where the noisy latent tells
// nothing), 10% condition dropout and guidance 3 when sampling; 2500 steps (~7 min on one core).
TEST(TrainGenerator, OverfitsEightPairsSoEachIdDrawsItsOwnPicture) {
  constexpr int64_t size = 8;
  TrainGeneratorConfig vae = base_config(test::temp_dir("train_generator_overfit_vae"));
  vae.data.resolution = size;
  vae.train.target = "vae";
  vae.schedule.max_steps = 400;
  vae.optim.lr = 2e-3;
  vae.run.threads = 1;
  const std::string vae_model = generator::train_generator(vae).model_dir;

  TrainGeneratorConfig c = base_config(test::temp_dir("train_generator_overfit"));
  c.model.dir = vae_model;
  c.data.resolution = size;
  c.train.prediction_type = "v_prediction";
  c.train.snr_gamma = 0;
  c.train.condition_dropout = 0.1;
  c.optim.lr = 1e-3;
  c.schedule.max_steps = 2500;
  c.run.log_every = 250;
  c.run.threads = 1;  // tiny ops: one thread is fastest, and ctest runs another test beside this one
  c.samples.every_steps = 0;
  const generator::GeneratorTrainResult r = generator::train_generator(c);
  ASSERT_FALSE(r.model_dir.empty());

  // Each ID sampled from seeds 0 and 1 (DPM-Solver++, 25 steps, guidance 3) against its own picture.
  auto own_error = [&](const std::string& model_dir) {
    auto pipe = generator::Arc2FacePipeline::load(generator::Arc2FaceModelPaths::resolve(model_dir), {});
    const generator::GeneratorTrainData data(c.data, size, "");
    std::vector<at::Tensor> ids, latents, targets;
    for (int64_t i = 0; i < kPairs; ++i) {
      ids.push_back(data.id_vector(i));
      for (uint64_t seed : {0, 1}) {
        at::Generator gen = at::detail::createCPUGenerator(seed);
        latents.push_back(pipe.draw_latents(gen, 1, size, size));
        targets.push_back((data.image(i).permute({1, 2, 0}) + 1.0) / 2.0);
      }
    }
    generator::SampleOptions so;
    so.num_inference_steps = 25;
    so.guidance_scale = 3.0;
    const at::Tensor images = pipe.sample(at::stack(ids), at::cat(latents), so);
    return (images - at::stack(targets)).abs().mean().item<double>();
  };
  const double before = own_error(vae_model), after = own_error(r.model_dir);
  std::cout << "overfit: loss " << r.first_loss << " -> " << r.last_loss << "; each ID's samples to its own picture " << before
            << " -> " << after << " (" << before / after << "x)\n";
  EXPECT_LE(after * 5.0, before) << "each ID's samples should be >= 5x closer to its own picture than the untrained model's";
}

// ---- the command line ------------------------------------------------------------------------

std::string write_yaml(const std::string& dir, const std::string& output) {
  const std::string path = dir + "/config.yaml";
  std::ofstream(path) << "run: {output: " << output << ", seed: 5, device: cpu, log_every: 5}\n"
                      << "model: {dir: " << tiny_model() << "}\n"
                      << "data: {paths: [" << pairs_shard() << "], id_vector: identity, batch_size: 4, resolution: 16}\n"
                      << "train: {condition_dropout: 0.25}\n"
                      << "optim: {lr: 1.0e-3, gradient_accumulation: 2}\n"
                      << "schedule: {max_steps: 24, warmup_steps: 3, type: cosine}\n"
                      << "ema: {enabled: true, decay: 0.99}\n"
                      << "checkpoint: {every_steps: 4, keep: 2}\n"
                      << "samples: {every_steps: 0, identities: 2, seeds: 1, steps: 2}\n";
  return path;
}

pid_t spawn_train(const std::string& config, bool resume) {
  const std::string bin = test::idsynth_binary();
  std::vector<std::string> args = {bin, "--threads", "2", "--log-level", "warn", "train-generator", "--config", config};
  if (resume) args.push_back("--resume");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, bin.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

int newest_checkpoint_step(const std::string& dir) {
  int best = -1;
  if (!fs::exists(dir)) return best;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("checkpoint-", 0) == 0 && e.path().extension() == ".safetensors") best = std::max(best, std::stoi(n.substr(11, 8)));
  }
  return best;
}

// Full training with EMA, gradient accumulation, condition dropout and a cosine schedule: killed with
// SIGKILL twice (after the checkpoints of steps 4 and 12 appear) and resumed, the run ends with the
// same weight bytes as one that was never interrupted.
TEST(TrainGeneratorCli, KilledTwiceResumesToTheSameBytes) {
  IDSYNTH_REQUIRE_PROGRAM();
  const std::string dir = test::temp_dir("train_generator_kill");
  const std::string straight = dir + "/straight", killed = dir + "/killed";
  fs::create_directories(dir + "/a");
  fs::create_directories(dir + "/b");
  const std::string config_a = write_yaml(dir + "/a", straight), config_b = write_yaml(dir + "/b", killed);
  const test::CommandResult full = test::run_command(test::idsynth_binary() + " --threads 2 --log-level warn train-generator --config " + config_a);
  ASSERT_EQ(full.exit_code, 0) << full.err;

  int kills = 0;
  for (int target : {4, 12}) {
    const pid_t pid = spawn_train(config_b, kills > 0);
    ASSERT_GT(pid, 0);
    while (newest_checkpoint_step(killed) < target) {
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) FAIL() << "the run ended before step " << target;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    ++kills;
  }
  ASSERT_LT(newest_checkpoint_step(killed), 24) << "the killed run finished anyway";
  const test::CommandResult rest =
      test::run_command(test::idsynth_binary() + " --threads 2 --log-level warn train-generator --config " + config_b + " --resume");
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  for (const std::string f : {"model/arc2face/diffusion_pytorch_model.safetensors", "model/encoder/model.safetensors"}) {
    const std::string a = read_bytes(straight + "/" + f), b = read_bytes(killed + "/" + f);
    ASSERT_FALSE(a.empty()) << f;
    EXPECT_TRUE(a == b) << f << " differs after two kills and a resume";
  }
  // The last checkpoint's tensors too (weights, AdamW moments, EMA); its metadata names the output
  // folder, which differs.
  const TensorDict a = SafeTensorsFile(straight + "/checkpoint-00000024.safetensors").all();
  const TensorDict b = SafeTensorsFile(killed + "/checkpoint-00000024.safetensors").all();
  ASSERT_EQ(a.size(), b.size());
  int64_t compared = 0;
  for (const auto& [name, t] : a) {
    const at::Tensor* u = b.find(name);
    ASSERT_NE(u, nullptr) << name;
    EXPECT_TRUE(at::equal(t, *u)) << name << " differs after two kills and a resume";
    compared += name.rfind("adam.", 0) == 0 || name.rfind("ema.", 0) == 0;
  }
  EXPECT_GT(compared, 0) << "the checkpoint holds no AdamW or EMA state";
  // and the weights did move
  EXPECT_NE(read_bytes(straight + "/model/arc2face/diffusion_pytorch_model.safetensors").size(), 0u);
}

// SIGTERM (Slurm preemption) stops after the current step with a checkpoint and exit code 130.
TEST(TrainGeneratorCli, SigtermStopsWithACheckpointAndExit130) {
  IDSYNTH_REQUIRE_PROGRAM();
  const std::string dir = test::temp_dir("train_generator_term");
  const std::string config = write_yaml(dir, dir + "/out");
  const pid_t pid = spawn_train(config, false);
  ASSERT_GT(pid, 0);
  while (newest_checkpoint_step(dir + "/out") < 4) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ::kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 130);
  const int step = newest_checkpoint_step(dir + "/out");
  EXPECT_GE(step, 4);
  EXPECT_LT(step, 24);
  EXPECT_FALSE(fs::exists(dir + "/out/model"));
}

TEST(TrainGeneratorCli, BadInputsGiveOneLine) {
  IDSYNTH_REQUIRE_PROGRAM();
  const std::string dir = test::temp_dir("train_generator_bad");
  auto run = [&](const std::string& name, const std::string& sets) {
    fs::create_directories(dir + "/" + name);
    const std::string config = write_yaml(dir + "/" + name, dir + "/" + name + "/out");
    return test::run_command(test::idsynth_binary() + " --log-level error train-generator --config " + config + " " + sets);
  };
  // a config that trains nothing
  auto r = run("nothing", "--set train.unet=false --set train.encoder=false");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("would train nothing"), std::string::npos) << r.err;
  // a LoRA rank larger than a layer
  r = run("rank", "--set train.lora_rank=4000");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("LoRA rank 4000 is larger than"), std::string::npos) << r.err;
  // more devices than pairs in a batch; run.device and run.devices both set
  r = run("devices", "--set run.device=auto --set run.devices=[cpu,cpu,cpu,cpu,cpu]");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("data.batch_size: expected at least one pair per device (5 devices), found 4"), std::string::npos) << r.err;
  r = run("both", "--set run.device=cpu --set run.devices=[cpu,cpu]");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("expected either run.device or run.devices, found both"), std::string::npos) << r.err;
  // ID vectors wider than the encoder takes
  {
    formats::ShardData d = formats::read_shard(pairs_shard());
    const int64_t wide = 40;
    d.dim = wide;
    d.identity_vectors.assign(static_cast<size_t>(kPairs * wide), 0.1f);
    fs::create_directories(dir + "/wide");
    formats::write_shard(dir + "/wide/shard-00000.h5", d);
  }
  r = run("width", "--set data.paths=[" + dir + "/wide/shard-00000.h5]");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(test::count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("the ID vectors are 40 wide, but the encoder"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace idsynth
