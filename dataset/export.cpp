#include "dataset/export.h"

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
#include "formats/image.h"
#include "core/log.h"
#include "dataset/generate.h"
#include "formats/dataset_folder.h"
#include "formats/recordio.h"

namespace idsynth::dataset {
namespace {

namespace fs = std::filesystem;


double percentile(std::vector<double> v, double q) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = static_cast<size_t>(std::ceil(pos));
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

}  // namespace

GenerateConfig read_dataset_config(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "config.resolved.yaml").string();
  IDSYNTH_CHECK(file_exists(path), dir, ": not an idsynth dataset (config.resolved.yaml missing)");
  return config::load<GenerateConfig>(path);
}

int64_t dataset_shard_count(const std::string& dir) { return dataset_shard_count(read_dataset_config(dir)); }

void for_each_shard(const std::string& dir, const std::function<void(const formats::ShardData&)>& visit,
                    bool require_complete) {
  formats::for_each_shard(dir, dataset_shard_count(dir), visit, require_complete);
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
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // per class: [first record, end)
  const std::string rec_path = (fs::path(out) / "train.rec").string();
  const std::string idx_path = (fs::path(out) / "train.idx").string();
  std::unique_ptr<formats::RecordIOWriter> rec;
  if (o.format == "recordio") {
    rec = std::make_unique<formats::RecordIOWriter>(rec_path, idx_path);
    // Record 0 is rewritten at the end with the counts; reserve its exact size now.
    rec->write(0, formats::pack_irheader({0, 0.0f, 0, 0, {0.0f, 0.0f}}, ""));
  }
  uint64_t key = 1;
  int64_t width = 0, height = 0;
  for_each_shard(
      dir,
      [&](const formats::ShardData& d) {
        const auto& images = aligned ? d.aligned : d.images;
        IDSYNTH_CHECK(aligned ? d.has_aligned : d.has_images, dir, ": shard ", d.shard_index, " has no '",
                      aligned ? "aligned" : "images", "' dataset (output.store_", aligned ? "aligned_crop" : "full_image",
                      " was false); use --image ", aligned ? "full" : "aligned");
        for (size_t i = 0; i < d.size(); ++i) {
          auto [it, added] = dense.emplace(d.labels[i], static_cast<int64_t>(dense.size()));
          const int64_t label = it->second;
          if (width == 0) {
            const cv::Mat m = formats::decode_image_rgb(reinterpret_cast<const uint8_t*>(images[i].data()), images[i].size(), dir);
            width = m.cols;
            height = m.rows;
          }
          if (o.format == "recordio") {
            if (added) ranges.emplace_back(key, key);
            formats::IRHeader h;
            h.label = static_cast<float>(label);
            h.id = key;
            rec->write(key, formats::pack_irheader(h, images[i]));
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
      formats::IRHeader h;
      h.id = n + 1 + c;
      h.labels = {static_cast<float>(ranges[c].first), static_cast<float>(ranges[c].second)};
      rec->write(n + 1 + c, formats::pack_irheader(h, ""));
    }
    IDSYNTH_CHECK(n + 1 + ranges.size() < (1u << 24), rec_path, ": ", n + 1 + ranges.size(),
                  " records: float32 labels in the header record are exact only below 2^24");
    rec->rewrite_first(formats::pack_irheader(
        {0, 0.0f, 0, 0, {static_cast<float>(n + 1), static_cast<float>(n + 1 + ranges.size())}}, ""));
    rec->finish();
    write_file_atomic((fs::path(out) / "property").string(), cat(summary.classes, ",", height, ",", width, "\n"));
    summary.files = {rec_path, idx_path, (fs::path(out) / "property").string()};
  } else {
    summary.files = {out};
  }
  return summary;
}

std::string inspect_dataset(const std::string& dir, const InspectOptions& o) {
  const GenerateConfig cfg = read_dataset_config(dir);
  const int64_t n_shards = dataset_shard_count(cfg);
  int64_t shards = 0, images = 0, identities = 0;
  std::vector<int64_t> short_ids;
  std::map<int64_t, std::vector<double>> cos;  // identity -> cosines of its kept images
  std::map<int32_t, int64_t> attempts;
  std::vector<cv::Mat> sheet_rows;
  const int tile = static_cast<int>(o.tile);
  for_each_shard(
      dir,
      [&](const formats::ShardData& d) {
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
            cv::Mat m = formats::decode_image_rgb(reinterpret_cast<const uint8_t*>(pics[i].data()), pics[i].size(), dir), t;
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
  // Draws and rejections live in the shard records, not the .h5 files, which keeps shard bytes
  // independent of bookkeeping added later.
  int64_t draws = 0, kept = 0, no_face = 0, wrong_identity = 0;
  bool counted = true;
  for (int64_t k = 0; k < n_shards; ++k) {
    formats::ShardRecord r;
    if (!formats::shard_finished(dir, k) || !formats::read_record(dir, k, &r)) continue;
    draws += r.draws;
    kept += r.images;
    counted = counted && r.rejected_no_face && r.rejected_identity;
    no_face += r.rejected_no_face.value_or(0);
    wrong_identity += r.rejected_identity.value_or(0);
  }
  s << "draws: " << draws << ", " << kept << " kept";
  if (draws > 0) s << " (accepted " << std::lround(100.0 * static_cast<double>(kept) / static_cast<double>(draws)) << "%)";
  if (counted)
    s << "; rejected: " << no_face << " no face, " << wrong_identity << " wrong identity\n";
  else
    s << "; rejections by reason not recorded (shard records from before idsynth counted them)\n";
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
    formats::write_image_rgb(o.sheet, sheet);
    s << "contact sheet: " << o.sheet << " (" << sheet_rows.size() << " identities x " << o.sheet_images << " images)\n";
  }
  return s.str();
}

}  // namespace idsynth::dataset
