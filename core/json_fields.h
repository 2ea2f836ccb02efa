// One list of fields per struct drives both directions of its JSON (eval's metrics.json entries,
// the dataset's shard records). A struct lists its fields once, in file order:
//
//   template <class Self, class F> static void fields(Self& m, F& f) {
//     f("accuracy", m.accuracy);
//     f("xnorm", m.xnorm);  // a std::optional: may be absent
//   }
//
// write() walks that list into a JSON object and read() walks it out of one, so the writer and the
// reader cannot drift apart and the list is also the file's layout (keys in listed order). A plain
// member is required when reading; a std::optional member may be absent and is written only when
// set. Unknown keys are ignored, so a newer file still reads. (Self is the struct, const when
// writing, so one list serves both without a cast.)
//
// Member types: double, int64_t, bool, std::string, another struct with fields, std::vector of any of
// these (a JSON array), and Keyed<T> (a JSON object whose keys are data, e.g. "1e-03").
// Errors are one line: "<where>: <key>: <nested key>: expected a number, found string".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/check.h"
#include "core/json.h"

namespace idsynth::json_fields {

// A JSON object whose keys are data rather than field names, in file order.
template <class T>
using Keyed = std::vector<std::pair<std::string, T>>;

// Every overload is declared before any template body, so a template finds the others by ordinary
// lookup whatever the member type (argument-dependent lookup would not see this namespace).
json::Value to_value(double x);
json::Value to_value(int64_t x);
json::Value to_value(uint64_t x);
json::Value to_value(bool x);
json::Value to_value(const std::string& x);
template <class T> json::Value to_value(const std::vector<T>& x);
template <class T> json::Value to_value(const Keyed<T>& x);
template <class T> json::Value to_value(const T& x);

void from_value(const json::Value& v, const std::string& where, double& x);
void from_value(const json::Value& v, const std::string& where, int64_t& x);
void from_value(const json::Value& v, const std::string& where, uint64_t& x);
void from_value(const json::Value& v, const std::string& where, bool& x);
void from_value(const json::Value& v, const std::string& where, std::string& x);
template <class T> void from_value(const json::Value& v, const std::string& where, std::vector<T>& x);
template <class T> void from_value(const json::Value& v, const std::string& where, Keyed<T>& x);
template <class T> void from_value(const json::Value& v, const std::string& where, T& x);

// What a member of this type looks like in JSON, for the message about a missing key.
inline const char* expected(const double*) { return "a number"; }
inline const char* expected(const int64_t*) { return "an integer"; }
inline const char* expected(const uint64_t*) { return "a non-negative integer"; }
inline const char* expected(const bool*) { return "true or false"; }
inline const char* expected(const std::string*) { return "a string"; }
template <class T> const char* expected(const std::vector<T>*) { return "an array"; }
template <class T> const char* expected(const Keyed<T>*) { return "an object"; }
template <class T> const char* expected(const T*) { return "an object"; }

class Writer {
 public:
  template <class T>
  void operator()(const char* key, const T& x) {
    object_.set(key, to_value(x));
  }
  template <class T>
  void operator()(const char* key, const std::optional<T>& x) {
    if (x) object_.set(key, to_value(*x));
  }
  json::Value take() { return std::move(object_); }

 private:
  json::Value object_ = json::Value::object();
};

class Reader {
 public:
  Reader(const json::Value& object, std::string where) : object_(object), where_(std::move(where)) {}
  template <class T>
  void operator()(const char* key, T& x) {
    const json::Value* v = object_.find(key);
    IDSYNTH_CHECK(v != nullptr, where_, ": ", key, ": expected ", expected(static_cast<const T*>(nullptr)), ", found nothing");
    from_value(*v, where_ + ": " + key, x);
  }
  template <class T>
  void operator()(const char* key, std::optional<T>& x) {
    x.reset();
    if (const json::Value* v = object_.find(key)) {
      T value{};
      from_value(*v, where_ + ": " + key, value);
      x = std::move(value);
    }
  }

 private:
  const json::Value& object_;
  std::string where_;
};

inline json::Value to_value(double x) { return json::Value(x); }
inline json::Value to_value(int64_t x) { return json::Value(x); }
inline json::Value to_value(uint64_t x) { return json::Value(x); }
inline json::Value to_value(bool x) { return json::Value(x); }
inline json::Value to_value(const std::string& x) { return json::Value(x); }

template <class T>
json::Value to_value(const std::vector<T>& x) {
  json::Value a = json::Value::array();
  for (const auto& e : x) a.push_back(to_value(e));
  return a;
}

template <class T>
json::Value to_value(const Keyed<T>& x) {
  json::Value o = json::Value::object();
  for (const auto& [key, e] : x) o.set(key, to_value(e));
  return o;
}

template <class T>
json::Value to_value(const T& x) {
  Writer w;
  T::fields(x, w);
  return w.take();
}

inline void from_value(const json::Value& v, const std::string& where, double& x) { x = v.as_double(where); }
inline void from_value(const json::Value& v, const std::string& where, int64_t& x) { x = v.as_int(where); }
inline void from_value(const json::Value& v, const std::string& where, uint64_t& x) {
  const int64_t i = v.as_int(where);
  IDSYNTH_CHECK(i >= 0, where, ": expected a non-negative integer, found ", i);
  x = static_cast<uint64_t>(i);
}
inline void from_value(const json::Value& v, const std::string& where, bool& x) { x = v.as_bool(where); }
inline void from_value(const json::Value& v, const std::string& where, std::string& x) { x = v.as_string(where); }

template <class T>
void from_value(const json::Value& v, const std::string& where, std::vector<T>& x) {
  const auto& a = v.as_array(where);
  x.assign(a.size(), T{});
  for (size_t i = 0; i < a.size(); ++i) from_value(a[i], cat(where, "[", i, "]"), x[i]);
}

template <class T>
void from_value(const json::Value& v, const std::string& where, Keyed<T>& x) {
  x.clear();
  for (const auto& [key, e] : v.as_object(where)) {
    x.emplace_back(key, T{});
    from_value(e, where + ": " + key, x.back().second);
  }
}

template <class T>
void from_value(const json::Value& v, const std::string& where, T& x) {
  v.as_object(where);  // the one-line type error when it is not an object
  Reader r(v, where);
  T::fields(x, r);
}

// The JSON object of `m`.
template <class T>
json::Value write(const T& m) {
  return to_value(m);
}

// `m` from its object; `where` names the file and the entry in errors ("run/metrics.json: lfw").
template <class T>
T read(const json::Value& v, const std::string& where) {
  T m{};
  from_value(v, where, m);
  return m;
}

}  // namespace idsynth::json_fields
