#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cmath>

#include "core/check.h"
#include "core/json.h"
#include "core/weights.h"
#include "tests/support/goldens.h"

namespace idsynth {
namespace {

TEST(Json, AcceptsPythonNonFiniteNumbersAndRoundTrips) {
  const auto v = json::parse(R"({"a": -Infinity, "b": NaN, "c": Infinity, "d": [1, 2.5, "x\u00e9", null, true], "e": 1e-3})");
  EXPECT_TRUE(std::isinf(v.at("a").as_double()) && v.at("a").as_double() < 0);
  EXPECT_TRUE(std::isnan(v.at("b").as_double()));
  EXPECT_EQ(v.at("d").as_array()[2].as_string(), "x\xc3\xa9");
  EXPECT_TRUE(v.at("d").as_array()[0].is_integer());
  const auto again = json::parse(v.dump(2));
  EXPECT_EQ(again.dump(), v.dump());
  EXPECT_EQ(json::parse("0.1").dump(), "0.1");
}

TEST(Json, GoldenSchedulerConfigWithMinusInfinity) {
  IDSYNTH_REQUIRE_GOLDEN(path, "pipeline_tiny/pipeline/scheduler/scheduler_config.json");
  const auto v = json::parse_file(path);
  EXPECT_TRUE(std::isinf(v.at("lambda_min_clipped").as_double()));
  EXPECT_EQ(v.at("algorithm_type").as_string(), "dpmsolver++");
}

TEST(Json, ErrorsNameSourceAndOffset) {
  try {
    json::parse("{\"a\": [1, 2,, 3]}", "cfg.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cfg.json: JSON error at offset 12"), std::string::npos) << e.what();
  }
  EXPECT_THROW(json::parse(std::string(100, '[') + std::string(100, ']')), Error);  // depth bound
  EXPECT_THROW(json::parse("{\"a\": 1} x"), Error);
  EXPECT_THROW(json::parse("\"unterminated"), Error);
  EXPECT_THROW(json::parse("[1,]"), Error);
  EXPECT_THROW(json::parse("{\"k\": 1}").at("k").as_string("k"), Error);
}

struct TinyNetImpl : torch::nn::Module {
  TinyNetImpl() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3)));
    bn = register_module("bn", torch::nn::BatchNorm2d(4));
    fc = register_module("fc", torch::nn::Linear(8, 2));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  torch::nn::Linear fc{nullptr};
};
TORCH_MODULE(TinyNet);

TEST(Weights, StrictLoadListsEveryProblemAtOnce) {
  TinyNet net;
  TensorDict w = module_state(*net);
  TensorDict bad;
  bad.set_source("model.safetensors");
  for (const auto& [name, t] : w) {
    if (name == "fc.bias") continue;                                      // missing
    if (name == "conv.weight") bad.insert(name, at::zeros({4, 3, 5, 5}));  // wrong shape
    else bad.insert(name, t.clone());
  }
  bad.insert("head.weight", at::zeros({1}));  // unexpected
  try {
    load_state_dict(*net, bad);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model.safetensors"), std::string::npos);
    EXPECT_NE(msg.find("1 missing, 1 unexpected, 1 with the wrong shape"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fc.bias [2]"), std::string::npos);
    EXPECT_NE(msg.find("head.weight [1]"), std::string::npos);
    EXPECT_NE(msg.find("conv.weight: expected [4, 3, 3, 3], found [4, 3, 5, 5]"), std::string::npos);
  }
}

TEST(Weights, LoadConvertsDtypeAndHonoursIgnoreList) {
  TinyNet src, dst;
  TensorDict w;
  w.set_source("half.bin");
  for (const auto& [name, t] : module_state(*src)) w.insert("model." + name, t.to(t.is_floating_point() ? at::kHalf : t.scalar_type()));
  w.insert("model.position_ids", at::arange(3));
  LoadOptions opts;
  opts.strip_prefix = "model.";
  opts.ignore_unexpected = {"model.position_ids"};
  load_state_dict(*dst, w, opts);
  EXPECT_EQ(dst->fc->weight.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(dst->fc->weight, src->fc->weight.to(at::kHalf).to(at::kFloat)));
}

}  // namespace
}  // namespace idsynth
