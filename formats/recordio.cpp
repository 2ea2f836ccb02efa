// Ref: mxnet recordio.py, dmlc-core recordio.h (see recordio.h).
#include "formats/recordio.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <sstream>

#include "core/check.h"

namespace idsynth::formats {
namespace {

template <typename T>
void put_le(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

constexpr uint32_t kMaxLength = (1u << 29) - 1;

}  // namespace

std::string pack_irheader(const IRHeader& h, const std::string& payload) {
  std::string out;
  put_le<uint32_t>(out, static_cast<uint32_t>(h.labels.size()));
  put_le<float>(out, h.labels.empty() ? h.label : 0.0f);
  put_le<uint64_t>(out, h.id);
  put_le<uint64_t>(out, h.id2);
  for (float l : h.labels) put_le<float>(out, l);
  return out + payload;
}

IRHeader unpack_irheader(const std::string& r, std::string* payload, const std::string& source) {
  IDSYNTH_CHECK(r.size() >= kIRHeaderBytes, source, ": record of ", r.size(),
                " bytes: expected at least the 24-byte IRHeader");
  IRHeader h;
  std::memcpy(&h.flag, r.data(), 4);
  std::memcpy(&h.label, r.data() + 4, 4);
  std::memcpy(&h.id, r.data() + 8, 8);
  std::memcpy(&h.id2, r.data() + 16, 8);
  IDSYNTH_CHECK((r.size() - kIRHeaderBytes) / 4 >= h.flag, source, ": IRHeader flag ", h.flag, ": expected ", h.flag,
                " labels after the header, found ", (r.size() - kIRHeaderBytes) / 4);
  h.labels.resize(h.flag);
  if (h.flag > 0) std::memcpy(h.labels.data(), r.data() + kIRHeaderBytes, 4 * static_cast<size_t>(h.flag));
  if (payload != nullptr) *payload = r.substr(kIRHeaderBytes + 4 * static_cast<size_t>(h.flag));
  return h;
}

RecordIOReader::RecordIOReader(const std::string& rec_path, const std::string& idx_path)
    : rec_path_(rec_path), map_(rec_path) {
  std::istringstream in(read_text_file(idx_path));
  std::string line;
  for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.empty()) continue;
    std::istringstream ls(line);
    int64_t key = -1;
    uint64_t offset = 0;
    std::string rest;
    IDSYNTH_CHECK(static_cast<bool>(ls >> key >> offset) && key >= 0 && !(ls >> rest), idx_path, ": line ", line_no,
                  ": expected '<key>\\t<offset>', found '", line, "'");
    IDSYNTH_CHECK(offset < map_.size(), idx_path, ": line ", line_no, ": offset ", offset, " beyond ", rec_path, " (",
                  map_.size(), " bytes)");
    offsets_[static_cast<uint64_t>(key)] = offset;
  }
  IDSYNTH_CHECK(!offsets_.empty(), idx_path, ": expected '<key>\\t<offset>' lines, found none");
}

std::vector<uint64_t> RecordIOReader::keys() const {
  std::vector<uint64_t> k;
  k.reserve(offsets_.size());
  for (const auto& e : offsets_) k.push_back(e.first);
  return k;
}

std::string RecordIOReader::read(uint64_t key) const {
  const auto it = offsets_.find(key);
  IDSYNTH_CHECK(it != offsets_.end(), rec_path_, ": key ", key, ": not in the index");
  std::string out;
  uint64_t pos = it->second;
  const uint64_t size = map_.size();
  for (int part = 0;; ++part) {
    IDSYNTH_CHECK(pos <= size && size - pos >= 8, rec_path_, ": record ", key, " at offset ", pos,
                  ": expected a record header, found the end of the file");
    const uint32_t magic = load_u32(map_.data() + pos);
    IDSYNTH_CHECK(magic == kRecordIOMagic, rec_path_, ": record ", key, " at offset ", pos,
                  ": expected RecordIO magic 0xced7230a, found 0x", std::hex, magic);
    const uint32_t lrec = load_u32(map_.data() + pos + 4);
    const uint32_t cflag = lrec >> 29, length = lrec & kMaxLength;
    IDSYNTH_CHECK(size - pos - 8 >= length, rec_path_, ": record ", key, " at offset ", pos, ": length ", length,
                  " runs past the end of the file");
    IDSYNTH_CHECK((part == 0) == (cflag == 0 || cflag == 1), rec_path_, ": record ", key, " at offset ", pos,
                  ": unexpected split-record flag ", cflag, " in part ", part);
    if (part > 0) out.append(reinterpret_cast<const char*>(&kRecordIOMagic), 4);
    out.append(reinterpret_cast<const char*>(map_.data() + pos + 8), length);
    pos += 8 + ((uint64_t{length} + 3u) & ~uint64_t{3});
    if (cflag == 0 || cflag == 3) break;
  }
  return out;
}

RecordIOWriter::RecordIOWriter(std::string rec_path, std::string idx_path)
    : rec_path_(std::move(rec_path)), idx_path_(std::move(idx_path)), tmp_path_(cat(rec_path_, ".tmp.", ::getpid())) {
  rec_.open(tmp_path_, std::ios::binary | std::ios::trunc);
  IDSYNTH_CHECK(rec_.good(), tmp_path_, ": cannot create the file");
}

RecordIOWriter::~RecordIOWriter() {
  if (!finished_) {
    rec_.close();
    std::remove(tmp_path_.c_str());
  }
}

void RecordIOWriter::put(const std::string& payload) {
  IDSYNTH_CHECK(payload.size() <= kMaxLength, rec_path_, ": record of ", payload.size(), " bytes: expected < 2^29");
  std::string head;
  put_le<uint32_t>(head, kRecordIOMagic);
  put_le<uint32_t>(head, static_cast<uint32_t>(payload.size()));
  static const char zeros[4] = {0, 0, 0, 0};
  rec_.write(head.data(), static_cast<std::streamsize>(head.size()));
  rec_.write(payload.data(), static_cast<std::streamsize>(payload.size()));
  rec_.write(zeros, static_cast<std::streamsize>((4 - payload.size() % 4) % 4));
  IDSYNTH_CHECK(rec_.good(), tmp_path_, ": write failed");
}

void RecordIOWriter::write(uint64_t key, const std::string& payload) {
  const auto offset = static_cast<uint64_t>(rec_.tellp());
  if (offset == 0) first_size_ = payload.size();
  idx_ += cat(key, "\t", offset, "\n");
  put(payload);
}

void RecordIOWriter::rewrite_first(const std::string& payload) {
  IDSYNTH_CHECK(!idx_.empty() && payload.size() == first_size_, rec_path_, ": first record: expected ", first_size_,
                " bytes, found ", payload.size());
  const auto end = rec_.tellp();
  rec_.seekp(0);
  put(payload);
  rec_.seekp(end);
}

void RecordIOWriter::finish() {
  rec_.close();
  IDSYNTH_CHECK(rec_.good(), tmp_path_, ": write failed");
  IDSYNTH_CHECK(std::rename(tmp_path_.c_str(), rec_path_.c_str()) == 0, rec_path_, ": cannot rename ", tmp_path_,
                " into place");
  finished_ = true;
  write_file_atomic(idx_path_, idx_);
}

void write_recordio(const std::string& rec_path, const std::string& idx_path, const std::vector<std::string>& encoded,
                    const std::vector<int64_t>& labels) {
  IDSYNTH_CHECK(encoded.size() == labels.size(), rec_path, ": expected one label per image, found ", labels.size(),
                " labels for ", encoded.size(), " images");
  RecordIOWriter writer(rec_path, idx_path);
  for (size_t i = 0; i < encoded.size(); ++i) {
    IRHeader h;
    h.label = static_cast<float>(labels[i]);
    h.id = i;
    writer.write(i, pack_irheader(h, encoded[i]));
  }
  writer.finish();
}

}  // namespace idsynth::formats
