// Drawn faces with known identities: a small procedural renderer (OpenCV drawing) for the
// miniature experiment (docs/miniature.md). An identity is a fixed set of face-shape, colour and
// proportion parameters; each image draws it again with its own pose, scale, light, expression,
// blur and noise, so "same person" has a ground truth that no downloaded data is needed for.
//
// Everything is a pure function of (seed, identity index, image index): identity i of seed S is
// the same person in every run and every output format, and other seeds give other people.
#pragma once

#include <opencv2/core.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace idsynth::dataset {

struct DrawnIdentity {
  cv::Vec3d skin, hair, iris, lips;  // RGB in [0, 255]
  double face_w = 0, face_h = 0;                      // half axes of the face ellipse, in image widths
  int hair_style = 0;                                 // 0 bald, 1 short, 2 long, 3 fringe, 4 top knot
  double hair_volume = 0;
  double eye_gap = 0, eye_y = 0, eye_size = 0;
  double brow_thickness = 0, brow_tilt = 0;
  double nose_length = 0, nose_width = 0;
  double mouth_width = 0, mouth_y = 0;
  int beard = 0;  // 0 none, 1 moustache, 2 full beard
  bool glasses = false;
  cv::Vec3d glasses_colour;
  double ear_size = 0;
};

// Identity `index` of the people drawn from `seed`.
DrawnIdentity drawn_identity(uint64_t seed, int64_t index);

// Image `image` of identity `index` (seed `seed`), size x size RGB (CV_8UC3).
cv::Mat draw_face(uint64_t seed, int64_t index, int64_t image, int size);

// A verification pair list as insightface's .bin packs hold them: pair p is same-identity when p is
// even, identities drawn from [0, identities) and images from [0, images_per_identity).
struct DrawnPair {
  int64_t identity_a = 0, image_a = 0, identity_b = 0, image_b = 0;
  bool same = false;
};
std::vector<DrawnPair> drawn_pairs(uint64_t seed, int64_t identities, int64_t images_per_identity, int64_t pairs);

struct DrawFacesOptions {
  int64_t identities = 100;
  int64_t images_per_identity = 20;
  uint64_t seed = 0;
  int size = 112;
  std::string format = "folder";  // folder | recordio | bin
  int64_t pairs = 3000;           // bin only
  std::string out;                // folder (folder, recordio) or .bin file (or a folder that gets pairs.bin)
  std::string sheet;              // optional contact sheet PNG: a row per identity
  int threads = 0;
};

struct DrawFacesSummary {
  std::string written;  // what was written, one line
  int64_t images = 0;
  double seconds = 0;
};

DrawFacesSummary draw_faces(const DrawFacesOptions& options);

}  // namespace idsynth::dataset
