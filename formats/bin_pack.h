// insightface `.bin` verification packs (lfw.bin, cfp_fp.bin, agedb_30.bin, calfw.bin, cplfw.bin, ...):
// a pickle of `(bins, issame_list)` where bins[2p], bins[2p+1] are the encoded images (JPEG or PNG)
// of pair p and issame_list holds one bool per pair.
//
// All three pickle flavours in circulation are read: Python 2 protocol 2 (`str` images as
// BINSTRING/SHORT_BINSTRING, the published packs), Python 3 protocol 2 (`bytes` written as
// `_codecs.encode(text, 'latin1')` REDUCE calls) and Python 3 protocol 3+ (BINBYTES). The file is
// untrusted: core/pickle executes nothing and accepts no global other than `_codecs.encode`.
// Images stay encoded in memory and are decoded in ranges, so a 12,000-image pack is streamed.
// Ref: insightface recognition/arcface_torch/eval/verification.py load_bin; mxnet image.imdecode.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace idsynth::formats {

struct BinPack {
  std::string path;
  std::vector<std::string> images;  // encoded bytes, 2 per pair
  std::vector<bool> issame;         // one per pair

  int64_t num_images() const { return static_cast<int64_t>(images.size()); }
  int64_t num_pairs() const { return static_cast<int64_t>(issame.size()); }
};

// Reads and validates the structure; images are not decoded yet. Throws idsynth::Error naming the
// file and what was wrong (hostile opcode or global, truncation, wrong types, counts).
BinPack read_bin(const std::string& path);

// Decodes images [begin, end) to (n, H, W, 3) uint8 RGB (what mx.image.imdecode returns). Every
// image must decode and have the size of the first one in the range; errors name file and index.
at::Tensor decode_bin_images(const BinPack& pack, int64_t begin, int64_t end);

// Writes a pack as Python 3's pickle protocol 3 writes (list of bytes, list of bool): what
// pickle.load(f, encoding='bytes') in insightface's load_bin reads. Atomic (a temporary file renamed).
void write_bin(const std::string& path, const BinPack& pack);

}  // namespace idsynth::formats
