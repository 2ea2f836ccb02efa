#include "core/pickle.h"

#include <cstring>
#include <unordered_map>

#include "core/check.h"

namespace idsynth::pickle {

const char* Value::kind_name() const {
  switch (kind) {
    case Kind::none: return "None";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::floating: return "float";
    case Kind::string: return "str";
    case Kind::bytes: return "bytes";
    case Kind::list: return "list";
    case Kind::tuple: return "tuple";
    case Kind::dict: return "dict";
    case Kind::global: return "global";
    case Kind::object: return "object";
    case Kind::persistent: return "persistent id";
  }
  return "?";
}

const Value* Value::get(const std::string& key) const {
  if (kind != Kind::dict) return nullptr;
  for (const auto& e : entries)
    if (e.first->kind == Kind::string && e.first->text == key) return e.second;
  return nullptr;
}

std::string describe(const Value& v, size_t max_len) {
  std::string s;
  switch (v.kind) {
    case Value::Kind::none: s = "None"; break;
    case Value::Kind::boolean: s = v.boolean ? "True" : "False"; break;
    case Value::Kind::integer: s = std::to_string(v.integer); break;
    case Value::Kind::floating: s = std::to_string(v.floating); break;
    case Value::Kind::string: s = "'" + v.text + "'"; break;
    case Value::Kind::bytes: s = cat("bytes[", v.text.size(), "]"); break;
    case Value::Kind::list: s = cat("list[", v.items.size(), "]"); break;
    case Value::Kind::tuple: s = cat("tuple[", v.items.size(), "]"); break;
    case Value::Kind::dict: s = cat("dict[", v.entries.size(), "]"); break;
    case Value::Kind::global: s = v.text; break;
    case Value::Kind::object: s = v.text + "(...)"; break;
    case Value::Kind::persistent: s = cat("persistent_id[", v.items.size(), "]"); break;
  }
  if (s.size() > max_len) s = s.substr(0, max_len) + "...";
  return s;
}

class Unpickler {
 public:
  Unpickler(const uint8_t* data, size_t size, const std::string& source, const Options& options)
      : d_(data), n_(size), source_(source), opt_(options), doc_(new Document) {}

  std::unique_ptr<Document> run() {
    while (true) {
      IDSYNTH_CHECK(pos_ < n_, source_, ": pickle truncated at offset ", pos_, ": expected an opcode, found end of data");
      op_pos_ = pos_;
      uint8_t op = d_[pos_++];
      if (op == '.') {  // STOP
        IDSYNTH_CHECK(stack_.size() == 1 && marks_.empty(), source_, ": pickle STOP at offset ", op_pos_,
                      ": expected exactly one value on the stack, found ", stack_.size());
        doc_->root_ = stack_.back();
        doc_->end_offset_ = pos_;
        return std::move(doc_);
      }
      step(op);
    }
  }

 private:
  using Kind = Value::Kind;

  [[noreturn]] void error(const std::string& what) {
    fail(source_, ": pickle error at offset ", op_pos_, ": ", what);
  }

  Value* make(Kind k) {
    doc_->arena_.push_back(std::make_unique<Value>());
    Value* v = doc_->arena_.back().get();
    v->kind = k;
    return v;
  }

  // --- raw reads, all bounds-checked ---
  const uint8_t* take(size_t count) {
    if (count > n_ - pos_) error(cat("expected ", count, " more bytes, found ", n_ - pos_));
    const uint8_t* p = d_ + pos_;
    pos_ += count;
    return p;
  }
  uint64_t read_le(size_t bytes) {
    const uint8_t* p = take(bytes);
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
  }
  std::string read_line() {
    size_t start = pos_;
    while (pos_ < n_ && d_[pos_] != '\n') ++pos_;
    if (pos_ >= n_) error("expected a newline-terminated argument, found end of data");
    std::string s(reinterpret_cast<const char*>(d_ + start), pos_ - start);
    ++pos_;
    return s;
  }
  std::string read_bytes(uint64_t len) {
    if (len > n_ - pos_) error(cat("length ", len, " runs past the end of the data (", n_ - pos_, " bytes left)"));
    const uint8_t* p = take(static_cast<size_t>(len));
    return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(len));
  }

  // --- stack ---
  void push(const Value* v) {
    if (stack_.size() >= opt_.max_stack) error(cat("stack deeper than ", opt_.max_stack));
    stack_.push_back(v);
  }
  const Value* pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) error("pop from an empty stack");
    const Value* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  const Value* top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) error("empty stack");
    return stack_.back();
  }
  std::vector<const Value*> pop_mark() {
    if (marks_.empty()) error("expected a MARK, found none");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<const Value*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  // Values are immutable once built except containers filled by APPEND/SETITEM(S)/BUILD.
  Value* mutable_top(Kind expected, const char* opname) {
    const Value* t = top();
    if (t->kind != expected) {
      Value wanted;
      wanted.kind = expected;
      error(cat(opname, " expects a ", wanted.kind_name(), " on the stack, found ", t->kind_name()));
    }
    return const_cast<Value*>(t);
  }
  void grow_depth(Value* container, const Value* child) {
    if (child == container) error("a container that contains itself");
    if (child->depth + 1 > container->depth) container->depth = child->depth + 1;
    if (container->depth > opt_.max_depth) error(cat("nesting deeper than ", opt_.max_depth, " levels"));
  }
  Value* make_sequence(Kind k, std::vector<const Value*> items) {
    Value* v = make(k);
    for (const Value* it : items) grow_depth(v, it);
    v->items = std::move(items);
    return v;
  }

  // --- memo ---
  void memo_put(uint64_t key) {
    if (memo_.size() >= opt_.max_memo && memo_.find(key) == memo_.end()) error(cat("memo larger than ", opt_.max_memo));
    memo_[key] = top();
  }
  void memo_get(uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) error(cat("memo key ", key, " was never stored"));
    push(it->second);
  }

  Value* string_value(std::string s, Kind k) {
    Value* v = make(k);
    v->text = std::move(s);
    return v;
  }

  void do_global(const std::string& module, const std::string& name) {
    std::string full = module + "." + name;
    if (opt_.allowed_globals.count(full) == 0) {
      std::string allowed;
      for (const auto& g : opt_.allowed_globals) allowed += (allowed.empty() ? "" : ", ") + g;
      error(cat("refusing global '", full, "': expected one of {", allowed, "} (pickle files are never executed)"));
    }
    push(string_value(full, Kind::global));
  }

  void do_reduce() {
    const Value* args = pop();
    const Value* callable = pop();
    if (callable->kind != Kind::global) error(cat("REDUCE expects a global, found ", callable->kind_name()));
    if (args->kind != Kind::tuple) error(cat("REDUCE expects an argument tuple, found ", args->kind_name()));
    if (callable->text == "collections.OrderedDict") {
      if (!args->items.empty()) error("collections.OrderedDict with arguments is not supported");
      push(make(Kind::dict));
      return;
    }
    if (callable->text == "_codecs.encode") {
      // Python 3 writes bytes at protocol 2 as _codecs.encode(latin-1 text, 'latin1').
      if (args->items.size() != 2 || args->items[0]->kind != Kind::string || args->items[1]->kind != Kind::string ||
          (args->items[1]->text != "latin1" && args->items[1]->text != "latin-1"))
        error("_codecs.encode: expected (str, 'latin1')");
      push(string_value(utf8_to_latin1(args->items[0]->text), Kind::bytes));
      return;
    }
    Value* obj = make(Kind::object);
    obj->text = callable->text;
    for (const Value* it : args->items) grow_depth(obj, it);
    obj->items = args->items;
    push(obj);
  }

  std::string utf8_to_latin1(const std::string& s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      auto c = static_cast<unsigned char>(s[i]);
      if (c < 0x80) {
        out += static_cast<char>(c);
      } else if ((c & 0xE0) == 0xC0 && i + 1 < s.size()) {
        uint32_t cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
        if (cp > 0xFF) error("_codecs.encode: a character outside latin-1");
        out += static_cast<char>(cp);
        ++i;
      } else {
        error("_codecs.encode: a character outside latin-1");
      }
    }
    return out;
  }

  void do_build() {
    const Value* st = pop();
    const Value* obj = top();
    Value* target = const_cast<Value*>(obj);
    if (target->kind != Kind::dict && target->kind != Kind::object) error(cat("BUILD on a ", obj->kind_name()));
    grow_depth(target, st);
    target->state = st;
  }

  void set_items(Value* dict, const std::vector<const Value*>& kv) {
    if (kv.size() % 2 != 0) error("SETITEMS with an odd number of values");
    for (size_t i = 0; i < kv.size(); i += 2) {
      grow_depth(dict, kv[i]);
      grow_depth(dict, kv[i + 1]);
      bool replaced = false;
      if (kv[i]->kind == Kind::string) {
        for (auto& e : dict->entries)
          if (e.first->kind == Kind::string && e.first->text == kv[i]->text) {
            e.second = kv[i + 1];
            replaced = true;
          }
      }
      if (!replaced) dict->entries.emplace_back(kv[i], kv[i + 1]);
    }
  }

  void append_items(Value* list, const std::vector<const Value*>& items) {
    for (const Value* it : items) grow_depth(list, it);
    list->items.insert(list->items.end(), items.begin(), items.end());
  }

  void step(uint8_t op) {
    switch (op) {
      case 0x80: {  // PROTO
        uint64_t proto = read_le(1);
        if (proto > 5) error(cat("protocol ", proto, " is newer than 5"));
        break;
      }
      case 0x95: read_le(8); break;  // FRAME: only a hint for buffering
      case '(': marks_.push_back(stack_.size()); break;  // MARK
      case ')': push(make(Kind::tuple)); break;           // EMPTY_TUPLE
      case ']': push(make(Kind::list)); break;            // EMPTY_LIST
      case '}': push(make(Kind::dict)); break;            // EMPTY_DICT
      case 'N': push(make(Kind::none)); break;            // NONE
      case 0x88: case 0x89: {                             // NEWTRUE, NEWFALSE
        Value* v = make(Kind::boolean);
        v->boolean = op == 0x88;
        push(v);
        break;
      }
      case 'J': {  // BININT: signed 32-bit
        Value* v = make(Kind::integer);
        v->integer = static_cast<int32_t>(read_le(4));
        push(v);
        break;
      }
      case 'K': case 'M': {  // BININT1, BININT2
        Value* v = make(Kind::integer);
        v->integer = static_cast<int64_t>(read_le(op == 'K' ? 1 : 2));
        push(v);
        break;
      }
      case 0x8a: {  // LONG1: little-endian two's complement of n bytes
        uint64_t len = read_le(1);
        const uint8_t* p = take(static_cast<size_t>(len));
        if (len > 8) {  // e.g. the legacy torch.save magic number; kept as bytes, never as a number
          Value* big = string_value(std::string(reinterpret_cast<const char*>(p), len), Kind::integer);
          big->big_integer = true;
          push(big);
          break;
        }
        uint64_t v = 0;
        for (size_t i = 0; i < len; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
        if (len > 0 && len < 8 && (p[len - 1] & 0x80)) v |= ~uint64_t{0} << (8 * len);  // sign-extend
        Value* iv = make(Kind::integer);
        iv->integer = static_cast<int64_t>(v);
        push(iv);
        break;
      }
      case 'I': {  // INT (text): also encodes True/False as 01/00 in protocol 0
        std::string line = read_line();
        Value* v = make(Kind::integer);
        if (line == "01" || line == "00") {
          v->kind = Kind::boolean;
          v->boolean = line == "01";
        } else {
          char* end = nullptr;
          v->integer = std::strtoll(line.c_str(), &end, 10);
          if (line.empty() || *end != '\0') error("INT with a malformed number");
        }
        push(v);
        break;
      }
      case 'G': {  // BINFLOAT: big-endian double
        const uint8_t* p = take(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];
        double d;
        std::memcpy(&d, &bits, sizeof d);
        Value* v = make(Kind::floating);
        v->floating = d;
        push(v);
        break;
      }
      case 'X': push(string_value(read_bytes(read_le(4)), Kind::string)); break;     // BINUNICODE
      case 0x8c: push(string_value(read_bytes(read_le(1)), Kind::string)); break;    // SHORT_BINUNICODE
      case 0x8d: push(string_value(read_bytes(read_le(8)), Kind::string)); break;    // BINUNICODE8
      case 'C': push(string_value(read_bytes(read_le(1)), Kind::bytes)); break;      // SHORT_BINBYTES
      case 'B': push(string_value(read_bytes(read_le(4)), Kind::bytes)); break;      // BINBYTES
      case 0x8e: push(string_value(read_bytes(read_le(8)), Kind::bytes)); break;     // BINBYTES8
      case 'U': case 'T': {  // SHORT_BINSTRING, BINSTRING (Python 2 str)
        uint64_t len = op == 'U' ? read_le(1) : read_le(4);
        if (op == 'T' && (len & 0x80000000u)) error("BINSTRING with a negative length");
        push(string_value(read_bytes(len), opt_.py2_strings_as_bytes ? Kind::bytes : Kind::string));
        break;
      }
      case 'q': memo_put(read_le(1)); break;     // BINPUT
      case 'r': memo_put(read_le(4)); break;     // LONG_BINPUT
      case 0x94: memo_put(memo_.size()); break;  // MEMOIZE
      case 'h': memo_get(read_le(1)); break;     // BINGET
      case 'j': memo_get(read_le(4)); break;     // LONG_BINGET
      case 't': push(make_sequence(Kind::tuple, pop_mark())); break;  // TUPLE
      case 0x85: case 0x86: case 0x87: {                             // TUPLE1..3
        size_t count = static_cast<size_t>(op - 0x84);
        std::vector<const Value*> items(count);
        for (size_t i = count; i-- > 0;) items[i] = pop();
        push(make_sequence(Kind::tuple, std::move(items)));
        break;
      }
      case 'l': push(make_sequence(Kind::list, pop_mark())); break;  // LIST
      case 'a': {                                                    // APPEND
        const Value* v = pop();
        append_items(mutable_top(Kind::list, "APPEND"), {v});
        break;
      }
      case 'e': {  // APPENDS
        auto items = pop_mark();
        append_items(mutable_top(Kind::list, "APPENDS"), items);
        break;
      }
      case 'd': {  // DICT
        auto kv = pop_mark();
        Value* dict = make(Kind::dict);
        set_items(dict, kv);
        push(dict);
        break;
      }
      case 's': {  // SETITEM
        const Value* v = pop();
        const Value* k = pop();
        set_items(mutable_top(Kind::dict, "SETITEM"), {k, v});
        break;
      }
      case 'u': {  // SETITEMS
        auto kv = pop_mark();
        set_items(mutable_top(Kind::dict, "SETITEMS"), kv);
        break;
      }
      case 'c': {  // GLOBAL "module\nname\n"
        std::string module = read_line();
        std::string name = read_line();
        do_global(module, name);
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        const Value* name = pop();
        const Value* module = pop();
        if (module->kind != Kind::string || name->kind != Kind::string) error("STACK_GLOBAL expects two strings");
        do_global(module->text, name->text);
        break;
      }
      case 'R': do_reduce(); break;  // REDUCE
      case 'b': do_build(); break;   // BUILD
      case 'Q': {                    // BINPERSID
        const Value* pid = pop();
        if (pid->kind != Kind::tuple) error(cat("persistent id expects a tuple, found ", pid->kind_name()));
        push(make_sequence(Kind::persistent, pid->items));
        break;
      }
      case '0': pop(); break;   // POP
      case '1': pop_mark(); break;  // POP_MARK
      case '2': push(top()); break;  // DUP
      default:
        error(cat("unsupported opcode 0x", std::hex, static_cast<int>(op),
                  " (only the opcodes of data pickles are understood)"));
    }
  }

  const uint8_t* d_;
  size_t n_;
  const std::string& source_;
  const Options& opt_;
  std::unique_ptr<Document> doc_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  std::vector<const Value*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, const Value*> memo_;
};

std::unique_ptr<Document> load(const uint8_t* data, size_t size, const std::string& source, const Options& options) {
  return Unpickler(data, size, source, options).run();
}

}  // namespace idsynth::pickle
