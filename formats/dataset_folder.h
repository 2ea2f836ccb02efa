// Shard records and the manifest (docs/formats.md, "Dataset folder"). A shard counts as finished
// only when its record exists and its .h5 has the recorded size; `idsynth merge` also checks the
// sha256. The manifest is rebuilt from the records, so it never disagrees with them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace idsynth::formats {

struct ShardRecord {
  int64_t index = 0;
  std::string file;  // name inside shards/, e.g. shard-00003.h5
  uint64_t size = 0;
  std::string sha256;
  int64_t first_identity = 0;
  int64_t identities = 0;
  int64_t images = 0;
  int64_t draws = 0;  // images drawn, rejected redraws included
  // Every rejected draw, by reason: draws == images + rejected_no_face + rejected_identity.
  // Optional because records written before idsynth counted them lack the keys and must still read.
  std::optional<int64_t> rejected_no_face;   // the detector found no face (filter.alignment: detect)
  std::optional<int64_t> rejected_identity;  // a face, cosine below filter.min_similarity
  std::vector<int64_t> short_identities;

  // shard-NNNNN.json's fields, in file order (core/json_fields.h)
  template <class Self, class F>
  static void fields(Self& r, F& f) {
    f("index", r.index);
    f("file", r.file);
    f("size", r.size);
    f("sha256", r.sha256);
    f("first_identity", r.first_identity);
    f("identities", r.identities);
    f("images", r.images);
    f("draws", r.draws);
    f("rejected_no_face", r.rejected_no_face);
    f("rejected_identity", r.rejected_identity);
    f("short_identities", r.short_identities);
  }
};

// File names inside <output.dir>/shards/: shard-00042.h5 and shard-00042.json.
std::string shard_stem(int64_t index);
std::string shards_dir(const std::string& out_dir);
std::string shard_h5_path(const std::string& out_dir, int64_t index);
std::string shard_record_path(const std::string& out_dir, int64_t index);

// Writes shards/shard-NNNNN.json atomically.
void write_record(const std::string& out_dir, const ShardRecord& record);
// The record of shard `index` if it exists and parses; nullopt-like: returns false when absent or unreadable.
bool read_record(const std::string& out_dir, int64_t index, ShardRecord* record);
// Record present and the .h5 has the recorded size (the cheap check a run uses to skip a shard).
bool shard_finished(const std::string& out_dir, int64_t index);

// Rebuilds manifest.json from the records of shards [0, n_shards) (checking sizes, not hashes).
// Returns the number of finished shards.
int64_t rebuild_manifest(const std::string& out_dir, int64_t n_shards);

struct VerifyReport {
  int64_t shards_expected = 0;
  std::vector<int64_t> ok;
  std::vector<int64_t> missing;             // no record (never finished)
  std::vector<std::string> damaged;         // "shard-00003.h5: size 1234, recorded 5678" ...
  std::vector<int64_t> damaged_index;
  std::vector<std::string> stale_temporaries;  // *.tmp.<pid> left by killed processes
  int64_t images = 0;
  int64_t short_identities = 0;
  // Sums over the verified shards; unset when one of their records predates the counters.
  std::optional<int64_t> rejected_no_face, rejected_identity;
  bool complete() const { return missing.empty() && damaged.empty(); }
};

// `idsynth merge`: checks every record against its file (size and sha256). With `repair`, removes
// the records of damaged shards (so the next run regenerates them) and stale temporaries, then
// rebuilds the manifest.
VerifyReport verify_dataset(const std::string& out_dir, int64_t n_shards, bool repair);
std::string describe(const VerifyReport& report);

// An exclusive lock on one task of a dataset folder, so that a second `idsynth generate` on the same
// task (a double submit) refuses instead of doing the same work twice: <dir>/generate-task-K-of-N.lock,
// locked with flock(2) and holding the holder's "host=H" and "pid=P". The kernel drops the lock when
// its process dies, so a crash or SIGKILL leaves no lock, only the text, which the next run reports
// (stale_holder) and replaces. On file systems without flock the text decides: a lock whose pid is
// not running on this host is stale; one from another host is refused with the file named.
// Throws idsynth::Error naming the file and the holder. The destructor removes the file.
class TaskLock {
 public:
  TaskLock(const std::string& out_dir, int64_t task_index, int64_t task_count);
  ~TaskLock();
  TaskLock(const TaskLock&) = delete;
  TaskLock& operator=(const TaskLock&) = delete;
  const std::string& path() const { return path_; }
  // "host H, pid P" of a run that died holding the lock ("" when there was none).
  const std::string& stale_holder() const { return stale_; }

 private:
  std::string path_;
  int fd_ = -1;
  std::string stale_;
};
std::string task_lock_path(const std::string& out_dir, int64_t task_index, int64_t task_count);

struct ShardData;
// Calls `visit` with every finished shard of the dataset in `dir` (of `n_shards`), in shard order.
// Throws when a shard is missing or its size differs from its record and `require_complete`.
void for_each_shard(const std::string& dir, int64_t n_shards, const std::function<void(const ShardData&)>& visit,
                    bool require_complete = true);

}  // namespace idsynth::formats
