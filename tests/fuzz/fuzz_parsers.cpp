// libFuzzer entry points for every reader of untrusted bytes, one per parser. Each fuzz_<name>
// executable (tests/fuzz/CMakeLists.txt) is a two-line main that calls one of these, so coverage and
// execution counts are per parser. Any idsynth::Error is an accepted outcome; a crash, a sanitizer
// report, a hang or running out of memory is a bug.
//
// Seeds: `IDSYNTH_FUZZ_SEEDS=DIR fuzz_<name>` writes the target's seed corpus into DIR (from the
// goldens in $IDSYNTH_GOLDENS and from idsynth's own writers) and exits. scripts/fuzz.sh does this.
#include "tests/fuzz/fuzz_parsers.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/config.h"
#include "core/json.h"
#include "core/log.h"
#include "core/onnx_model.h"
#include "core/pickle.h"
#include "core/safetensors.h"
#include "core/torch_checkpoint.h"
#include "formats/bin_pack.h"
#include "formats/image.h"
#include "formats/npy.h"
#include "formats/recordio.h"
#include "formats/shard_file.h"

namespace fs = std::filesystem;

// libhdf5's metadata checksum (exported, not in its public headers).
extern "C" uint32_t H5_checksum_metadata(const void* data, size_t len, uint32_t initval);

namespace idsynth::fuzz {

// A scratch file per process and target (readers that take a path, mmap or libhdf5).
// In $IDSYNTH_FUZZ_TMP (scripts/fuzz.sh makes one per run and removes it), else /dev/shm.
std::string scratch(const char* tag, const char* ext) {
  const char* dir = std::getenv("IDSYNTH_FUZZ_TMP");
  return std::string(dir ? dir : "/dev/shm") + "/idsynth-fuzz-" + std::to_string(::getpid()) + "-" + tag + ext;
}

void write_bytes(const std::string& path, const void* data, size_t size) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  IDSYNTH_CHECK(f.good(), path, ": cannot write the fuzz input");
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Runs one input; idsynth::Error (and libtorch's own clean c10::Error) are accepted outcomes.
// IDSYNTH_FUZZ_VERBOSE=1 prints each rejection (to see how far the seeds get).
int guarded(const std::function<void()>& body) {
  static const bool verbose = std::getenv("IDSYNTH_FUZZ_VERBOSE") != nullptr;
  try {
    body();
  } catch (const idsynth::Error& e) {
    if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
  } catch (const c10::Error& e) {
    if (verbose) std::fprintf(stderr, "rejected (libtorch): %s\n", e.what_without_backtrace());
  }
  return 0;
}

namespace {

// Touches every element, so a tensor that aliases out-of-range memory is caught by ASan.
void consume(const at::Tensor& t) {
  if (t.numel() > 0) (void)t.to(at::kDouble).sum().item<double>();
}

const std::vector<std::string> kCheckpointGlobals = {
    "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
    "torch.FloatStorage",      "torch.HalfStorage",               "torch.LongStorage",
    "torch._tensor._rebuild_from_type_v2", "_codecs.encode"};

// ---------------------------------------------------------------------------------------------
// Seed helpers

std::string goldens() {
  const char* g = std::getenv("IDSYNTH_GOLDENS");
  return g ? g : IDSYNTH_SOURCE_DIR "/../shared/goldens";
}

void seed(const std::string& dir, const std::string& name, const std::string& bytes) {
  write_bytes(dir + "/" + name, bytes.data(), bytes.size());
}

// Copies golden files (relative paths) no larger than max_bytes.
void seed_goldens(const std::string& dir, const std::vector<std::string>& relative, size_t max_bytes = 1 << 20) {
  for (const auto& r : relative) {
    const fs::path p = fs::path(goldens()) / r;
    std::error_code ec;
    if (!fs::is_regular_file(p, ec) || fs::file_size(p, ec) > max_bytes) continue;
    std::string name = r;
    for (char& c : name)
      if (c == '/') c = '_';
    seed(dir, name, read_bytes(p.string()));
  }
}

std::vector<std::string> goldens_with_ext(const std::string& ext, size_t max_bytes) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(goldens(), ec)) return out;
  for (const auto& e : fs::recursive_directory_iterator(goldens(), ec))
    if (e.is_regular_file() && e.path().extension() == ext && e.file_size() <= max_bytes)
      out.push_back(fs::relative(e.path(), goldens()).string());
  std::sort(out.begin(), out.end());
  return out;
}

at::Tensor small_tensor(at::ScalarType t, std::vector<int64_t> shape) {
  return at::arange(0, c10::multiply_integers(shape), at::kDouble).reshape(shape).to(t);
}

std::string le64(uint64_t v) { return std::string(reinterpret_cast<const char*>(&v), 8); }

// A string literal with its embedded NUL bytes.
template <size_t N>
std::string lit(const char (&s)[N]) {
  return std::string(s, N - 1);
}

// A legacy (pre-1.6, non-zip) torch.save file of {"w": FloatTensor[2]}, written opcode by opcode:
// magic number, protocol version, sys info, the object (storages as persistent ids), the storage
// keys, then each storage's element count and bytes.
std::string legacy_checkpoint() {
  const std::string magic = lit("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
  const std::string proto = lit("\x80\x02M\xe9\x03.");
  const std::string sys = lit("\x80\x02}(X\x0d\x00\x00\x00little_endian\x88u.");
  const std::string obj =
      lit("\x80\x02" "ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00w") +
      lit("ctorch._utils\n_rebuild_tensor_v2\n(") +
      lit("(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuK\x02NtQ") +
      lit("K\x00K\x02\x85K\x01\x85\x89" "ccollections\nOrderedDict\n)RtRu.");
  const std::string keys = lit("\x80\x02]X\x01\x00\x00\x00" "0a.");
  const float data[2] = {1.5f, -2.0f};
  return magic + proto + sys + obj + keys + le64(2) + std::string(reinterpret_cast<const char*>(data), 8);
}

std::string tiny_image(const char* ext, int w, int h) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) m.at<cv::Vec3b>(y, x) = cv::Vec3b(uint8_t(x * 40), uint8_t(y * 40), uint8_t(x ^ y));
  return formats::encode_image_rgb(m, ext, 80);
}

// ---------------------------------------------------------------------------------------------
// A config with every field kind the YAML reader knows, nested sections, ranges and choices.

struct FuzzModel {
  std::string name = "arc2face";
  std::vector<std::string> devices = {"cpu"};
  std::vector<std::string> loras;
  double guidance = 3.0;
  void visit(config::Visitor& v) {
    v.field("name", name, "model name", {"arc2face", "tiny"});
    v.field("devices", devices, "devices");
    v.path_scale_list("loras", loras, "LoRA files");
    v.field("guidance", guidance, "guidance scale", config::RealRange{0.0, 50.0});
  }
};
struct FuzzConfig {
  int64_t steps = 25;
  int64_t seed = 0;
  double eta = 0.0;
  bool flag = false;
  std::string out = "out";
  FuzzModel model;
  void visit(config::Visitor& v) {
    v.field("steps", steps, "steps", config::IntRange{1, 1000});
    v.field("seed", seed, "seed");
    v.field("eta", eta, "eta");
    v.field("flag", flag, "flag");
    v.field("out", out, "output folder");
    v.section("model", model, "the model");
  }
  void check() const {}
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Entry points

int safetensors(const uint8_t* data, size_t size) {
  static const std::string path = scratch("st", ".safetensors");
  write_bytes(path, data, size);
  return guarded([&] {
    SafeTensorsFile f(path);
    for (const auto& info : f.infos()) consume(f.tensor(info.name));
  });
}

int pickle(const uint8_t* data, size_t size) {
  return guarded([&] {
    // The first byte picks the caller's allow-list: checkpoints or benchmark .bin files.
    if (size < 1) return;
    pickle::Options o;
    if (data[0] & 1)
      o.allowed_globals = {kCheckpointGlobals.begin(), kCheckpointGlobals.end()};
    else
      o.allowed_globals = {"_codecs.encode", "numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"};
    o.py2_strings_as_bytes = (data[0] & 2) != 0;
    o.max_stack = 1 << 16;
    o.max_memo = 1 << 16;
    auto doc = pickle::load(data + 1, size - 1, "fuzz", o);
    if (doc->root()) (void)pickle::describe(*doc->root(), 200);
  });
}

int torch_checkpoint(const uint8_t* data, size_t size) {
  return guarded([&] {
    for (const auto& [name, t] : read_torch_checkpoint_bytes(data, size, "fuzz")) consume(t);
  });
}

int onnx(const uint8_t* data, size_t size) {
  return guarded([&] {
    OnnxModel m = OnnxModel::from_bytes(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    // Run the graph once when every input has a small fixed shape.
    std::vector<at::Tensor> in;
    for (const auto& i : m.inputs()) {
      int64_t numel = 1;
      for (int64_t d : i.shape) numel = (d < 1 || numel > 4096) ? -1 : numel * d;
      if (numel < 0 || numel > 4096) return;
      in.push_back(at::zeros(i.shape));
    }
    for (const auto& t : m.run(in)) consume(t);
  });
}

int recordio(const uint8_t* data, size_t size) {
  // Input: the .idx text, a NUL byte, the .rec bytes.
  static const std::string rec = scratch("rio", ".rec"), idx = scratch("rio", ".idx");
  const uint8_t* nul = static_cast<const uint8_t*>(std::memchr(data, 0, size));
  const size_t idx_size = nul ? static_cast<size_t>(nul - data) : size;
  write_bytes(idx, data, idx_size);
  write_bytes(rec, data + std::min(size, idx_size + 1), size - std::min(size, idx_size + 1));
  return guarded([&] {
    formats::RecordIOReader reader(rec, idx);
    for (uint64_t key : reader.keys()) {
      std::string payload;
      try {
        formats::unpack_irheader(reader.read(key), &payload, "fuzz");
      } catch (const idsynth::Error&) {
      }
    }
  });
}

int bin_pack(const uint8_t* data, size_t size) {
  static const std::string path = scratch("bin", ".bin");
  write_bytes(path, data, size);
  return guarded([&] {
    const formats::BinPack pack = formats::read_bin(path);
    if (pack.num_images() > 0) consume(formats::decode_bin_images(pack, 0, std::min<int64_t>(2, pack.num_images())));
  });
}

int npy(const uint8_t* data, size_t size) {
  return guarded([&] { consume(formats::parse_npy(std::string(reinterpret_cast<const char*>(data), size), "fuzz")); });
}

int npz(const uint8_t* data, size_t size) {
  static const std::string path = scratch("npz", ".npz");
  write_bytes(path, data, size);
  return guarded([&] {
    for (const auto& [name, t] : formats::read_npz(path)) consume(t);
  });
}

int hdf5_shard(const uint8_t* data, size_t size) {
  // A new file (new inode) per input: libhdf5 recognises a file it still holds open by its inode,
  // so one input's leftovers would otherwise decide how the next one opens.
  static const std::string base = scratch("shard", "");
  static uint64_t n = 0;
  const std::string path = base + "-" + std::to_string(n++ % 2) + ".h5";
  std::remove(path.c_str());
  write_bytes(path, data, size);
  struct After {
    // Every HDF5 object the reader opened must be closed when it returns, error or not; a leftover
    // one is a leaked handle (reported, and the library reset so the next input starts clean).
    ~After() {
      const ssize_t open = H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL);
      if (open > 0) {
        std::fprintf(stderr, "fuzz_hdf5_shard: %zd HDF5 objects left open after the reader returned\n", open);
        if (std::getenv("IDSYNTH_FUZZ_HDF5_STRICT")) std::abort();
        H5close();
      }
    }
  } after;
  return guarded([&] {
    // Version 2 only: version-1 shards keep variable-length data, which libhdf5 1.10 cannot read
    // safely from a crafted file (docs/reliability.md, finding 9); they are trusted input.
    const formats::ShardData s = formats::read_shard(path, /*accept_version_1=*/false);
    (void)s.size();
    for (const char* which : {"images", "aligned"}) {
      try {
        formats::ShardImageReader r(path, which, /*accept_version_1=*/false);
        for (int64_t i = 0; i < static_cast<int64_t>(r.labels().size()) && i < 4; ++i) (void)r.read(i);
      } catch (const idsynth::Error&) {
      }
    }
  });
}

int json(const uint8_t* data, size_t size) {
  return guarded([&] {
    const json::Value v = json::parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
    (void)v.dump();
  });
}

int yaml_config(const uint8_t* data, size_t size) {
  // Input: the YAML file; a last line "--set key=value" is also applied as an override. The file
  // lies in a folder of its own, so relative `include:`s name files that do not exist.
  static const std::string dir = [] {
    const std::string d = scratch("cfg", "");
    fs::create_directories(d);
    return d;
  }();
  const std::string path = dir + "/config.yaml";
  std::string text(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> overrides;
  const auto nl = text.rfind('\n');
  if (nl != std::string::npos && text.compare(nl + 1, 6, "--set ") == 0) {
    overrides.push_back(text.substr(nl + 7));
    text.resize(nl);
  }
  write_bytes(path, text.data(), text.size());
  return guarded([&] {
    const FuzzConfig cfg = config::load<FuzzConfig>(path, overrides);
    (void)config::to_yaml(cfg, true);
  });
}

int image(const uint8_t* data, size_t size) {
  return guarded([&] {
    const cv::Mat m = formats::decode_image_rgb(data, size, "fuzz");
    (void)cv::sum(m);
  });
}

// ---------------------------------------------------------------------------------------------
// Seeds

void write_seeds(const std::string& target, const std::string& dir) {
  fs::create_directories(dir);
  const std::string tmp = scratch("seed", "");
  if (target == "safetensors") {
    seed_goldens(dir, goldens_with_ext(".safetensors", 64 << 10));
    save_safetensors(tmp, {{"a", small_tensor(at::kFloat, {2, 3})}, {"b", small_tensor(at::kHalf, {4})},
                           {"c", small_tensor(at::kBFloat16, {1, 2, 1})}, {"d", small_tensor(at::kLong, {3})},
                           {"e", small_tensor(at::kBool, {2})}, {"f", small_tensor(at::kFloat, {0})}},
                     {{"format", "pt"}});
    seed(dir, "written.safetensors", read_bytes(tmp));
  } else if (target == "pickle") {
    for (const auto& r : goldens_with_ext(".bin", 128 << 10)) seed(dir, "bin-" + fs::path(r).filename().string(), '\x00' + read_bytes(goldens() + "/" + r));
    const std::string legacy = legacy_checkpoint();
    seed(dir, "legacy-magic", '\x01' + legacy.substr(0, 15));
    seed(dir, "legacy-object", '\x01' + legacy.substr(legacy.find("\x80\x02" "ccollections")));
  } else if (target == "torch_checkpoint") {
    TensorDict d;
    d.insert("conv.weight", small_tensor(at::kFloat, {2, 1, 2, 2}));
    d.insert("bn.num_batches_tracked", small_tensor(at::kLong, {}));
    d.insert("half", small_tensor(at::kHalf, {3}));
    save_torch_checkpoint(tmp, d);
    seed(dir, "zip.pt", read_bytes(tmp));
    seed(dir, "legacy.pt", legacy_checkpoint());
  } else if (target == "onnx") {
    seed_goldens(dir, goldens_with_ext(".onnx", 256 << 10));
  } else if (target == "recordio") {
    const std::string rec = tmp + ".rec", idx = tmp + ".idx";
    formats::write_recordio(rec, idx, {tiny_image(".png", 2, 2), tiny_image(".jpg", 3, 2), std::string("xyz")},
                            {0, 1, 7});
    seed(dir, "three-records", read_bytes(idx) + '\0' + read_bytes(rec));
    std::remove(rec.c_str());
    std::remove(idx.c_str());
  } else if (target == "bin_pack") {
    seed_goldens(dir, goldens_with_ext(".bin", 128 << 10));
  } else if (target == "npy" || target == "npz") {
    const std::vector<std::pair<std::string, at::Tensor>> arrays = {
        {"f4", small_tensor(at::kFloat, {2, 3})}, {"i8", small_tensor(at::kLong, {4})},
        {"u1", small_tensor(at::kByte, {2, 1, 2})}, {"f2", small_tensor(at::kHalf, {1})},
        {"f8", small_tensor(at::kDouble, {})},      {"b1", small_tensor(at::kBool, {3})}};
    if (target == "npy") {
      for (const auto& [name, t] : arrays) seed(dir, name + ".npy", formats::serialize_npy(t));
      seed(dir, "fortran.npy", "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }" +
                                   std::string(0x76 - 62, ' ') + "\n" + std::string(16, '\x01'));
    } else {
      formats::write_npz(tmp, arrays, true);
      seed(dir, "compressed.npz", read_bytes(tmp));
      formats::write_npz(tmp, {arrays[0], arrays[2]}, false);
      seed(dir, "stored.npz", read_bytes(tmp));
    }
  } else if (target == "hdf5_shard") {
    formats::ShardData s;
    s.shard_index = 3;
    s.config = "seed: 1\n";
    s.model_files = "{\"unet\": \"00\"}";
    s.identity_index = {0, 1};
    s.dim = 2;
    s.identity_vectors = {1, 0, 0, 1};
    s.labels = {0, 1};
    s.image_index = {0, 0};
    s.attempt = {0, 1};
    s.seed = {11, 12};
    s.similarity = {0.5f, 0.6f};
    s.images = {tiny_image(".jpg", 2, 2), tiny_image(".jpg", 2, 2)};
    s.aligned = s.images;
    // The superblock (version 2) checksum is recomputed: write_shard's in-memory image has carried a
    // stale one (files HDF5 then refuses), and a seed HDF5 cannot open would cover nothing.
    auto shard_bytes = [&] {
      formats::write_shard(tmp, s);
      std::string b = read_bytes(tmp);
      if (b.size() >= 48 && b[8] == 2) {
        const uint32_t sum = H5_checksum_metadata(b.data(), 44, 0);
        std::memcpy(&b[44], &sum, 4);
      }
      return b;
    };
    seed(dir, "two-images.h5", shard_bytes());
    s.has_aligned = false;
    s.aligned.clear();
    seed(dir, "no-aligned.h5", shard_bytes());
  } else if (target == "json") {
    seed_goldens(dir, goldens_with_ext(".json", 32 << 10));
    seed(dir, "special.json", R"({"a": [1, -2.5e3, NaN, Infinity, -Infinity, true, false, null], "b": "\u00e9\n"})");
  } else if (target == "yaml_config") {
    // configs/ has sub-folders (configs/miniature/); every YAML file under it is a seed, named
    // after its path so two folders' "generate.yaml" do not overwrite each other.
    const fs::path configs = IDSYNTH_SOURCE_DIR "/configs";
    for (const auto& e : fs::recursive_directory_iterator(configs)) {
      if (!e.is_regular_file()) continue;
      std::string name = fs::relative(e.path(), configs).string();
      for (char& c : name)
        if (c == '/') c = '_';
      seed(dir, name, read_bytes(e.path().string()));
    }
    seed(dir, "fuzz.yaml", "steps: 30\nseed: 7\neta: 0.5\nflag: true\nout: \"x y\"\n"
                           "model:\n  name: tiny\n  devices: [cpu, cuda:0]\n  loras: [{path: a.safetensors, scale: 0.5}, b.pt:2]\n  guidance: 2.5\n--set model.guidance=4");
    seed(dir, "include.yaml", "include: [base.yaml]\nsteps: 3\n");
  } else if (target == "image") {
    seed(dir, "tiny.png", tiny_image(".png", 3, 2));
    seed(dir, "tiny.jpg", tiny_image(".jpg", 3, 2));
    seed(dir, "tiny.bmp", tiny_image(".bmp", 3, 2));
    seed_goldens(dir, {"align/crop_112_0.png"});
  }
  std::remove(tmp.c_str());
}

void quiet() { log::set_threshold(log::Level::quiet); }

}  // namespace idsynth::fuzz
