#include "core/json.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/check.h"
#include "core/file_util.h"

namespace idsynth::json {

const char* Value::type_name(Type t) {
  switch (t) {
    case Type::null: return "null";
    case Type::boolean: return "boolean";
    case Type::number: return "number";
    case Type::string: return "string";
    case Type::array: return "array";
    case Type::object: return "object";
  }
  return "?";
}

bool Value::as_bool(const std::string& what) const {
  IDSYNTH_CHECK(is_bool(), what, ": expected a boolean, found ", type_name());
  return bool_;
}
double Value::as_double(const std::string& what) const {
  IDSYNTH_CHECK(is_number(), what, ": expected a number, found ", type_name());
  return number_;
}
int64_t Value::as_int(const std::string& what) const {
  IDSYNTH_CHECK(is_number(), what, ": expected an integer, found ", type_name());
  if (is_int_) return int_;
  IDSYNTH_CHECK(std::isfinite(number_) && number_ == std::floor(number_) && std::fabs(number_) < 9.0e15,
                what, ": expected an integer, found ", number_);
  return static_cast<int64_t>(number_);
}
const std::string& Value::as_string(const std::string& what) const {
  IDSYNTH_CHECK(is_string(), what, ": expected a string, found ", type_name());
  return string_;
}
const Value::Array& Value::as_array(const std::string& what) const {
  IDSYNTH_CHECK(is_array(), what, ": expected an array, found ", type_name());
  return *array_;
}
const Value::Object& Value::as_object(const std::string& what) const {
  IDSYNTH_CHECK(is_object(), what, ": expected an object, found ", type_name());
  return *object_;
}
Value::Array& Value::mutable_array() {
  IDSYNTH_CHECK(is_array(), "json: expected an array, found ", type_name());
  return *array_;
}
Value::Object& Value::mutable_object() {
  IDSYNTH_CHECK(is_object(), "json: expected an object, found ", type_name());
  return *object_;
}

const Value* Value::find(const std::string& key) const {
  if (!is_object()) return nullptr;
  for (const auto& kv : *object_)
    if (kv.first == key) return &kv.second;
  return nullptr;
}
const Value& Value::at(const std::string& key) const {
  const Value* v = find(key);
  IDSYNTH_CHECK(v != nullptr, "json: missing key '", key, "'");
  return *v;
}
void Value::set(const std::string& key, Value v) {
  auto& obj = mutable_object();
  for (auto& kv : obj)
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  obj.emplace_back(key, std::move(v));
}
void Value::push_back(Value v) { mutable_array().push_back(std::move(v)); }

namespace {

void dump_string(std::string& out, const std::string& s) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

void newline(std::string& out, int indent, int level) {
  if (indent < 0) return;
  out += '\n';
  out.append(static_cast<size_t>(indent * level), ' ');
}

}  // namespace

void Value::dump_to(std::string& out, int indent, int level) const {
  switch (type_) {
    case Type::null: out += "null"; break;
    case Type::boolean: out += bool_ ? "true" : "false"; break;
    case Type::number:
      if (is_int_) {
        out += std::to_string(int_);
      } else if (std::isnan(number_)) {
        out += "NaN";
      } else if (std::isinf(number_)) {
        out += number_ > 0 ? "Infinity" : "-Infinity";
      } else {
        char buf[40];
        std::snprintf(buf, sizeof buf, "%.17g", number_);
        // Shortest representation that reads back to the same double.
        for (int prec = 1; prec <= 17; ++prec) {
          char tmp[40];
          std::snprintf(tmp, sizeof tmp, "%.*g", prec, number_);
          if (std::strtod(tmp, nullptr) == number_) {
            std::memcpy(buf, tmp, sizeof tmp);
            break;
          }
        }
        std::string s(buf);
        if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
        out += s;
      }
      break;
    case Type::string: dump_string(out, string_); break;
    case Type::array: {
      out += '[';
      bool first = true;
      for (const auto& v : *array_) {
        if (!first) out += ',';
        first = false;
        newline(out, indent, level + 1);
        v.dump_to(out, indent, level + 1);
      }
      if (!array_->empty()) newline(out, indent, level);
      out += ']';
      break;
    }
    case Type::object: {
      out += '{';
      bool first = true;
      for (const auto& kv : *object_) {
        if (!first) out += ',';
        first = false;
        newline(out, indent, level + 1);
        dump_string(out, kv.first);
        out += indent < 0 ? ":" : ": ";
        kv.second.dump_to(out, indent, level + 1);
      }
      if (!object_->empty()) newline(out, indent, level);
      out += '}';
      break;
    }
  }
}

std::string Value::dump(int indent) const {
  std::string out;
  dump_to(out, indent, 0);
  return out;
}

namespace {

class Parser {
 public:
  Parser(const std::string& text, const std::string& source, ParseOptions options)
      : s_(text), source_(source), options_(options) {}

  Value parse_document() {
    skip_ws();
    Value v = parse_value(0);
    skip_ws();
    if (pos_ != s_.size()) error("end of input", describe_here());
    return v;
  }

 private:
  [[noreturn]] void error(const std::string& expected, const std::string& found) {
    fail(source_, ": JSON error at offset ", pos_, ": expected ", expected, ", found ", found);
  }
  std::string describe_here() const {
    if (pos_ >= s_.size()) return "end of input";
    unsigned char c = static_cast<unsigned char>(s_[pos_]);
    if (c >= 0x20 && c < 0x7f) return cat("'", static_cast<char>(c), "'");
    return cat("byte 0x", std::hex, static_cast<int>(c));
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\n' || s_[pos_] == '\r' || s_[pos_] == '\t'))
      ++pos_;
  }
  bool consume(const char* word) {
    size_t n = std::strlen(word);
    if (s_.compare(pos_, n, word) == 0) {
      pos_ += n;
      return true;
    }
    return false;
  }

  Value parse_value(size_t depth) {
    if (depth > options_.max_depth) error(cat("nesting of at most ", options_.max_depth, " levels"), "deeper nesting");
    if (pos_ >= s_.size()) error("a value", "end of input");
    char c = s_[pos_];
    if (c == '{') return parse_object(depth);
    if (c == '[') return parse_array(depth);
    if (c == '"') return Value(parse_string());
    if (consume("true")) return Value(true);
    if (consume("false")) return Value(false);
    if (consume("null")) return Value(nullptr);
    if (consume("NaN")) return Value(std::numeric_limits<double>::quiet_NaN());
    if (consume("Infinity")) return Value(std::numeric_limits<double>::infinity());
    if (consume("-Infinity")) return Value(-std::numeric_limits<double>::infinity());
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number();
    error("a value", describe_here());
  }

  Value parse_number() {
    size_t start = pos_;
    bool is_int = true;
    if (s_[pos_] == '-') ++pos_;
    if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_]))) error("a digit", describe_here());
    while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    if (pos_ < s_.size() && s_[pos_] == '.') {
      is_int = false;
      ++pos_;
      if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_]))) error("a digit after '.'", describe_here());
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      is_int = false;
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (pos_ >= s_.size() || !std::isdigit(static_cast<unsigned char>(s_[pos_]))) error("an exponent", describe_here());
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    }
    std::string text = s_.substr(start, pos_ - start);
    if (is_int && text.size() <= 18) return Value(static_cast<int64_t>(std::stoll(text)));
    return Value(std::strtod(text.c_str(), nullptr));
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  uint32_t parse_hex4() {
    if (pos_ + 4 > s_.size()) error("4 hex digits", "end of input");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
      else { --pos_; error("a hex digit", describe_here()); }
    }
    return v;
  }

  std::string parse_string() {
    ++pos_;  // opening quote
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) error("'\"'", "end of input");
      char c = s_[pos_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) { --pos_; error("a string character", describe_here()); }
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) error("an escape", "end of input");
      char e = s_[pos_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = parse_hex4();
          if (cp >= 0xD800 && cp < 0xDC00 && pos_ + 6 <= s_.size() && s_[pos_] == '\\' && s_[pos_ + 1] == 'u') {
            pos_ += 2;
            uint32_t lo = parse_hex4();
            if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          append_utf8(out, cp);
          break;
        }
        default: --pos_; error("a valid escape", describe_here());
      }
    }
  }

  Value parse_array(size_t depth) {
    ++pos_;
    Value::Array items;
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') { ++pos_; return Value(std::move(items)); }
    while (true) {
      skip_ws();
      items.push_back(parse_value(depth + 1));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') { ++pos_; continue; }
      if (pos_ < s_.size() && s_[pos_] == ']') { ++pos_; return Value(std::move(items)); }
      error("',' or ']'", describe_here());
    }
  }

  Value parse_object(size_t depth) {
    ++pos_;
    Value::Object items;
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == '}') { ++pos_; return Value(std::move(items)); }
    while (true) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') error("a key string", describe_here());
      std::string key = parse_string();
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != ':') error("':'", describe_here());
      ++pos_;
      skip_ws();
      Value v = parse_value(depth + 1);
      bool replaced = false;
      for (auto& kv : items)
        if (kv.first == key) { kv.second = v; replaced = true; }  // last one wins, as Python's json
      if (!replaced) items.emplace_back(std::move(key), std::move(v));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') { ++pos_; continue; }
      if (pos_ < s_.size() && s_[pos_] == '}') { ++pos_; return Value(std::move(items)); }
      error("',' or '}'", describe_here());
    }
  }

  const std::string& s_;
  const std::string& source_;
  ParseOptions options_;
  size_t pos_ = 0;
};

}  // namespace

Value parse(const std::string& text, const std::string& source, ParseOptions options) {
  return Parser(text, source, options).parse_document();
}

Value parse_file(const std::string& path, ParseOptions options) {
  return parse(read_text_file(path), path, options);
}

void write_file(const std::string& path, const Value& value) {
  write_file_atomic(path, value.dump(2) + "\n");
}

}  // namespace idsynth::json
