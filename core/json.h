// A small JSON reader/writer for the files of the reference ecosystems: safetensors headers,
// diffusers/transformers config.json, scheduler_config.json. It depends on nothing but the standard
// library so the libtorch-only model build can use it, and it accepts the non-standard
// NaN / Infinity / -Infinity that Python's json module writes (diffusers stores
// "lambda_min_clipped": -Infinity), which strict parsers reject.
// Hostile input: depth and size are bounded, every error names the offset.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace idsynth::json {

class Value {
 public:
  enum class Type { null, boolean, number, string, array, object };
  using Array = std::vector<Value>;
  using Object = std::vector<std::pair<std::string, Value>>;  // keeps the file's key order

  Value() = default;
  Value(std::nullptr_t) {}
  Value(bool b) : type_(Type::boolean), bool_(b) {}
  Value(int v) : Value(static_cast<int64_t>(v)) {}
  Value(int64_t v) : type_(Type::number), number_(static_cast<double>(v)), int_(v), is_int_(true) {}
  Value(uint64_t v) : Value(static_cast<int64_t>(v)) {}
  Value(double v) : type_(Type::number), number_(v) {}
  Value(const char* s) : type_(Type::string), string_(s) {}
  Value(std::string s) : type_(Type::string), string_(std::move(s)) {}
  Value(Array a) : type_(Type::array), array_(std::make_shared<Array>(std::move(a))) {}
  Value(Object o) : type_(Type::object), object_(std::make_shared<Object>(std::move(o))) {}
  static Value array() { return Value(Array{}); }
  static Value object() { return Value(Object{}); }

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::null; }
  bool is_bool() const { return type_ == Type::boolean; }
  bool is_number() const { return type_ == Type::number; }
  bool is_integer() const { return type_ == Type::number && is_int_; }
  bool is_string() const { return type_ == Type::string; }
  bool is_array() const { return type_ == Type::array; }
  bool is_object() const { return type_ == Type::object; }
  static const char* type_name(Type t);
  const char* type_name() const { return type_name(type_); }

  // Accessors throw idsynth::Error naming the expected and the found type; `what` names the field.
  bool as_bool(const std::string& what = "value") const;
  double as_double(const std::string& what = "value") const;
  int64_t as_int(const std::string& what = "value") const;
  const std::string& as_string(const std::string& what = "value") const;
  const Array& as_array(const std::string& what = "value") const;
  const Object& as_object(const std::string& what = "value") const;
  Array& mutable_array();
  Object& mutable_object();

  // Object helpers. find() returns nullptr when absent.
  const Value* find(const std::string& key) const;
  bool contains(const std::string& key) const { return find(key) != nullptr; }
  const Value& at(const std::string& key) const;  // throws naming the key
  void set(const std::string& key, Value v);      // replaces or appends
  void push_back(Value v);

  // Compact (indent < 0) or pretty printing. Non-finite numbers print as NaN / Infinity / -Infinity,
  // as Python does, so a file read here is written back unchanged.
  std::string dump(int indent = -1) const;

 private:
  void dump_to(std::string& out, int indent, int level) const;

  Type type_ = Type::null;
  bool bool_ = false;
  double number_ = 0.0;
  int64_t int_ = 0;
  bool is_int_ = false;
  std::string string_;
  std::shared_ptr<Array> array_;
  std::shared_ptr<Object> object_;
};

struct ParseOptions {
  size_t max_depth = 64;
};

// Parses text; errors read "<source>: JSON error at offset N: expected X, found Y".
Value parse(const std::string& text, const std::string& source = "<json>", ParseOptions options = {});
Value parse_file(const std::string& path, ParseOptions options = {});
// Writes pretty JSON to path atomically (temporary file + rename).
void write_file(const std::string& path, const Value& value);

}  // namespace idsynth::json
