// Reading a finished dataset back and turning it into the files FR trainers read:
//  - insightface RecordIO (train.rec / train.idx / property), the MS1M/Glint360K layout that
//    arcface_torch's MXFaceDataset loads: record 0 is a header whose label pair [N+1, N+1+C] gives
//    the image records 1..N and the per-identity records N+1..N+C (label ranges [first, end));
//  - one folder per identity of JPEGs (torchvision ImageFolder);
// and `idsynth inspect`: counts, per-identity cosine statistics, a contact sheet.
// Ref: apache/mxnet python/mxnet/recordio.py (MXRecordIO, IRHeader 'IfQQ', pack/unpack),
//      insightface recognition/arcface_torch/dataset.py (MXFaceDataset).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "generator/shard_file.h"

namespace idsynth::generator {

// Calls `visit` with every finished shard of the dataset in `dir`, in shard order. Throws when a
// shard is missing or its size differs from its record (run `idsynth merge`).
void for_each_shard(const std::string& dir, const std::function<void(const ShardData&)>& visit,
                    bool require_complete = true);

struct ExportOptions {
  std::string format = "recordio";  // recordio | folder
  std::string image = "aligned";    // aligned | full
  bool allow_incomplete = false;
};

struct ExportSummary {
  int64_t images = 0;
  int64_t classes = 0;
  std::vector<std::string> files;
};

// Labels are dense: identities with at least one image, in identity order, get 0..C-1.
ExportSummary export_dataset(const std::string& dir, const std::string& out, const ExportOptions& options);

// ---- MXNet RecordIO, as insightface uses it -------------------------------------------------
constexpr uint32_t kRecordIOMagic = 0xced7230a;

struct IRHeader {
  uint32_t flag = 0;          // number of float labels after the header (0: `label` holds the label)
  float label = 0.0f;
  uint64_t id = 0;
  uint64_t id2 = 0;
  std::vector<float> labels;  // flag entries
};
// header + payload as mx.recordio.pack writes it.
std::string pack_irheader(const IRHeader& header, const std::string& payload);
// The inverse; `payload` receives the bytes after the header (and its labels).
IRHeader unpack_irheader(const std::string& record, std::string* payload, const std::string& source);

// A reader of train.rec + train.idx written from the format description (used by the tests).
class RecordIOReader {
 public:
  RecordIOReader(const std::string& rec_path, const std::string& idx_path);
  std::vector<uint64_t> keys() const;
  std::string read(uint64_t key) const;  // the record's bytes (IRHeader + payload)

 private:
  std::string rec_path_;
  std::vector<std::pair<uint64_t, uint64_t>> index_;  // key, offset
  std::string data_;
};

struct InspectOptions {
  std::string sheet;          // contact sheet PNG path (empty: none)
  int64_t sheet_identities = 8;
  int64_t sheet_images = 8;
  int64_t tile = 96;          // pixels per tile
};
// Counts, acceptance, cosine statistics per identity and an attempts histogram, as text.
std::string inspect_dataset(const std::string& dir, const InspectOptions& options);

}  // namespace idsynth::generator
