#include "formats/dataset_folder.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/check.h"
#include "core/file_util.h"
#include "core/hashing.h"
#include "core/json.h"
#include "core/json_fields.h"
#include "core/log.h"
#include "formats/shard_file.h"

namespace idsynth::formats {
namespace {

namespace fs = std::filesystem;

// A total of a counter that old records may lack: once one record has none, the total is unknown.
struct CountTotal {
  int64_t sum = 0;
  bool known = true;
  void add(const std::optional<int64_t>& count) {
    if (count) sum += *count;
    else known = false;
  }
  std::optional<int64_t> value() const { return known ? std::optional<int64_t>(sum) : std::nullopt; }
};

}  // namespace

std::string shard_stem(int64_t index) {
  char name[32];
  std::snprintf(name, sizeof(name), "shard-%05lld", static_cast<long long>(index));
  return name;
}

std::string shards_dir(const std::string& out_dir) { return (fs::path(out_dir) / "shards").string(); }
std::string shard_h5_path(const std::string& out_dir, int64_t index) {
  return (fs::path(shards_dir(out_dir)) / (shard_stem(index) + ".h5")).string();
}
std::string shard_record_path(const std::string& out_dir, int64_t index) {
  return (fs::path(shards_dir(out_dir)) / (shard_stem(index) + ".json")).string();
}

void write_record(const std::string& out_dir, const ShardRecord& record) {
  write_file_atomic(shard_record_path(out_dir, record.index), json_fields::write(record).dump(2) + "\n");
}

bool read_record(const std::string& out_dir, int64_t index, ShardRecord* record) {
  const std::string path = shard_record_path(out_dir, index);
  if (!file_exists(path)) return false;
  try {
    *record = json_fields::read<ShardRecord>(json::parse_file(path), path);
    return record->index == index;
  } catch (const std::exception& e) {
    LOG_WRN(path, ": unreadable shard record (", e.what(), "); the shard will be regenerated");
    return false;
  }
}

bool shard_finished(const std::string& out_dir, int64_t index) {
  ShardRecord r;
  if (!read_record(out_dir, index, &r)) return false;
  const std::string h5 = shard_h5_path(out_dir, index);
  return file_exists(h5) && file_size(h5) == r.size;
}

int64_t rebuild_manifest(const std::string& out_dir, int64_t n_shards) {
  json::Value shards = json::Value::array();
  int64_t finished = 0, images = 0, identities = 0, short_ids = 0;
  CountTotal no_face, identity;
  for (int64_t k = 0; k < n_shards; ++k) {
    ShardRecord r;
    if (!read_record(out_dir, k, &r)) continue;
    const std::string h5 = shard_h5_path(out_dir, k);
    if (!file_exists(h5) || file_size(h5) != r.size) continue;
    no_face.add(r.rejected_no_face);
    identity.add(r.rejected_identity);
    ++finished;
    images += r.images;
    identities += r.identities;
    short_ids += static_cast<int64_t>(r.short_identities.size());
    json::Value j = json::Value::object();
    j.set("index", r.index);
    j.set("file", "shards/" + r.file);
    j.set("size", r.size);
    j.set("sha256", r.sha256);
    j.set("first_identity", r.first_identity);
    j.set("identities", r.identities);
    j.set("images", r.images);
    shards.push_back(j);
  }
  json::Value m = json::Value::object();
  m.set("format", "idsynth-manifest");
  m.set("format_version", 1);
  m.set("shards_expected", n_shards);
  m.set("shards_finished", finished);
  m.set("complete", json::Value(finished == n_shards));
  m.set("identities", identities);
  m.set("images", images);
  m.set("short_identities", short_ids);
  if (no_face.known) m.set("rejected_no_face", no_face.sum);
  if (identity.known) m.set("rejected_identity", identity.sum);
  m.set("shards", shards);
  // Unchanged: not rewritten, so checking a finished dataset on a read-only file system works.
  const std::string path = (fs::path(out_dir) / "manifest.json").string();
  const std::string text = m.dump(2) + "\n";
  if (!file_exists(path) || read_text_file(path) != text) write_file_atomic(path, text);
  return finished;
}

VerifyReport verify_dataset(const std::string& out_dir, int64_t n_shards, bool repair) {
  VerifyReport rep;
  rep.shards_expected = n_shards;
  const std::string dir = shards_dir(out_dir);
  if (is_directory(dir)) {
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (name.find(".tmp.") != std::string::npos) rep.stale_temporaries.push_back(name);
    }
  }
  std::sort(rep.stale_temporaries.begin(), rep.stale_temporaries.end());
  CountTotal no_face, identity;
  for (int64_t k = 0; k < n_shards; ++k) {
    ShardRecord r;
    if (!read_record(out_dir, k, &r)) {
      rep.missing.push_back(k);
      continue;
    }
    const std::string h5 = shard_h5_path(out_dir, k);
    std::string problem;
    if (!file_exists(h5)) {
      problem = "file missing";
    } else if (file_size(h5) != r.size) {
      problem = cat("size ", file_size(h5), ", recorded ", r.size);
    } else if (sha256_file(h5) != r.sha256) {
      problem = cat("sha256 differs from the record");
    }
    if (problem.empty()) {
      no_face.add(r.rejected_no_face);
      identity.add(r.rejected_identity);
      rep.ok.push_back(k);
      rep.images += r.images;
      rep.short_identities += static_cast<int64_t>(r.short_identities.size());
    } else {
      rep.damaged.push_back(cat(r.file, ": ", problem));
      rep.damaged_index.push_back(k);
      if (repair) fs::remove(shard_record_path(out_dir, k));
    }
  }
  rep.rejected_no_face = no_face.value();
  rep.rejected_identity = identity.value();
  if (repair) {
    // Only the process that owns a shard writes its temporary; a merge runs when no run is active.
    for (const auto& name : rep.stale_temporaries) fs::remove(fs::path(dir) / name);
    rebuild_manifest(out_dir, n_shards);
  }
  return rep;
}

namespace {
std::string index_list(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i == 20) return s + cat(" ... (", v.size(), " in all)");
    s += (i ? " " : "") + std::to_string(v[i]);
  }
  return s;
}
}  // namespace

std::string describe(const VerifyReport& r) {
  std::string s = cat("shards: ", r.ok.size(), " of ", r.shards_expected, " verified (size + sha256), ", r.images,
                      " images, ", r.short_identities, " short identities\n");
  if (r.rejected_no_face && r.rejected_identity)
    s += cat("rejected draws: ", *r.rejected_no_face, " no face, ", *r.rejected_identity, " wrong identity\n");
  if (!r.missing.empty()) s += cat("missing shards: ", index_list(r.missing), "\n");
  if (!r.damaged.empty()) {
    s += cat("damaged shards (", r.damaged.size(), "):\n");
    for (const auto& d : r.damaged) s += "  " + d + "\n";
  }
  if (!r.stale_temporaries.empty()) s += cat("stale temporaries: ", r.stale_temporaries.size(), "\n");
  s += r.complete() ? "dataset complete\n" : "dataset incomplete: rerun `idsynth generate` with the same config\n";
  return s;
}

// ---- task lock ---------------------------------------------------------------------------------

namespace {

std::string this_host() {
  char name[256] = {0};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "unknown-host";
  return name;
}

std::string fd_text(int fd) {
  std::string text(256, '\0');
  const ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  text.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return text;
}

// "host=H\npid=P\n" -> H, P ("" and -1 where absent).
void parse_holder(const std::string& text, std::string* host, long long* pid) {
  *host = "";
  *pid = -1;
  size_t at = 0;
  while (at < text.size()) {
    const size_t end = std::min(text.find('\n', at), text.size());
    const std::string line = text.substr(at, end - at);
    if (line.rfind("host=", 0) == 0) *host = line.substr(5);
    if (line.rfind("pid=", 0) == 0) *pid = std::atoll(line.c_str() + 4);
    at = end + 1;
  }
}

std::string describe_holder(const std::string& text) {
  std::string host;
  long long pid = -1;
  parse_holder(text, &host, &pid);
  if (host.empty() || pid < 0) return "holder not recorded yet";
  return cat("host ", host, ", pid ", pid);
}

bool pid_running(long long pid) { return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }

}  // namespace

std::string task_lock_path(const std::string& out_dir, int64_t task_index, int64_t task_count) {
  return (fs::path(out_dir) / cat("generate-task-", task_index, "-of-", task_count, ".lock")).string();
}

TaskLock::TaskLock(const std::string& out_dir, int64_t task_index, int64_t task_count)
    : path_(task_lock_path(out_dir, task_index, task_count)) {
  const std::string refusal = cat(": task ", task_index, " of ", task_count,
                                  " is being generated by another idsynth generate (");
  for (int tries = 0; fd_ < 0; ++tries) {
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      const int err = errno;
      fail(path_, ": cannot create the lock file (", std::strerror(err), "); output.dir must be writable");
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      const std::string text = fd_text(fd);
      if (err == EWOULDBLOCK) {
        ::close(fd);
        fail(path_, refusal, describe_holder(text), "); wait for it to finish or stop it, then rerun");
      }
      if (err != ENOLCK && err != EOPNOTSUPP && err != ENOSYS && err != EINVAL) {
        ::close(fd);
        fail(path_, ": cannot lock (", std::strerror(err), ")");
      }
      // No flock on this file system: the recorded holder decides.
      std::string host;
      long long pid = -1;
      parse_holder(text, &host, &pid);
      if (!host.empty() && pid >= 0 && !(host == this_host() && !pid_running(pid))) {
        ::close(fd);
        fail(path_, refusal, describe_holder(text), "); this file system has no flock: if that run is gone, remove ",
             path_, " and rerun");
      }
      fd_ = fd;
      break;
    }
    // The previous holder removes the file before it unlocks: lock the file now at the path, not a removed one.
    struct stat locked, named;
    if (::fstat(fd, &locked) == 0 && ::stat(path_.c_str(), &named) == 0 && locked.st_ino == named.st_ino &&
        locked.st_dev == named.st_dev) {
      fd_ = fd;
      break;
    }
    ::close(fd);
    IDSYNTH_CHECK(tries < 100, path_, ": cannot lock: the file keeps being replaced");
  }
  const std::string old = fd_text(fd_);
  if (!old.empty()) stale_ = describe_holder(old);
  const std::string text = cat("host=", this_host(), "\npid=", ::getpid(), "\n");
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    const int err = errno;
    ::unlink(path_.c_str());
    ::close(fd_);
    fail(path_, ": cannot write the lock file (", std::strerror(err), ")");
  }
}

TaskLock::~TaskLock() {
  if (fd_ < 0) return;
  ::unlink(path_.c_str());  // while still locked: the next run creates and locks a new file
  ::close(fd_);
}

void for_each_shard(const std::string& dir, int64_t n_shards, const std::function<void(const ShardData&)>& visit,
                    bool require_complete) {
  std::vector<int64_t> missing;
  for (int64_t k = 0; k < n_shards; ++k)
    if (!shard_finished(dir, k)) missing.push_back(k);
  IDSYNTH_CHECK(!require_complete || missing.empty(), dir, ": ", missing.size(), " of ", n_shards,
                " shards missing or damaged (first: ", missing.empty() ? 0 : missing[0],
                "); run `idsynth merge` and finish the dataset with `idsynth generate`");
  for (int64_t k = 0; k < n_shards; ++k)
    if (std::find(missing.begin(), missing.end(), k) == missing.end()) visit(read_shard(shard_h5_path(dir, k)));
}

}  // namespace idsynth::formats
