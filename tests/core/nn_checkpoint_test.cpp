// The torch.save readers against files written by real PyTorch (Debian's python3-torch), and the
// restricted unpickler against hostile input.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <functional>

#include "core/check.h"
#include "core/file_util.h"
#include "core/json.h"
#include "core/pickle.h"
#include "core/torch_checkpoint.h"
#include "core/weights.h"
#include "tests/support/errors.h"
#include "tests/support/goldens.h"

namespace idsynth {
namespace {

using test::error_of;

// Writes the fixtures once per test binary; empty when PyTorch for Python is unavailable.
const std::string& fixture_dir() {
  static const std::string dir = [] {
    const std::string py = test::python_with_torch();
    if (py.empty()) return std::string();
    const std::string d = test::temp_dir("torch-fixtures");
    const std::string cmd = py + " " IDSYNTH_SOURCE_DIR "/tests/fixtures/torch_checkpoints.py " + d;
    return std::system(cmd.c_str()) == 0 ? d : std::string();
  }();
  return dir;
}

#define REQUIRE_TORCH_FIXTURES()                                                              \
  if (fixture_dir().empty()) {                                                                \
    if (test::goldens_required()) FAIL() << "python3 with torch (python3-torch) is required"; \
    GTEST_SKIP() << "python3-torch not installed: cannot write real torch.save fixtures";     \
  }

struct Expected {
  std::string name, dtype;
  std::vector<int64_t> shape;
  at::Tensor values;
};

std::vector<Expected> expected_tensors() {
  const json::Value list = json::parse_file(fixture_dir() + "/expected.json");
  const std::string blob = read_text_file(fixture_dir() + "/expected.bin");
  std::vector<Expected> out;
  for (const auto& e : list.as_array()) {
    Expected x;
    x.name = e.at("name").as_string();
    x.dtype = e.at("dtype").as_string();
    int64_t numel = 1;
    for (const auto& d : e.at("shape").as_array()) {
      x.shape.push_back(d.as_int());
      numel *= d.as_int();
    }
    const int64_t off = e.at("offset").as_int();
    x.values = at::from_blob(const_cast<char*>(blob.data()) + off * 8, {numel}, at::kDouble).clone().reshape(x.shape);
    out.push_back(std::move(x));
  }
  return out;
}

void expect_matches(const TensorDict& got, const std::string& prefix, const std::string& expected_prefix = "",
                    int min_count = 6) {
  int checked = 0;
  for (const auto& e : expected_tensors()) {
    if (e.name.rfind(expected_prefix, 0) != 0 || (expected_prefix.empty() && e.name.rfind("view.", 0) == 0)) continue;
    const std::string name = prefix + e.name.substr(expected_prefix.size());
    const at::Tensor* t = got.find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(std::vector<int64_t>(t->sizes().begin(), t->sizes().end()), e.shape) << name;
    EXPECT_EQ(std::string(c10::toString(t->scalar_type())), e.dtype == "float32" ? "Float" : std::string(c10::toString(t->scalar_type())));
    EXPECT_TRUE(at::equal(t->to(at::kDouble), e.values)) << name;
    ++checked;
  }
  EXPECT_GE(checked, min_count);
}

TEST(TorchCheckpoint, ZipStateDictWithMetadata) {
  REQUIRE_TORCH_FIXTURES();
  const std::string path = fixture_dir() + "/zip.pt";
  EXPECT_EQ(detect_weight_format(path), WeightFormat::torch_zip);
  TensorDict sd = read_torch_checkpoint(path);
  expect_matches(sd, "");
  EXPECT_EQ(sd.at("extra.half").scalar_type(), at::kHalf);
  EXPECT_EQ(sd.at("extra.bf16").scalar_type(), at::kBFloat16);
  EXPECT_EQ(sd.at("extra.bool").scalar_type(), at::kBool);
  EXPECT_EQ(sd.at("1.num_batches_tracked").scalar_type(), at::kLong);
}

TEST(TorchCheckpoint, LegacyFormat) {
  REQUIRE_TORCH_FIXTURES();
  const std::string path = fixture_dir() + "/legacy.pt";
  EXPECT_EQ(detect_weight_format(path), WeightFormat::torch_legacy);
  expect_matches(read_torch_checkpoint(path), "");
}

TEST(TorchCheckpoint, NestedDictIsFlattened) {
  REQUIRE_TORCH_FIXTURES();
  TensorDict sd = read_torch_checkpoint(fixture_dir() + "/nested.pt");
  expect_matches(sd, "state_dict.");
  EXPECT_FALSE(sd.contains("epoch"));
}

TEST(TorchCheckpoint, SharedStorageViews) {
  REQUIRE_TORCH_FIXTURES();
  TensorDict sd = read_torch_checkpoint(fixture_dir() + "/views.pt");
  expect_matches(sd, "", "view.", 4);
}

TEST(TorchCheckpoint, WriterIsReadByTorchAndByUs) {
  const std::string dir = test::temp_dir("ckpt-write");
  TensorDict in;
  at::manual_seed(1);
  in.insert("a.weight", at::randn({3, 5}));
  in.insert("a.bias", at::randn({3}).to(at::kHalf));
  in.insert("steps", at::scalar_tensor(7, at::kLong));
  in.insert("big", at::randn({100000}));
  save_torch_checkpoint(dir + "/out.bin", in);
  TensorDict back = read_torch_checkpoint(dir + "/out.bin");
  ASSERT_EQ(back.size(), in.size());
  for (const auto& [name, t] : in) EXPECT_TRUE(at::equal(back.at(name), t)) << name;

  if (test::python_with_torch().empty()) return;
  const std::string script = dir + "/check.py";
  std::ofstream(script) << "import sys, torch\n"
                           "sd = torch.load(sys.argv[1])\n"
                           "assert list(sd) == ['a.weight', 'a.bias', 'steps', 'big'], list(sd)\n"
                           "assert sd['a.bias'].dtype == torch.float16 and sd['steps'].item() == 7\n"
                           "print(float(sd['a.weight'].double().sum()), float(sd['big'].double().sum()))\n";
  const std::string cmd = test::python_with_torch() + " " + script + " " + dir + "/out.bin > " + dir + "/out.txt";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream res(dir + "/out.txt");
  double s1 = 0, s2 = 0;
  res >> s1 >> s2;
  EXPECT_DOUBLE_EQ(s1, in.at("a.weight").to(at::kDouble).sum().item<double>());
  EXPECT_DOUBLE_EQ(s2, in.at("big").to(at::kDouble).sum().item<double>());
}

TEST(TorchCheckpoint, TruncatedAndCorruptFilesFailClearly) {
  REQUIRE_TORCH_FIXTURES();
  const std::string dir = test::temp_dir("ckpt-bad");
  for (const char* name : {"zip.pt", "legacy.pt"}) {
    const std::string bytes = read_text_file(fixture_dir() + "/" + name);
    for (size_t cut : {bytes.size() / 2, bytes.size() - 10, size_t{30}}) {
      const std::string p = dir + "/cut.pt";
      std::ofstream(p, std::ios::binary) << bytes.substr(0, cut);
      const std::string err = error_of([&] { read_torch_checkpoint(p); });
      EXPECT_NE(err.find(p), std::string::npos) << name << " cut at " << cut << ": " << err;
    }
  }
  const std::string p = dir + "/garbage.pt";
  std::ofstream(p, std::ios::binary) << "not a checkpoint at all";
  EXPECT_NE(error_of([&] { read_torch_checkpoint(p); }).find("found neither"), std::string::npos);
}

// --- restricted unpickler ---

// A byte string from a literal, embedded NULs included.
#define BYTES(lit) std::string(lit, sizeof(lit) - 1)

std::unique_ptr<pickle::Document> unpickle(const std::string& bytes, std::set<std::string> globals = {}) {
  pickle::Options o;
  o.allowed_globals = std::move(globals);
  return pickle::load(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test.pkl", o);
}

TEST(Pickle, RefusesCodeExecution) {
  // The classic payload: os.system("touch <marker>") through GLOBAL + REDUCE.
  const std::string marker = test::temp_dir("pickle") + "/pwned";
  const std::string payload = std::string("\x80\x02") + "cposix\nsystem\n" + "X" +
                              std::string(1, static_cast<char>(6 + marker.size())) + std::string(3, '\0') + "touch " +
                              marker + "\x85R.";
  const std::string err = error_of([&] { unpickle(payload, {"collections.OrderedDict"}); });
  EXPECT_NE(err.find("refusing global 'posix.system'"), std::string::npos) << err;
  EXPECT_NE(err.find("offset 2"), std::string::npos) << err;
  EXPECT_FALSE(file_exists(marker));
  // Protocol-4 STACK_GLOBAL form, and builtins.eval.
  const std::string p4 = BYTES("\x80\x04\x8c\x08" "builtins" "\x8c\x04" "eval" "\x93" "\x8c\x01" "1" "\x85R.");
  EXPECT_NE(error_of([&] { unpickle(p4); }).find("refusing global 'builtins.eval'"), std::string::npos);
}

TEST(Pickle, UnknownOpcodeTruncationAndNesting) {
  EXPECT_NE(error_of([&] { unpickle(BYTES("\x80\x02\xff.")); }).find("unsupported opcode 0xff"), std::string::npos);
  EXPECT_NE(error_of([&] { unpickle(BYTES("\x80\x02X\xff\xff\x00\x00" "abc")); }).find("runs past the end"), std::string::npos);
  EXPECT_NE(error_of([&] { unpickle("\x80\x02]"); }).find("truncated"), std::string::npos);
  EXPECT_NE(error_of([&] { unpickle(BYTES("\x80\x02h\x05.")); }).find("never stored"), std::string::npos);
  EXPECT_NE(error_of([&] { unpickle("\x80\x02t."); }).find("MARK"), std::string::npos);
  EXPECT_NE(error_of([&] { unpickle("\x80\x02" "a."); }).find("empty stack"), std::string::npos);
  // 100k nested lists: refused by depth, without recursion in the reader or in cleanup.
  std::string deep = "\x80\x02";
  for (int i = 0; i < 100000; ++i) deep += "]";
  for (int i = 0; i < 99999; ++i) deep += "a";
  deep += ".";
  EXPECT_NE(error_of([&] { unpickle(deep); }).find("nesting deeper than"), std::string::npos);
  // A million MARKs then STOP.
  EXPECT_FALSE(error_of([&] { unpickle("\x80\x02" + std::string(1000000, '(') + "N."); }).empty());
}

TEST(Pickle, ReadsPython2And3Data) {
  // (b'ab', [True, 1, -2, 70000, 1.5, None, 'x']) in a mix of protocol-2 opcodes.
  const std::string bytes = BYTES("\x80\x02U\x02" "ab" "]q\x00(\x88K\x01J\xfe\xff\xff\xffJ\x70\x11\x01\x00G?\xf8\x00\x00\x00\x00\x00\x00NX\x01\x00\x00\x00" "xe\x86.");
  auto doc = unpickle(bytes);
  const pickle::Value* root = doc->root();
  ASSERT_TRUE(root->is(pickle::Value::Kind::tuple));
  ASSERT_EQ(root->items.size(), 2u);
  EXPECT_TRUE(root->items[0]->is(pickle::Value::Kind::bytes));
  EXPECT_EQ(root->items[0]->text, "ab");
  const auto& l = root->items[1]->items;
  ASSERT_EQ(l.size(), 7u);
  EXPECT_TRUE(l[0]->boolean);
  EXPECT_EQ(l[1]->integer, 1);
  EXPECT_EQ(l[2]->integer, -2);
  EXPECT_EQ(l[3]->integer, 70000);
  EXPECT_DOUBLE_EQ(l[4]->floating, 1.5);
  EXPECT_TRUE(l[5]->is(pickle::Value::Kind::none));
  EXPECT_EQ(l[6]->text, "x");
}

TEST(Pickle, ReadsGoldenBenchmarkBinFiles) {
  IDSYNTH_REQUIRE_GOLDEN(dir, "verification");
  for (const char* name : {"tiny_py2_proto2.bin", "tiny_py3_proto2.bin", "tiny_py3_proto4.bin", "tiny_py2_proto2_png.bin"}) {
    SCOPED_TRACE(name);
    const std::string bytes = read_text_file(dir + "/" + name);
    auto doc = unpickle(bytes, {"_codecs.encode"});
    const pickle::Value* root = doc->root();
    ASSERT_TRUE(root->is(pickle::Value::Kind::tuple));
    ASSERT_EQ(root->items.size(), 2u);
    ASSERT_EQ(root->items[0]->items.size(), 12u);
    ASSERT_EQ(root->items[1]->items.size(), 6u);
    for (const auto* img : root->items[0]->items) {
      ASSERT_TRUE(img->is(pickle::Value::Kind::bytes));
      EXPECT_GT(img->text.size(), 1000u);
    }
    const bool expected[] = {true, false, false, true, false, false};
    for (int i = 0; i < 6; ++i) EXPECT_EQ(root->items[1]->items[i]->boolean, expected[i]);
  }
}

}  // namespace
}  // namespace idsynth
