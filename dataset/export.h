// Reading a finished dataset back and turning it into the files FR trainers read:
//  - insightface RecordIO (train.rec / train.idx / property), the MS1M/Glint360K layout that
//    arcface_torch's MXFaceDataset loads: record 0 is a header whose label pair [N+1, N+1+C] gives
//    the image records 1..N and the per-identity records N+1..N+C (label ranges [first, end));
//  - one folder per identity of JPEGs (torchvision ImageFolder);
// and `idsynth inspect`: counts, per-identity cosine statistics, a contact sheet.
// Ref: insightface recognition/arcface_torch/dataset.py (MXFaceDataset); the RecordIO files
//      themselves are formats/recordio.h.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dataset/generate_config.h"
#include "formats/shard_file.h"

namespace idsynth::dataset {

// The config a dataset was generated with (<dir>/config.resolved.yaml).
GenerateConfig read_dataset_config(const std::string& dir);
// Shards of the dataset in `dir` (from its config).
int64_t dataset_shard_count(const std::string& dir);
// Calls `visit` with every finished shard of the dataset in `dir`, in shard order. Throws when a
// shard is missing or its size differs from its record (run `idsynth merge`).
void for_each_shard(const std::string& dir, const std::function<void(const formats::ShardData&)>& visit,
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

struct InspectOptions {
  std::string sheet;          // contact sheet PNG path (empty: none)
  int64_t sheet_identities = 8;
  int64_t sheet_images = 8;
  int64_t tile = 96;          // pixels per tile
};
// Counts, acceptance, cosine statistics per identity and an attempts histogram, as text.
std::string inspect_dataset(const std::string& dir, const InspectOptions& options);

}  // namespace idsynth::dataset
