#include "generator/dataset_export.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "core/check.h"
#include "core/config.h"
#include "core/file_util.h"
#include "core/image.h"
#include "core/log.h"
#include "generator/dataset_generator.h"
#include "generator/dataset_records.h"

namespace idsynth::generator {
namespace {

namespace fs = std::filesystem;

AppConfig dataset_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.resolved.yaml").string();
  IDSYNTH_CHECK(file_exists(path), dir, ": not an idsynth dataset (config.resolved.yaml missing)");
  return config::load<AppConfig>(path);
}

template <typename T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}

// One RecordIO record: magic, (cflag << 29 | length), payload, zero padding to 4 bytes.
void write_recordio(std::ofstream& rec, const std::string& payload, const std::string& path) {
  IDSYNTH_CHECK(payload.size() < (1u << 29), path, ": record of ", payload.size(), " bytes: expected < 2^29");
  std::string head;
  put<uint32_t>(head, kRecordIOMagic);
  put<uint32_t>(head, static_cast<uint32_t>(payload.size()));
  rec.write(head.data(), static_cast<std::streamsize>(head.size()));
  rec.write(payload.data(), static_cast<std::streamsize>(payload.size()));
  static const char zeros[4] = {0, 0, 0, 0};
  rec.write(zeros, static_cast<std::streamsize>((4 - payload.size() % 4) % 4));
}

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = static_cast<size_t>(std::ceil(pos));
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace

void for_each_shard(const std::string& dir, const std::function<void(const ShardData&)>& visit, bool require_complete) {
  const AppConfig cfg = dataset_config(dir);
  const int64_t n = dataset_shard_count(cfg);
  std::vector<int64_t> missing;
  for (int64_t k = 0; k < n; ++k)
    if (!shard_finished(dir, k)) missing.push_back(k);
  IDSYNTH_CHECK(!require_complete || missing.empty(), dir, ": ", missing.size(), " of ", n, " shards missing or damaged (first: ",
                missing.empty() ? 0 : missing[0], "); run `idsynth merge` and finish the dataset with `idsynth generate`");
  for (int64_t k = 0; k < n; ++k)
    if (std::find(missing.begin(), missing.end(), k) == missing.end()) visit(read_shard(shard_h5_path(dir, k)));
}

std::string pack_irheader(const IRHeader& h, const std::string& payload) {
  std::string out;
  put<uint32_t>(out, static_cast<uint32_t>(h.labels.size()));
  put<float>(out, h.labels.empty() ? h.label : 0.0f);
  put<uint64_t>(out, h.id);
  put<uint64_t>(out, h.id2);
  for (float l : h.labels) put<float>(out, l);
  return out + payload;
}

IRHeader unpack_irheader(const std::string& r, std::string* payload, const std::string& source) {
  IDSYNTH_CHECK(r.size() >= 24, source, ": record of ", r.size(), " bytes: expected at least the 24-byte IRHeader");
  IRHeader h;
  std::memcpy(&h.flag, r.data(), 4);
  std::memcpy(&h.label, r.data() + 4, 4);
  std::memcpy(&h.id, r.data() + 8, 8);
  std::memcpy(&h.id2, r.data() + 16, 8);
  IDSYNTH_CHECK(r.size() >= 24 + 4 * static_cast<size_t>(h.flag), source, ": IRHeader flag ", h.flag, ": expected ",
                h.flag, " labels after the header, found ", (r.size() - 24) / 4);
  h.labels.resize(h.flag);
  if (h.flag > 0) std::memcpy(h.labels.data(), r.data() + 24, 4 * h.flag);
  if (payload != nullptr) *payload = r.substr(24 + 4 * static_cast<size_t>(h.flag));
  return h;
}

RecordIOReader::RecordIOReader(const std::string& rec_path, const std::string& idx_path) : rec_path_(rec_path) {
  std::istringstream idx(read_text_file(idx_path));
  std::string line;
  for (int line_no = 1; std::getline(idx, line); ++line_no) {
    if (line.empty()) continue;
    const size_t tab = line.find('\t');
    IDSYNTH_CHECK(tab != std::string::npos, idx_path, ":", line_no, ": expected 'key<TAB>offset', found '", line, "'");
    index_.emplace_back(std::stoull(line.substr(0, tab)), std::stoull(line.substr(tab + 1)));
  }
  data_ = read_text_file(rec_path);
}

std::vector<uint64_t> RecordIOReader::keys() const {
  std::vector<uint64_t> k;
  for (const auto& e : index_) k.push_back(e.first);
  return k;
}

std::string RecordIOReader::read(uint64_t key) const {
  auto it = std::find_if(index_.begin(), index_.end(), [&](const auto& e) { return e.first == key; });
  IDSYNTH_CHECK(it != index_.end(), rec_path_, ": key ", key, " not in the index");
  const uint64_t off = it->second;
  IDSYNTH_CHECK(off + 8 <= data_.size(), rec_path_, ": record ", key, " at offset ", off, ": past the end (", data_.size(), " bytes)");
  uint32_t magic = 0, lrec = 0;
  std::memcpy(&magic, data_.data() + off, 4);
  std::memcpy(&lrec, data_.data() + off + 4, 4);
  IDSYNTH_CHECK(magic == kRecordIOMagic, rec_path_, ": record ", key, ": expected magic 0xced7230a, found ", magic);
  IDSYNTH_CHECK((lrec >> 29) == 0, rec_path_, ": record ", key, ": split records (cflag ", (lrec >> 29), ") are not supported");
  const uint32_t len = lrec & ((1u << 29) - 1);
  IDSYNTH_CHECK(off + 8 + len <= data_.size(), rec_path_, ": record ", key, ": length ", len, " runs past the end");
  return data_.substr(off + 8, len);
}

ExportSummary export_dataset(const std::string& dir, const std::string& out, const ExportOptions& o) {
  IDSYNTH_CHECK(o.format == "recordio" || o.format == "folder", "export: --format: expected recordio or folder, found '",
                o.format, "'");
  IDSYNTH_CHECK(o.image == "aligned" || o.image == "full", "export: --image: expected aligned or full, found '", o.image, "'");
  fs::create_directories(out);
  ExportSummary summary;
  // Dense labels in identity order: a first pass over the labels only would read every shard twice;
  // shards are in identity order, so labels are assigned as identities appear.
  std::map<int64_t, int64_t> dense;
  const bool aligned = o.image == "aligned";
  std::ofstream rec;
  std::string idx_text;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // per class: [first record, end)
  const std::string rec_path = (fs::path(out) / "train.rec").string();
  if (o.format == "recordio") {
    rec.open(rec_path + ".tmp", std::ios::binary | std::ios::trunc);
    IDSYNTH_CHECK(rec.good(), rec_path, ": cannot write");
    // Record 0 is rewritten at the end with the counts; reserve its exact size now.
    write_recordio(rec, pack_irheader({0, 0.0f, 0, 0, {0.0f, 0.0f}}, ""), rec_path);
  }
  uint64_t key = 1;
  std::vector<uint64_t> offsets = {0};
  int64_t width = 0, height = 0;
  for_each_shard(
      dir,
      [&](const ShardData& d) {
        const auto& images = aligned ? d.aligned : d.images;
        IDSYNTH_CHECK(aligned ? d.has_aligned : d.has_images, dir, ": shard ", d.shard_index, " has no '",
                      aligned ? "aligned" : "images", "' dataset (output.store_", aligned ? "aligned_crop" : "full_image",
                      " was false); use --image ", aligned ? "full" : "aligned");
        for (size_t i = 0; i < d.size(); ++i) {
          auto [it, added] = dense.emplace(d.labels[i], static_cast<int64_t>(dense.size()));
          const int64_t label = it->second;
          if (width == 0) {
            const cv::Mat m = decode_image_rgb(reinterpret_cast<const uint8_t*>(images[i].data()), images[i].size(), dir);
            width = m.cols;
            height = m.rows;
          }
          if (o.format == "recordio") {
            if (added) ranges.emplace_back(key, key);
            offsets.push_back(static_cast<uint64_t>(rec.tellp()));
            IRHeader h;
            h.label = static_cast<float>(label);
            h.id = key;
            write_recordio(rec, pack_irheader(h, images[i]), rec_path);
            ranges.back().second = ++key;
          } else {
            char name[64];
            std::snprintf(name, sizeof(name), "%07lld", static_cast<long long>(d.labels[i]));
            const fs::path folder = fs::path(out) / name;
            if (added) fs::create_directories(folder);
            std::snprintf(name, sizeof(name), "%04d.jpg", d.image_index[i]);
            write_file_atomic((folder / name).string(), images[i]);
          }
          ++summary.images;
        }
      },
      !o.allow_incomplete);
  summary.classes = static_cast<int64_t>(dense.size());
  if (o.format == "recordio") {
    const uint64_t n = key - 1;
    for (size_t c = 0; c < ranges.size(); ++c) {
      offsets.push_back(static_cast<uint64_t>(rec.tellp()));
      IRHeader h;
      h.id = n + 1 + c;
      h.labels = {static_cast<float>(ranges[c].first), static_cast<float>(ranges[c].second)};
      write_recordio(rec, pack_irheader(h, ""), rec_path);
    }
    IDSYNTH_CHECK(n + 1 + ranges.size() < (1u << 24), rec_path, ": ", n + 1 + ranges.size(),
                  " records: float32 labels in the header record are exact only below 2^24");
    rec.seekp(0);
    write_recordio(rec, pack_irheader({0, 0.0f, 0, 0, {static_cast<float>(n + 1), static_cast<float>(n + 1 + ranges.size())}}, ""),
                   rec_path);
    rec.close();
    IDSYNTH_CHECK(rec.good(), rec_path, ": write failed");
    fs::rename(rec_path + ".tmp", rec_path);
    for (size_t i = 0; i < offsets.size(); ++i) idx_text += cat(i, "\t", offsets[i], "\n");
    write_file_atomic((fs::path(out) / "train.idx").string(), idx_text);
    write_file_atomic((fs::path(out) / "property").string(), cat(summary.classes, ",", height, ",", width, "\n"));
    summary.files = {rec_path, (fs::path(out) / "train.idx").string(), (fs::path(out) / "property").string()};
  } else {
    summary.files = {out};
  }
  return summary;
}

std::string inspect_dataset(const std::string& dir, const InspectOptions& o) {
  const AppConfig cfg = dataset_config(dir);
  const int64_t n_shards = dataset_shard_count(cfg);
  int64_t shards = 0, images = 0, identities = 0;
  std::vector<int64_t> short_ids;
  std::map<int64_t, std::vector<double>> cos;  // identity -> cosines of its kept images
  std::map<int32_t, int64_t> attempts;
  std::vector<cv::Mat> sheet_rows;
  const int tile = static_cast<int>(o.tile);
  for_each_shard(
      dir,
      [&](const ShardData& d) {
        ++shards;
        images += static_cast<int64_t>(d.size());
        identities += static_cast<int64_t>(d.identity_index.size());
        short_ids.insert(short_ids.end(), d.short_identities.begin(), d.short_identities.end());
        for (size_t i = 0; i < d.size(); ++i) {
          if (!std::isnan(d.similarity[i])) cos[d.labels[i]].push_back(d.similarity[i]);
          ++attempts[d.attempt[i]];
        }
        if (o.sheet.empty()) return;
        const auto& pics = d.has_images ? d.images : d.aligned;
        size_t i = 0;
        while (i < d.size() && static_cast<int64_t>(sheet_rows.size()) < o.sheet_identities) {
          cv::Mat row(tile, tile * static_cast<int>(o.sheet_images), CV_8UC3, cv::Scalar(0, 0, 0));
          const int64_t id = d.labels[i];
          for (int64_t j = 0; i < d.size() && d.labels[i] == id; ++i, ++j) {
            if (j >= o.sheet_images) continue;
            cv::Mat m = decode_image_rgb(reinterpret_cast<const uint8_t*>(pics[i].data()), pics[i].size(), dir), t;
            cv::resize(m, t, cv::Size(tile, tile), 0, 0, cv::INTER_AREA);
            t.copyTo(row(cv::Rect(static_cast<int>(j) * tile, 0, tile, tile)));
          }
          sheet_rows.push_back(row);
        }
      },
      false);
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(3);
  s << "dataset " << dir << ": " << shards << " of " << n_shards << " shards, " << identities << " identities, " << images
    << " images (" << cfg.output.images_per_identity << " per identity planned), " << short_ids.size()
    << " short identities\n";
  s << "attempt of kept images:";
  for (const auto& [a, c] : attempts) s << " " << a << ": " << c;
  s << "\n";
  if (cos.empty()) {
    s << "no cosines stored (no recogniser in the config)\n";
  } else {
    std::vector<double> means, all;
    for (const auto& [id, v] : cos) {
      double m = 0.0;
      for (double c : v) m += c;
      means.push_back(m / static_cast<double>(v.size()));
      all.insert(all.end(), v.begin(), v.end());
    }
    s << "cosine to identity, per image:    min " << percentile(all, 0.0) << "  p5 " << percentile(all, 0.05) << "  median "
      << percentile(all, 0.5) << "  max " << percentile(all, 1.0) << "\n";
    s << "cosine to identity, per identity mean: min " << percentile(means, 0.0) << "  p5 " << percentile(means, 0.05)
      << "  median " << percentile(means, 0.5) << "  max " << percentile(means, 1.0) << "\n";
  }
  if (!short_ids.empty()) {
    s << "short identities:";
    for (size_t i = 0; i < short_ids.size() && i < 20; ++i) s << " " << short_ids[i];
    s << (short_ids.size() > 20 ? " ...\n" : "\n");
  }
  if (!o.sheet.empty() && !sheet_rows.empty()) {
    cv::Mat sheet;
    cv::vconcat(sheet_rows, sheet);
    write_image_rgb(o.sheet, sheet);
    s << "contact sheet: " << o.sheet << " (" << sheet_rows.size() << " identities x " << o.sheet_images << " images)\n";
  }
  return s.str();
}

}  // namespace idsynth::generator
