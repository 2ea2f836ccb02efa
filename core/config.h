// Typed YAML configs. Each config struct lists its fields once, in a `visit` method, with the key,
// the default (the member initialiser), a one-line doc and its constraints; that single list drives
// reading (type checks, unknown keys are errors naming the key path and the file), command-line
// overrides (`--set generation.steps=30`), validation and writing the resolved config with comments
// (`idsynth config --defaults` prints every default in one place). A file may start from presets:
// `include: base.yaml` (or a list), paths relative to the file; its own keys override theirs.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace idsynth::config {

struct IntRange {
  int64_t min = std::numeric_limits<int64_t>::min();
  int64_t max = std::numeric_limits<int64_t>::max();
};
struct RealRange {
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
};

class Visitor {
 public:
  virtual ~Visitor() = default;
  virtual void field(const char* key, int64_t& value, const char* doc, IntRange range = {}) = 0;
  virtual void field(const char* key, double& value, const char* doc, RealRange range = {}) = 0;
  virtual void field(const char* key, bool& value, const char* doc) = 0;
  // `choices` empty: any string.
  virtual void field(const char* key, std::string& value, const char* doc, std::vector<std::string> choices = {}) = 0;
  virtual void field(const char* key, std::vector<std::string>& value, const char* doc) = 0;
  // A list of "FILE[:SCALE]" strings (LoRA lists) whose YAML items may also be written as maps
  // {path: FILE, scale: S}; a map item is stored as "FILE:S" ("FILE:1" without a scale), so the
  // rest of the program, and the config written back, see one form.
  virtual void path_scale_list(const char* key, std::vector<std::string>& value, const char* doc) { field(key, value, doc); }

  // A nested section: `body` visits its fields.
  template <typename Section>
  void section(const char* key, Section& s, const char* doc) {
    enter(key, doc);
    s.visit(*this);
    leave();
  }

 protected:
  virtual void enter(const char* key, const char* doc) = 0;
  virtual void leave() = 0;
};

namespace detail {
// Type-erased entry points so the YAML machinery stays in config.cpp.
using VisitFn = void (*)(void* self, Visitor& v);
void load_into(const std::string& path, const std::vector<std::string>& overrides, void* target, VisitFn visit);
std::string to_yaml(void* target, VisitFn visit, bool with_docs);
}  // namespace detail

// Reads `path` (if not empty) into `cfg`, then applies overrides like "generation.steps=30".
// Unknown keys, wrong types and values outside their range throw idsynth::Error:
// "<file>: generation.steps: expected an integer >= 1, found -3".
template <typename Config>
Config load(const std::string& path, const std::vector<std::string>& overrides = {}) {
  Config cfg;
  detail::load_into(path, overrides, &cfg, [](void* self, Visitor& v) { static_cast<Config*>(self)->visit(v); });
  cfg.check();
  return cfg;
}

// The config as YAML; with_docs adds each field's doc as a comment.
template <typename Config>
std::string to_yaml(const Config& cfg, bool with_docs = false) {
  return detail::to_yaml(const_cast<Config*>(&cfg), [](void* self, Visitor& v) { static_cast<Config*>(self)->visit(v); },
                         with_docs);
}

// Writes the resolved config next to an output (atomic), e.g. <out>/config.resolved.yaml.
template <typename Config>
void write_resolved(const Config& cfg, const std::string& path);

}  // namespace idsynth::config

#include "core/file_util.h"

namespace idsynth::config {
template <typename Config>
void write_resolved(const Config& cfg, const std::string& path) {
  write_file_atomic(path, "# resolved idsynth config (defaults + file + overrides)\n" + to_yaml(cfg, false));
}
}  // namespace idsynth::config
