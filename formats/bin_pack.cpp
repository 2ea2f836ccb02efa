// Ref: insightface recognition/arcface_torch/eval/verification.py load_bin (see bin_dataset.h).
#include "formats/bin_pack.h"

#include <ATen/ATen.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cstring>
#include <functional>

#include "core/check.h"
#include "core/file_util.h"
#include "core/log.h"
#include "core/pickle.h"
#include "formats/image.h"

namespace idsynth::formats {

namespace {

using pickle::Value;

const Value& expect_list(const Value* v, const std::string& path, const char* field) {
  IDSYNTH_CHECK(v->is(Value::Kind::list) || v->is(Value::Kind::tuple), path, ": ", field,
                ": expected a list, found ", pickle::describe(*v));
  return *v;
}

}  // namespace

BinPack read_bin(const std::string& path) {
  IDSYNTH_CHECK(file_exists(path), path, ": benchmark file not found");
  MappedFile file(path);
  pickle::Options options;
  options.allowed_globals = {"_codecs.encode"};
  options.py2_strings_as_bytes = true;
  const auto doc = pickle::load(file.data(), file.size(), path, options);
  const Value* root = doc->root();

  // 1. structure: (bins, issame_list)
  IDSYNTH_CHECK((root->is(Value::Kind::tuple) || root->is(Value::Kind::list)) && root->items.size() == 2, path,
                ": expected a pickled 2-tuple (bins, issame_list), found ", pickle::describe(*root));
  const Value& bins = expect_list(root->items[0], path, "bins");
  const Value& same = expect_list(root->items[1], path, "issame_list");

  BinPack pack;
  pack.path = path;
  pack.images.reserve(bins.items.size());
  for (size_t i = 0; i < bins.items.size(); ++i) {
    const Value* b = bins.items[i];
    IDSYNTH_CHECK(b->is(Value::Kind::bytes), path, ": bins[", i, "]: expected encoded image bytes, found ",
                  pickle::describe(*b));
    pack.images.push_back(b->text);
  }
  for (size_t i = 0; i < same.items.size(); ++i) {
    const Value* s = same.items[i];
    const bool is_int01 = s->is(Value::Kind::integer) && (s->integer == 0 || s->integer == 1);
    IDSYNTH_CHECK(s->is(Value::Kind::boolean) || is_int01, path, ": issame_list[", i, "]: expected a bool, found ",
                  pickle::describe(*s));
    pack.issame.push_back(s->is(Value::Kind::boolean) ? s->boolean : s->integer == 1);
  }

  // 2. counts: two images per pair
  IDSYNTH_CHECK(!pack.images.empty(), path, ": bins: expected at least one pair of images, found none");
  IDSYNTH_CHECK(pack.images.size() % 2 == 0, path, ": bins: expected an even number of images (2 per pair), found ",
                pack.images.size());
  IDSYNTH_CHECK(pack.issame.size() * 2 == pack.images.size(), path, ": issame_list: expected ",
                pack.images.size() / 2, " entries (one per pair of the ", pack.images.size(), " images), found ",
                pack.issame.size());
  LOG_DBG(path, ": ", pack.num_pairs(), " pairs, ", pack.num_images(), " encoded images");
  return pack;
}

at::Tensor decode_bin_images(const BinPack& pack, int64_t begin, int64_t end) {
  IDSYNTH_CHECK(begin >= 0 && begin <= end && end <= pack.num_images(), pack.path, ": image range [", begin, ", ",
                end, "): expected a range within [0, ", pack.num_images(), ")");
  at::Tensor out;
  for (int64_t i = begin; i < end; ++i) {
    const std::string& enc = pack.images[static_cast<size_t>(i)];
    check_image_header(reinterpret_cast<const uint8_t*>(enc.data()), enc.size(), cat(pack.path, ": bins[", i, "]"));
    const cv::Mat buf(1, static_cast<int>(enc.size()), CV_8UC1, const_cast<char*>(enc.data()));
    cv::Mat bgr;
    try {
      bgr = cv::imdecode(buf, cv::IMREAD_COLOR);
    } catch (const cv::Exception& e) {
      fail(pack.path, ": bins[", i, "]: could not decode the image (", enc.size(), " bytes): ", e.what());
    }
    IDSYNTH_CHECK(!bgr.empty(), pack.path, ": bins[", i, "]: could not decode the image (", enc.size(),
                  " bytes): expected JPEG or PNG data");
    cv::Mat rgb;
    cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    if (!out.defined()) out = at::empty({end - begin, rgb.rows, rgb.cols, 3}, at::kByte);
    IDSYNTH_CHECK(rgb.rows == out.size(1) && rgb.cols == out.size(2), pack.path, ": bins[", i,
                  "]: expected a ", out.size(2), "x", out.size(1), " image like bins[", begin, "], found ", rgb.cols,
                  "x", rgb.rows);
    at::Tensor dst = out[i - begin];
    const size_t row_bytes = static_cast<size_t>(rgb.cols) * 3;
    for (int r = 0; r < rgb.rows; ++r)
      std::memcpy(dst.data_ptr<uint8_t>() + static_cast<size_t>(r) * row_bytes, rgb.ptr<uint8_t>(r), row_bytes);
  }
  if (!out.defined()) out = at::empty({0, 0, 0, 3}, at::kByte);
  return out;
}

void write_bin(const std::string& path, const BinPack& pack) {
  IDSYNTH_CHECK(pack.images.size() == 2 * pack.issame.size(), path, ": expected 2 images per pair, found ", pack.images.size(),
                " images for ", pack.issame.size(), " pairs");
  std::string out = "\x80\x03";  // PROTO 3
  auto put_u32 = [&](uint32_t n) {
    for (int k = 0; k < 4; ++k) out.push_back(static_cast<char>((n >> (8 * k)) & 0xff));
  };
  // Lists are written as EMPTY_LIST, MARK, items, APPENDS (pickle batches 1000 items per APPENDS).
  auto put_list = [&](size_t count, const std::function<void(size_t)>& item) {
    out += "]";
    for (size_t begin = 0; begin < count; begin += 1000) {
      out += "(";
      for (size_t i = begin; i < std::min(count, begin + 1000); ++i) item(i);
      out += "e";
    }
  };
  put_list(pack.images.size(), [&](size_t i) {
    const std::string& img = pack.images[i];
    IDSYNTH_CHECK(img.size() < (uint64_t{1} << 32), path, ": image ", i, " is larger than 4 GiB");
    out += "B";  // BINBYTES: uint32 length, bytes
    put_u32(static_cast<uint32_t>(img.size()));
    out += img;
  });
  put_list(pack.issame.size(), [&](size_t i) { out += pack.issame[i] ? "\x88" : "\x89"; });  // NEWTRUE / NEWFALSE
  out += "\x86.";  // TUPLE2, STOP
  write_file_atomic(path, out);
}

}  // namespace idsynth::formats
