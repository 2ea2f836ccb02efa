#include "core/torch_checkpoint.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>
#include <caffe2/serialize/read_adapter_interface.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <unordered_set>

#include "core/check.h"
#include "core/file_util.h"
#include "core/log.h"
#include "core/pickle.h"

namespace idsynth {
namespace {

using pickle::Value;
using Kind = pickle::Value::Kind;

const std::map<std::string, at::ScalarType>& storage_types() {
  static const std::map<std::string, at::ScalarType> table = {
      {"torch.FloatStorage", at::kFloat},   {"torch.DoubleStorage", at::kDouble}, {"torch.HalfStorage", at::kHalf},
      {"torch.BFloat16Storage", at::kBFloat16}, {"torch.LongStorage", at::kLong}, {"torch.IntStorage", at::kInt},
      {"torch.ShortStorage", at::kShort},   {"torch.CharStorage", at::kChar},     {"torch.ByteStorage", at::kByte},
      {"torch.BoolStorage", at::kBool},
  };
  return table;
}

pickle::Options checkpoint_pickle_options() {
  pickle::Options o;
  o.allowed_globals = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
                       "torch._utils._rebuild_parameter"};
  for (const auto& kv : storage_types()) o.allowed_globals.insert(kv.first);
  return o;
}

// Bounds-checked in-memory source for the zip reader (the stock adapter copies blindly).
class CheckedMemoryAdapter final : public caffe2::serialize::ReadAdapterInterface {
 public:
  CheckedMemoryAdapter(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t size() const override { return size_; }
  size_t read(uint64_t pos, void* buf, size_t n, const char* /*what*/) const override {
    if (pos >= size_) return 0;
    size_t count = std::min<uint64_t>(n, size_ - pos);
    std::memcpy(buf, data_ + pos, count);
    return count;
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

// A storage as the pickle names it, resolved to a flat CPU tensor by the format's loader.
struct StorageRef {
  std::string key;
  at::ScalarType dtype;
  int64_t numel;
};

class CheckpointDecoder {
 public:
  explicit CheckpointDecoder(std::string source) : source_(std::move(source)) {}

  // pid: ('storage', storage_type, key, location, numel[, view_metadata])
  StorageRef storage_ref(const Value& pid) {
    IDSYNTH_CHECK(pid.items.size() >= 5 && pid.items[0]->is(Kind::string) && pid.items[0]->text == "storage", source_,
                  ": persistent id: expected ('storage', type, key, location, numel), found ", pickle::describe(pid));
    const Value& type = *pid.items[1];
    IDSYNTH_CHECK(type.is(Kind::global), source_, ": storage type: expected a torch.*Storage class, found ", pickle::describe(type));
    auto it = storage_types().find(type.text);
    IDSYNTH_CHECK(it != storage_types().end(), source_, ": storage type: unsupported ", type.text);
    IDSYNTH_CHECK(pid.items[2]->is(Kind::string), source_, ": storage key: expected a string, found ", pickle::describe(*pid.items[2]));
    IDSYNTH_CHECK(pid.items[3]->is(Kind::string), source_, ": storage location: expected a string, found ", pickle::describe(*pid.items[3]));
    IDSYNTH_CHECK(pid.items[4]->is(Kind::integer) && !pid.items[4]->big_integer && pid.items[4]->integer >= 0, source_,
                  ": storage size: expected a non-negative integer, found ", pickle::describe(*pid.items[4]));
    if (pid.items.size() > 5)
      IDSYNTH_CHECK(pid.items[5]->is(Kind::none), source_, ": storage '", pid.items[2]->text,
                    "': storage views (legacy view_metadata) are not supported");
    return {pid.items[2]->text, it->second, pid.items[4]->integer};
  }

  // Walks the unpickled object; storages are resolved through `load_storage`. The pickle memo lets
  // one dictionary stand under many keys, so a hostile file of dictionaries each holding the next
  // one twice names 2^depth entries: the walk stops at kMaxEntries (found by fuzzing).
  static constexpr size_t kMaxEntries = size_t{1} << 22;
  template <typename LoadStorage>
  void collect(const Value& v, const std::string& prefix, TensorDict& out, LoadStorage&& load_storage, size_t depth = 0) {
    IDSYNTH_CHECK(depth < 64, source_, ": nesting deeper than 64 dictionaries");
    IDSYNTH_CHECK(++entries_ <= kMaxEntries, source_, ": more than ", kMaxEntries,
                  " entries in the checkpoint's dictionaries (one dictionary shared under many keys?)");
    if (v.is(Kind::dict)) {
      for (const auto& [k, val] : v.entries) {
        std::string key;
        if (k->is(Kind::string) || k->is(Kind::bytes)) key = k->text;
        else if (k->is(Kind::integer) && !k->big_integer) key = std::to_string(k->integer);
        else continue;
        collect(*val, prefix.empty() ? key : prefix + "." + key, out, load_storage, depth + 1);
      }
      return;
    }
    if (v.is(Kind::object)) {
      out.insert(prefix, rebuild(v, load_storage));
      return;
    }
    LOG_DBG(source_, ": skipping non-tensor entry '", prefix, "' (", v.kind_name(), ")");
  }

 private:
  size_t entries_ = 0;
  static std::vector<int64_t> int_tuple(const Value& v, const std::string& what, const std::string& source) {
    IDSYNTH_CHECK(v.is(Kind::tuple) || v.is(Kind::list), source, ": ", what, ": expected a tuple of ints, found ", pickle::describe(v));
    std::vector<int64_t> out;
    for (const Value* it : v.items) {
      IDSYNTH_CHECK(it->is(Kind::integer) && !it->big_integer && it->integer >= 0, source, ": ", what,
                    ": expected non-negative ints, found ", pickle::describe(*it));
      out.push_back(it->integer);
    }
    return out;
  }

  template <typename LoadStorage>
  at::Tensor rebuild(const Value& obj, LoadStorage&& load_storage) {
    if (obj.text == "torch._utils._rebuild_parameter") {
      IDSYNTH_CHECK(!obj.items.empty() && obj.items[0]->is(Kind::object), source_,
                    ": _rebuild_parameter: expected a tensor argument");
      return rebuild(*obj.items[0], load_storage);
    }
    IDSYNTH_CHECK(obj.text == "torch._utils._rebuild_tensor_v2" || obj.text == "torch._utils._rebuild_tensor", source_,
                  ": expected a tensor rebuild, found a call of ", obj.text);
    IDSYNTH_CHECK(obj.items.size() >= 4, source_, ": ", obj.text, ": expected at least 4 arguments, found ", obj.items.size());
    IDSYNTH_CHECK(obj.items[0]->is(Kind::persistent), source_, ": ", obj.text, ": expected a storage, found ",
                  pickle::describe(*obj.items[0]));
    StorageRef ref = storage_ref(*obj.items[0]);
    IDSYNTH_CHECK(obj.items[1]->is(Kind::integer) && !obj.items[1]->big_integer && obj.items[1]->integer >= 0, source_,
                  ": storage offset: expected a non-negative int");
    const int64_t offset = obj.items[1]->integer;
    std::vector<int64_t> sizes = int_tuple(*obj.items[2], "tensor size", source_);
    std::vector<int64_t> strides = int_tuple(*obj.items[3], "tensor stride", source_);
    IDSYNTH_CHECK(sizes.size() == strides.size(), source_, ": tensor of storage '", ref.key, "': ", sizes.size(),
                  " sizes but ", strides.size(), " strides");
    // Highest element index the view touches must lie inside the storage.
    bool empty = false;
    uint64_t last = static_cast<uint64_t>(offset);
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (sizes[i] == 0) empty = true;
      IDSYNTH_CHECK(sizes[i] < (int64_t{1} << 40) && strides[i] < (int64_t{1} << 40), source_, ": tensor of storage '",
                    ref.key, "': implausible size or stride");
      if (sizes[i] > 0) last += static_cast<uint64_t>(sizes[i] - 1) * static_cast<uint64_t>(strides[i]);
    }
    at::Tensor storage = load_storage(ref);
    if (empty) return at::empty(sizes, at::TensorOptions().dtype(ref.dtype));
    IDSYNTH_CHECK(last < static_cast<uint64_t>(storage.numel()), source_, ": tensor of storage '", ref.key, "' ",
                  shape_string(sizes), " at offset ", offset, ": reaches element ", last, " of a storage of ",
                  storage.numel());
    return storage.as_strided(sizes, strides, offset);
  }

  std::string source_;
};

std::string record_prefix_error(const std::string& source, const c10::Error& e) {
  std::string msg = e.what_without_backtrace();
  auto nl = msg.find('\n');
  if (nl != std::string::npos) msg = msg.substr(0, nl);
  return cat(source, ": not a readable PyTorch zip checkpoint (", msg, ")");
}

TensorDict read_zip(caffe2::serialize::PyTorchStreamReader& reader, const std::string& source) {
  IDSYNTH_CHECK(reader.hasRecord("data.pkl"), source, ": zip checkpoint: expected a data.pkl record, found none");
  auto [pkl_ptr, pkl_size] = reader.getRecord("data.pkl");
  auto doc = pickle::load(static_cast<const uint8_t*>(pkl_ptr.get()), pkl_size, source + ":data.pkl", checkpoint_pickle_options());
  CheckpointDecoder decoder(source);
  std::map<std::string, at::Tensor> storages;
  auto load_storage = [&](const StorageRef& ref) -> at::Tensor {
    auto it = storages.find(ref.key);
    if (it != storages.end()) {
      IDSYNTH_CHECK(it->second.scalar_type() == ref.dtype, source, ": storage '", ref.key, "' used with two dtypes");
      return it->second;
    }
    const std::string name = "data/" + ref.key;
    IDSYNTH_CHECK(reader.hasRecord(name), source, ": storage record '", name, "': expected in the archive, found none");
    auto [ptr, size] = reader.getRecord(name);
    const uint64_t need = static_cast<uint64_t>(ref.numel) * at::elementSize(ref.dtype);
    IDSYNTH_CHECK(size >= need, source, ": storage record '", name, "': expected ", need, " bytes, found ", size);
    at::Tensor t = at::empty({ref.numel}, at::TensorOptions().dtype(ref.dtype));
    if (need > 0) std::memcpy(t.data_ptr(), ptr.get(), need);
    storages.emplace(ref.key, t);
    return t;
  };
  TensorDict out;
  out.set_source(source);
  decoder.collect(*doc->root(), "", out, load_storage);
  return out;
}

// Legacy format: several pickles in a row, then the storages' raw bytes.
TensorDict read_legacy(const uint8_t* data, size_t size, const std::string& source) {
  pickle::Options meta_opts;
  size_t pos = 0;
  auto next = [&](const pickle::Options& opts, const char* what) {
    IDSYNTH_CHECK(pos < size, source, ": legacy checkpoint: expected the ", what, " pickle, found end of file");
    auto doc = pickle::load(data + pos, size - pos, source, opts);
    pos += doc->end_offset();
    return doc;
  };
  auto magic = next(meta_opts, "magic number");
  static const uint8_t kMagic[] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};
  IDSYNTH_CHECK(magic->root()->big_integer && magic->root()->text == std::string(reinterpret_cast<const char*>(kMagic), 10),
                source, ": legacy checkpoint: expected the torch.save magic number, found ", pickle::describe(*magic->root()));
  auto proto = next(meta_opts, "protocol version");
  IDSYNTH_CHECK(proto->root()->is(Kind::integer) && proto->root()->integer == 1001, source,
                ": legacy checkpoint: expected protocol version 1001, found ", pickle::describe(*proto->root()));
  auto sys_info = next(meta_opts, "sys info");
  const Value* le = sys_info->root()->get("little_endian");
  IDSYNTH_CHECK(le && le->is(Kind::boolean) && le->boolean, source, ": legacy checkpoint: only little-endian files are supported");
  auto main = next(checkpoint_pickle_options(), "object");
  auto keys = next(meta_opts, "storage keys");
  IDSYNTH_CHECK(keys->root()->is(Kind::list), source, ": legacy checkpoint: expected a list of storage keys, found ",
                pickle::describe(*keys->root()));

  // The object pickle names each storage's type and size; collect them first. The memo lets one
  // value appear many times (and inside itself), so each is visited once: a hostile pickle of lists
  // each holding the next one twice would otherwise take 2^depth steps (found by fuzzing).
  CheckpointDecoder decoder(source);
  std::map<std::string, StorageRef> refs;
  std::vector<const Value*> todo = {main->root()};
  std::unordered_set<const Value*> seen = {main->root()};
  while (!todo.empty()) {
    const Value* v = todo.back();
    todo.pop_back();
    if (v->is(Kind::persistent)) {
      StorageRef r = decoder.storage_ref(*v);
      refs.emplace(r.key, r);
      continue;
    }
    for (const Value* it : v->items)
      if (seen.insert(it).second) todo.push_back(it);
    for (const auto& e : v->entries)
      if (seen.insert(e.second).second) todo.push_back(e.second);
  }
  std::map<std::string, at::Tensor> storages;
  for (const Value* k : keys->root()->items) {
    IDSYNTH_CHECK(k->is(Kind::string), source, ": legacy checkpoint: storage key: expected a string, found ", pickle::describe(*k));
    auto it = refs.find(k->text);
    IDSYNTH_CHECK(it != refs.end(), source, ": legacy checkpoint: storage '", k->text, "' is not used by any tensor");
    IDSYNTH_CHECK(size - pos >= 8, source, ": legacy checkpoint: storage '", k->text, "': expected an 8-byte size, found end of file");
    uint64_t numel = 0;
    for (int i = 0; i < 8; ++i) numel |= static_cast<uint64_t>(data[pos + i]) << (8 * i);
    pos += 8;
    IDSYNTH_CHECK(numel == static_cast<uint64_t>(it->second.numel), source, ": legacy checkpoint: storage '", k->text,
                  "': expected ", it->second.numel, " elements, found ", numel);
    const uint64_t nbytes = numel * at::elementSize(it->second.dtype);
    IDSYNTH_CHECK(nbytes <= size - pos, source, ": legacy checkpoint: storage '", k->text, "': expected ", nbytes,
                  " bytes, found ", size - pos, " (truncated file?)");
    at::Tensor t = at::empty({static_cast<int64_t>(numel)}, at::TensorOptions().dtype(it->second.dtype));
    if (nbytes > 0) std::memcpy(t.data_ptr(), data + pos, nbytes);
    pos += nbytes;
    storages.emplace(k->text, t);
  }
  auto load_storage = [&](const StorageRef& ref) -> at::Tensor {
    auto it = storages.find(ref.key);
    IDSYNTH_CHECK(it != storages.end(), source, ": legacy checkpoint: storage '", ref.key, "' has no data in the file");
    return it->second;
  };
  TensorDict out;
  out.set_source(source);
  decoder.collect(*main->root(), "", out, load_storage);
  return out;
}

}  // namespace

CheckpointFormat detect_checkpoint_format(const std::string& path) {
  MappedFile map(path);
  if (map.size() >= 4 && std::memcmp(map.data(), "PK\x03\x04", 4) == 0) return CheckpointFormat::zip;
  if (map.size() >= 4 && map.data()[0] == 0x80 && map.data()[2] == 0x8a && map.data()[3] == 0x0a) return CheckpointFormat::legacy;
  return CheckpointFormat::unknown;
}

TensorDict read_torch_checkpoint_bytes(const uint8_t* data, size_t size, const std::string& source) {
  if (size >= 4 && std::memcmp(data, "PK\x03\x04", 4) == 0) {
    try {
      caffe2::serialize::PyTorchStreamReader reader(std::make_shared<CheckedMemoryAdapter>(data, size));
      return read_zip(reader, source);
    } catch (const c10::Error& e) {
      throw Error(record_prefix_error(source, e));
    }
  }
  if (size >= 2 && data[0] == 0x80) return read_legacy(data, size, source);
  fail(source, ": expected a torch.save checkpoint (zip archive or legacy pickle), found neither (first bytes do not match)");
}

TensorDict read_torch_checkpoint(const std::string& path) {
  MappedFile map(path);
  return read_torch_checkpoint_bytes(map.data(), map.size(), path);
}

}  // namespace idsynth

namespace idsynth {
namespace {

// Emits the few pickle opcodes a state dict needs (protocol 2).
class StateDictPickler {
 public:
  std::string bytes;

  void proto() { bytes += "\x80\x02"; }
  void global(const std::string& module, const std::string& name) { bytes += "c" + module + "\n" + name + "\n"; }
  void mark() { bytes += '('; }
  void tuple() { bytes += 't'; }
  void empty_tuple() { bytes += ')'; }
  void reduce() { bytes += 'R'; }
  void setitems() { bytes += 'u'; }
  void binpersid() { bytes += 'Q'; }
  void stop() { bytes += '.'; }
  void boolean(bool b) { bytes += b ? '\x88' : '\x89'; }
  void str(const std::string& s) {
    bytes += 'X';
    put_le(s.size(), 4);
    bytes += s;
  }
  void integer(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
      bytes += 'J';
      put_le(static_cast<uint64_t>(static_cast<uint32_t>(v)), 4);
    } else {
      bytes += '\x8a';
      bytes += '\x08';
      put_le(static_cast<uint64_t>(v), 8);
    }
  }

 private:
  void put_le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes += static_cast<char>((v >> (8 * i)) & 0xFF);
  }
};

std::string storage_class(at::ScalarType t) {
  for (const auto& [name, type] : storage_types())
    if (type == t) return name.substr(std::string("torch.").size());
  fail("save_torch_checkpoint: unsupported dtype ", c10::toString(t));
}

}  // namespace

void save_torch_checkpoint(const std::string& path, const TensorDict& tensors) {
  StateDictPickler p;
  p.proto();
  p.global("collections", "OrderedDict");
  p.empty_tuple();
  p.reduce();
  p.mark();
  std::vector<at::Tensor> storages;
  for (const auto& [name, tensor] : tensors) {
    at::Tensor t = tensor.detach().to(at::kCPU).contiguous();
    const std::string key = std::to_string(storages.size());
    p.str(name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.mark();
    p.mark();  // persistent id
    p.str("storage");
    p.global("torch", storage_class(t.scalar_type()));
    p.str(key);
    p.str("cpu");
    p.integer(t.numel());
    p.tuple();
    p.binpersid();
    p.integer(0);
    p.mark();
    for (int64_t s : t.sizes()) p.integer(s);
    p.tuple();
    p.mark();
    for (int64_t s : t.strides()) p.integer(s);
    p.tuple();
    p.boolean(false);
    p.global("collections", "OrderedDict");
    p.empty_tuple();
    p.reduce();
    p.tuple();
    p.reduce();
    storages.push_back(t);
  }
  p.setitems();
  p.stop();

  const std::string tmp = cat(path, ".tmp");
  try {
    caffe2::serialize::PyTorchStreamWriter writer(tmp);
    writer.writeRecord("data.pkl", p.bytes.data(), p.bytes.size());
    for (size_t i = 0; i < storages.size(); ++i)
      writer.writeRecord("data/" + std::to_string(i), storages[i].data_ptr(), storages[i].numel() * storages[i].element_size());
    writer.writeEndOfFile();
  } catch (const c10::Error& e) {
    fail(path, ": cannot write checkpoint (", e.what_without_backtrace(), ")");
  }
  IDSYNTH_CHECK(std::rename(tmp.c_str(), path.c_str()) == 0, path, ": cannot rename the finished checkpoint into place");
}

}  // namespace idsynth
