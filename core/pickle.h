// A restricted unpickler for untrusted files: PyTorch checkpoints (torch.save, zip and legacy
// formats) and insightface `.bin` benchmark files (Python 2 and 3 pickles).
//
// It interprets the pickle opcodes as data only. A GLOBAL is accepted only when the caller listed
// it, and REDUCE/BUILD only apply the built-in meaning of those few globals (an ordered dict, a
// tensor rebuild, `_codecs.encode` of latin-1 text); anything else ends with an error naming the
// global and the byte offset. Nothing is ever executed. Every length is checked against the
// input, and nesting, memo and stack sizes are bounded, so hostile files fail cleanly.
// Ref: cpython Lib/pickle.py (opcode table), torch/serialization.py, torch/_utils.py.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace idsynth::pickle {

struct Value {
  enum class Kind {
    none, boolean, integer, floating, string, bytes, list, tuple, dict,
    global,        // a class/function reference accepted by the allow-list: text = "module.name"
    object,        // result of REDUCE on an allowed global: text = the global, items = args
    persistent,    // result of a persistent id: items = the pid tuple's items
  };
  Kind kind = Kind::none;
  bool boolean = false;
  int64_t integer = 0;
  double floating = 0.0;
  std::string text;                                            // string (UTF-8), bytes, global name
  std::vector<const Value*> items;                             // list, tuple, object args
  std::vector<std::pair<const Value*, const Value*>> entries;  // dict in insertion order
  const Value* state = nullptr;                                // set by BUILD
  size_t depth = 1;                                            // nesting depth of this value
  // An int too wide for 64 bits (LONG1 of more than 8 bytes): `text` holds its little-endian bytes.
  bool big_integer = false;

  bool is(Kind k) const { return kind == k; }
  const char* kind_name() const;
  // Dict lookup by string key; nullptr when absent or not a dict.
  const Value* get(const std::string& key) const;
};

struct Options {
  std::set<std::string> allowed_globals;  // "module.name", e.g. "collections.OrderedDict"
  size_t max_depth = 1000;
  size_t max_memo = 1u << 24;
  size_t max_stack = 1u << 24;
  // Python 2 str (BINSTRING/SHORT_BINSTRING) read as bytes, like pickle.load(encoding='bytes').
  bool py2_strings_as_bytes = true;
};

// The values of one pickle; they live as long as the Document.
class Document {
 public:
  const Value* root() const { return root_; }
  size_t end_offset() const { return end_offset_; }  // bytes consumed, the STOP opcode included

 private:
  friend class Unpickler;
  std::vector<std::unique_ptr<Value>> arena_;
  const Value* root_ = nullptr;
  size_t end_offset_ = 0;
};

// Parses one pickle starting at data[0]; `source` names the file in errors.
std::unique_ptr<Document> load(const uint8_t* data, size_t size, const std::string& source, const Options& options);

// A printable one-line summary of a value, for error messages.
std::string describe(const Value& v, size_t max_len = 80);

}  // namespace idsynth::pickle
