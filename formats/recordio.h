// MXNet RecordIO as insightface uses it (train.rec + train.idx): the one reader and the one writer.
// A record on disk is magic 0xced7230a, a uint32 (cflag << 29 | length), the payload and zero padding
// to 4 bytes; a payload that contains the magic may be split into parts (cflag 1 = first, 2 = middle,
// 3 = last), joined again with the magic on reading. The payload of an insightface record is an
// IRHeader ('IfQQ': flag, label, id, id2), `flag` float labels when flag > 0, then the image bytes.
// train.idx holds "<key>\t<offset>" lines. The reader takes hostile files: every offset and length
// is checked against the file before it is used.
// Ref: apache/mxnet python/mxnet/recordio.py (MXRecordIO, MXIndexedRecordIO, IRHeader, pack/unpack),
//      dmlc-core include/dmlc/recordio.h (the split-record flags).
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/file_util.h"

namespace idsynth::formats {

constexpr uint32_t kRecordIOMagic = 0xced7230a;
constexpr size_t kIRHeaderBytes = 24;

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

// Random access to an indexed .rec file (memory-mapped).
class RecordIOReader {
 public:
  RecordIOReader(const std::string& rec_path, const std::string& idx_path);
  const std::string& path() const { return rec_path_; }
  std::vector<uint64_t> keys() const;        // in key order
  bool contains(uint64_t key) const { return offsets_.count(key) > 0; }
  std::string read(uint64_t key) const;       // the record's payload (IRHeader + labels + image)

 private:
  std::string rec_path_;
  MappedFile map_;
  std::map<uint64_t, uint64_t> offsets_;  // key -> offset
};

// Writes <rec_path> and <idx_path> atomically: records go to a temporary file that finish() renames.
class RecordIOWriter {
 public:
  RecordIOWriter(std::string rec_path, std::string idx_path);
  ~RecordIOWriter();  // removes the temporary file unless finish() ran
  RecordIOWriter(const RecordIOWriter&) = delete;
  RecordIOWriter& operator=(const RecordIOWriter&) = delete;

  void write(uint64_t key, const std::string& payload);
  // Writes the first record again (a header record whose counts are known only at the end); the
  // payload must have the size it had.
  void rewrite_first(const std::string& payload);
  void finish();

 private:
  void put(const std::string& payload);
  std::string rec_path_, idx_path_, tmp_path_;
  std::ofstream rec_;
  std::string idx_;
  size_t first_size_ = 0;
  bool finished_ = false;
};

// A plain pair as insightface's rec_builder writes it: record i is IRHeader(0, labels[i], i, 0) + image.
void write_recordio(const std::string& rec_path, const std::string& idx_path, const std::vector<std::string>& encoded,
                    const std::vector<int64_t>& labels);

}  // namespace idsynth::formats
