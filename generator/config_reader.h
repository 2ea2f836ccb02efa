// Reading a reference config.json into a config struct the way diffusers' from_config and
// transformers' from_pretrained do: keys present in the file override the struct's defaults, keys
// left at their defaults are logged at DEBUG, keys the struct does not know are a warning (a key
// idsynth does not read may change what the reference would compute).
// Header-only so every config struct in generator/ shares it.
#pragma once

#include <cmath>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/json.h"
#include "core/log.h"

namespace idsynth::generator {

class ConfigReader {
 public:
  // `source` names the file in every message; `ignored` lists keys that are known to be irrelevant
  // (bookkeeping such as "_class_name", or settings of other classes) and are skipped silently.
  ConfigReader(const json::Value& root, std::string source, std::vector<std::string> ignored = {})
      : root_(root), source_(std::move(source)), ignored_(ignored.begin(), ignored.end()) {
    IDSYNTH_CHECK(root_.is_object(), source_, ": expected a JSON object, found ", root_.type_name());
  }

  const std::string& source() const { return source_; }

  // Each getter leaves `value` untouched when the key is absent (or null where null means default).
  void get(const std::string& key, int64_t& value) {
    if (const json::Value* v = take(key, value)) value = v->as_int(field(key));
  }
  void get(const std::string& key, double& value) {
    if (const json::Value* v = take(key, value)) value = v->as_double(field(key));
  }
  void get(const std::string& key, bool& value) {
    if (const json::Value* v = take(key, value)) value = v->as_bool(field(key));
  }
  void get(const std::string& key, std::string& value) {
    if (const json::Value* v = take(key, value)) value = v->as_string(field(key));
  }
  // Optional string: null in the file keeps std::nullopt.
  void get(const std::string& key, std::optional<std::string>& value) {
    used_.insert(key);
    const json::Value* v = root_.find(key);
    if (v == nullptr || v->is_null()) return;
    value = v->as_string(field(key));
  }
  void get(const std::string& key, std::vector<int64_t>& value) {
    if (const json::Value* v = take(key, value)) {
      value.clear();
      for (const auto& item : v->as_array(field(key))) value.push_back(item.as_int(field(key)));
    }
  }
  // Optional list of numbers (diffusers' trained_betas): null keeps it empty.
  void get(const std::string& key, std::vector<double>& value) {
    used_.insert(key);
    const json::Value* v = root_.find(key);
    if (v == nullptr || v->is_null()) return;
    value.clear();
    for (const auto& item : v->as_array(field(key))) value.push_back(item.as_double(field(key)));
  }

  // Marks keys as known without reading them.
  void skip(std::initializer_list<const char*> keys) {
    for (const char* k : keys) used_.insert(k);
  }

  // Logs the keys nobody read; call after every get().
  void finish(const std::string& what) const {
    std::string unknown;
    for (const auto& [key, value] : root_.as_object()) {
      if (used_.count(key) || ignored_.count(key) || (!key.empty() && key[0] == '_')) continue;
      unknown += (unknown.empty() ? "" : ", ") + key;
    }
    if (!unknown.empty()) LOG_WRN(source_, ": keys not used by ", what, ": ", unknown);
    if (!defaulted_.empty()) LOG_DBG(source_, ": ", what, " keys left at their defaults: ", defaulted_);
  }

 private:
  template <typename T>
  const json::Value* take(const std::string& key, const T&) {
    used_.insert(key);
    const json::Value* v = root_.find(key);
    if (v == nullptr) {
      defaulted_ += (defaulted_.empty() ? "" : ", ") + key;
      return nullptr;
    }
    return v;
  }
  std::string field(const std::string& key) const { return cat(source_, ": ", key); }

  const json::Value& root_;
  std::string source_;
  std::set<std::string> ignored_;
  std::set<std::string> used_;
  std::string defaulted_;
};

}  // namespace idsynth::generator
