#include "core/config.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <ios>
#include <set>
#include <sstream>

#include "core/check.h"

namespace idsynth::config::detail {
namespace {

std::string join_path(const std::vector<std::string>& path, const char* key) {
  std::string s;
  for (const auto& p : path) s += p + ".";
  return s + key;
}

std::string describe(const YAML::Node& n) {
  if (!n.IsDefined() || n.IsNull()) return "null";
  if (n.IsScalar()) return "'" + n.Scalar() + "'";
  if (n.IsSequence()) return "a list";
  if (n.IsMap()) return "a mapping";
  return "?";
}

// A mapping key as text. YAML allows lists and mappings as keys (`? [a, b]: 1`, `{[1]: x}`); a
// config never uses them, and yaml-cpp would throw a bare conversion error for them.
std::string key_text(const YAML::Node& key, const std::string& source) {
  IDSYNTH_CHECK(key.IsScalar(), source, ": expected a plain key (a name), found ", describe(key), " as a key");
  return key.Scalar();
}

class Reader final : public Visitor {
 public:
  Reader(std::string source, const YAML::Node& root) : source_(std::move(source)) { nodes_.push_back(root); }

  void field(const char* key, int64_t& value, const char* /*doc*/, IntRange range) override {
    YAML::Node n = child(key);
    if (!n.IsDefined() || n.IsNull()) return check_range(key, value, range);
    int64_t v;
    if (!n.IsScalar() || !YAML::convert<int64_t>::decode(n, v)) error(key, "an integer", describe(n));
    value = v;
    check_range(key, value, range);
  }
  void field(const char* key, double& value, const char* /*doc*/, RealRange range) override {
    YAML::Node n = child(key);
    if (n.IsDefined() && !n.IsNull()) {
      double v;
      if (!n.IsScalar() || !YAML::convert<double>::decode(n, v)) error(key, "a number", describe(n));
      value = v;
    }
    if (!(value >= range.min && value <= range.max)) {
      std::ostringstream exp;
      exp << "a number in [" << range.min << ", " << range.max << "]";
      error(key, exp.str(), cat(value));
    }
  }
  void field(const char* key, bool& value, const char* /*doc*/) override {
    YAML::Node n = child(key);
    if (!n.IsDefined() || n.IsNull()) return;
    bool v;
    if (!n.IsScalar() || !YAML::convert<bool>::decode(n, v)) error(key, "true or false", describe(n));
    value = v;
  }
  void field(const char* key, std::string& value, const char* /*doc*/, std::vector<std::string> choices) override {
    YAML::Node n = child(key);
    if (n.IsDefined() && !n.IsNull()) {
      if (!n.IsScalar()) error(key, "a string", describe(n));
      value = n.Scalar();
    }
    if (!choices.empty()) {
      bool ok = false;
      std::string list;
      for (const auto& c : choices) {
        ok = ok || c == value;
        list += (list.empty() ? "" : ", ") + c;
      }
      if (!ok) error(key, "one of " + list, "'" + value + "'");
    }
  }
  void field(const char* key, std::vector<std::string>& value, const char* /*doc*/) override {
    YAML::Node n = child(key);
    if (!n.IsDefined() || n.IsNull()) return;
    if (n.IsScalar()) {  // a single value is a list of one
      value = {n.Scalar()};
      return;
    }
    if (!n.IsSequence()) error(key, "a list of strings", describe(n));
    value.clear();
    for (const auto& item : n) {
      if (!item.IsScalar()) error(key, "a list of strings", "a nested " + describe(item));
      value.push_back(item.Scalar());
    }
  }

  void path_scale_list(const char* key, std::vector<std::string>& value, const char* /*doc*/) override {
    const YAML::Node n = child(key);
    if (!n.IsDefined() || n.IsNull()) return;
    const char* expected = "a list of FILE[:SCALE] strings or {path: FILE, scale: S} maps";
    std::vector<YAML::Node> items;
    if (n.IsScalar() || n.IsMap()) {
      items.push_back(n);  // a single value is a list of one
    } else {
      if (!n.IsSequence()) error(key, expected, describe(n));
      for (const auto& item : n) items.push_back(item);
    }
    value.clear();
    for (const auto& item : items) {
      if (item.IsScalar()) {
        value.push_back(item.Scalar());
        continue;
      }
      if (!item.IsMap()) error(key, expected, describe(item) + " as an item");
      std::string path, scale = "1";
      for (const auto& kv : item) {
        const std::string k = key_text(kv.first, source_);
        if (k != "path" && k != "scale") error(key, "map keys path and scale", "'" + k + "'");
        if (!kv.second.IsScalar()) error(key, "a plain " + k + " value", describe(kv.second));
        (k == "path" ? path : scale) = kv.second.Scalar();
      }
      if (path.empty()) error(key, "a path in every {path, scale} map", "a map without one");
      double v = 0;
      if (!YAML::convert<double>::decode(YAML::Node(scale), v) || !std::isfinite(v)) error(key, "a number as scale", "'" + scale + "'");
      value.push_back(path + ":" + scale);
    }
  }

  // Every key of every mapping must have been visited.
  void check_unknown(const YAML::Node& n, std::vector<std::string>& path) {
    if (!n.IsMap()) return;
    for (const auto& kv : n) {
      const std::string key = key_text(kv.first, source_);
      const std::string full = join_path(path, key.c_str());
      if (seen_.count(full) == 0) {
        std::string known;
        for (const auto& s : seen_) {
          const std::string prefix = path.empty() ? "" : join_path(path, "");
          if (s.compare(0, prefix.size(), prefix) == 0 && s.find('.', prefix.size()) == std::string::npos)
            known += (known.empty() ? "" : ", ") + s.substr(prefix.size());
        }
        fail(source_, ": ", full, ": unknown key (expected one of: ", known, ")");
      }
      if (kv.second.IsMap() && sections_.count(full)) {
        path.push_back(key);
        check_unknown(kv.second, path);
        path.pop_back();
      }
    }
  }

 protected:
  void enter(const char* key, const char* /*doc*/) override {
    YAML::Node n = child(key);
    if (n.IsDefined() && !n.IsNull() && !n.IsMap()) error(key, "a mapping (section)", describe(n));
    sections_.insert(join_path(path_, key));
    path_.push_back(key);
    nodes_.push_back(n.IsDefined() && n.IsMap() ? n : YAML::Node(YAML::NodeType::Map));
  }
  void leave() override {
    path_.pop_back();
    nodes_.pop_back();
  }

 private:
  YAML::Node child(const char* key) {
    seen_.insert(join_path(path_, key));
    const YAML::Node& parent = nodes_.back();
    if (!parent.IsDefined() || !parent.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    return parent[key];
  }
  void check_range(const char* key, int64_t value, IntRange range) {
    if (value >= range.min && value <= range.max) return;
    std::string exp = "an integer";
    if (range.min != std::numeric_limits<int64_t>::min()) exp += cat(" >= ", range.min);
    if (range.max != std::numeric_limits<int64_t>::max()) exp += cat(range.min != std::numeric_limits<int64_t>::min() ? " and" : "", " <= ", range.max);
    error(key, exp, cat(value));
  }
  [[noreturn]] void error(const char* key, const std::string& expected, const std::string& found) {
    fail(source_, ": ", join_path(path_, key), ": expected ", expected, ", found ", found);
  }

  std::string source_;
  std::vector<YAML::Node> nodes_;
  std::vector<std::string> path_;
  std::set<std::string> seen_;
  std::set<std::string> sections_;
};

// Shortest decimal text that reads back to the same double (0.3, not 0.29999999999999999).
std::string shortest(double v) {
  char buf[40];
  for (int prec = 1; prec <= 17; ++prec) {
    std::snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

class Writer final : public Visitor {
 public:
  explicit Writer(bool docs) : docs_(docs) { out_ << YAML::BeginMap; }
  std::string str() {
    out_ << YAML::EndMap;
    return std::string(out_.c_str()) + "\n";
  }

  void field(const char* key, int64_t& value, const char* doc, IntRange) override {
    out_ << YAML::Key << key << YAML::Value << value;
    comment(doc);
  }
  void field(const char* key, double& value, const char* doc, RealRange) override {
    out_ << YAML::Key << key << YAML::Value << shortest(value);
    comment(doc);
  }
  void field(const char* key, bool& value, const char* doc) override {
    out_ << YAML::Key << key << YAML::Value << value;
    comment(doc);
  }
  void field(const char* key, std::string& value, const char* doc, std::vector<std::string> choices) override {
    std::string d = doc;
    if (!choices.empty()) {
      d += " (";
      for (size_t i = 0; i < choices.size(); ++i) d += (i ? " | " : "") + choices[i];
      d += ")";
    }
    out_ << YAML::Key << key << YAML::Value << YAML::DoubleQuoted << value;
    comment(d.c_str());
  }
  void field(const char* key, std::vector<std::string>& value, const char* doc) override {
    out_ << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const auto& v : value) out_ << v;
    out_ << YAML::EndSeq;
    comment(doc);
  }

 protected:
  void enter(const char* key, const char* doc) override {
    out_ << YAML::Key << key << YAML::Value << YAML::BeginMap;
  }
  void leave() override { out_ << YAML::EndMap; }

 private:
  void comment(const char* doc) {
    if (docs_ && doc && *doc) out_ << YAML::Comment(doc);
  }
  bool docs_;
  YAML::Emitter out_;
};

}  // namespace

YAML::Node parse_yaml_file(const std::string& path) {
  // A directory (`include: ""` names the including file's folder) opens as a stream on Linux and
  // fails on the first read with std::ios_base::failure, which would end the program.
  std::error_code ec;
  IDSYNTH_CHECK(!std::filesystem::is_directory(path, ec), path, ": expected a config file, found a directory");
  try {
    YAML::Node root = YAML::LoadFile(path);
    if (root.IsNull()) return YAML::Node(YAML::NodeType::Map);
    IDSYNTH_CHECK(root.IsMap(), path, ": expected a mapping of sections at the top level, found ", describe(root));
    return root;
  } catch (const YAML::BadFile&) {
    fail(path, ": cannot open config file");
  } catch (const std::ios_base::failure& e) {
    fail(path, ": cannot read config file (", e.what(), ")");
  } catch (const YAML::ParserException& e) {
    fail(path, ": YAML syntax error at line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ", e.msg);
  } catch (const YAML::Exception& e) {
    // Not only syntax errors: e.g. yaml-cpp's own limits, which end the program if they escape.
    fail(path, ": YAML error at line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ", e.msg);
  }
}

// `over` laid on `base`: mappings merge key by key, anything else replaces. Both are fresh trees.
YAML::Node merge_yaml(YAML::Node base, const YAML::Node& over, const std::string& source) {
  if (!base.IsMap() || !over.IsMap()) return YAML::Clone(over);
  for (const auto& kv : over) {
    const std::string key = key_text(kv.first, source);
    base[key] = base[key].IsDefined() ? merge_yaml(base[key], kv.second, source) : YAML::Clone(kv.second);
  }
  return base;
}

// A config file with its `include:` presets (one path or a list, relative to the including file)
// laid underneath it, in order, recursively.
YAML::Node load_with_includes(const std::string& path, std::vector<std::string>& chain) {
  IDSYNTH_CHECK(chain.size() < 16, path, ": include: expected at most 16 nested includes");
  for (const auto& p : chain)
    IDSYNTH_CHECK(p != path, path, ": include: the file includes itself (through ", chain.back(), ")");
  chain.push_back(path);
  YAML::Node own = parse_yaml_file(path);
  YAML::Node merged(YAML::NodeType::Map);
  if (const YAML::Node inc = own["include"]; inc.IsDefined()) {
    std::vector<std::string> files;
    if (inc.IsScalar()) files.push_back(inc.Scalar());
    else if (inc.IsSequence())
      for (const auto& f : inc) {
        IDSYNTH_CHECK(f.IsScalar(), path, ": include: expected a file name or a list of file names, found ", describe(f));
        files.push_back(f.Scalar());
      }
    else fail(path, ": include: expected a file name or a list of file names, found ", describe(inc));
    const std::string dir = path.find('/') == std::string::npos ? "" : path.substr(0, path.rfind('/') + 1);
    for (const auto& f : files)
      merged = merge_yaml(merged, load_with_includes(f.rfind('/', 0) == 0 ? f : dir + f, chain), path);
    own.remove("include");
  }
  chain.pop_back();
  return merge_yaml(merged, own, path);
}

YAML::Node load_yaml_file(const std::string& path) {
  std::vector<std::string> chain;
  return load_with_includes(path, chain);
}

void apply_override(YAML::Node& root, const std::string& assignment) {
  const auto eq = assignment.find('=');
  IDSYNTH_CHECK(eq != std::string::npos && eq > 0, "--set ", assignment, ": expected key.path=value");
  const std::string path = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  YAML::Node value;
  try {
    value = YAML::Load(text);  // "30", "[cuda:0, cuda:1]", "true"
  } catch (const YAML::Exception& e) {
    fail("--set ", assignment, ": cannot parse the value (", e.msg, ")");
  }
  if (!root.IsDefined() || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  std::vector<std::string> parts;
  std::stringstream ss(path);
  for (std::string part; std::getline(ss, part, '.');) {
    IDSYNTH_CHECK(!part.empty(), "--set ", assignment, ": empty key in '", path, "'");
    parts.push_back(part);
  }
  // yaml-cpp nodes are handles: walk and assign through them.
  std::vector<YAML::Node> chain = {root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node next = chain.back()[parts[i]];
    if (!next.IsDefined() || next.IsNull()) {
      chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = chain.back()[parts[i]];
    }
    IDSYNTH_CHECK(next.IsMap(), "--set ", assignment, ": '", parts[i], "' is not a section");
    chain.push_back(next);
  }
  chain.back()[parts.back()] = value.IsNull() && !text.empty() ? YAML::Node(text) : value;
}

void read(const std::string& source, const YAML::Node& root, void* target, VisitFn visit) {
  Reader reader(source, root);
  try {
    visit(target, reader);
  } catch (const YAML::Exception& e) {
    fail(source, ": ", e.what());
  }
  std::vector<std::string> path;
  reader.check_unknown(root, path);
}

void load_into(const std::string& path, const std::vector<std::string>& overrides, void* target, VisitFn visit) {
  YAML::Node root = path.empty() ? YAML::Node(YAML::NodeType::Map) : load_yaml_file(path);
  for (const auto& o : overrides) apply_override(root, o);
  read(path.empty() ? "<defaults>" : path, root, target, visit);
}

std::string to_yaml(void* target, VisitFn visit, bool with_docs) {
  Writer writer(with_docs);
  visit(target, writer);
  return writer.str();
}

}  // namespace idsynth::config::detail
