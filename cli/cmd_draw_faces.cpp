// idsynth draw-faces: faces with known identities from a procedural renderer, as a training set
// (a folder per identity, or insightface RecordIO) or an insightface .bin verification pack.
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/log.h"
#include "dataset/drawn_faces.h"

namespace idsynth::cli {

int cmd_draw_faces(const std::vector<std::string>& args) {
  dataset::DrawFacesOptions o;
  int64_t seed = 0;
  po::options_description opts("options");
  opts.add_options()("identities", po::value<int64_t>(&o.identities)->default_value(o.identities), "people to draw")(
      "images-per-identity", po::value<int64_t>(&o.images_per_identity)->default_value(o.images_per_identity),
      "images of each (bin: the pool pairs pick from)")(
      "seed", po::value<int64_t>(&seed)->default_value(0), "which people: identity i of a seed is the same person in every format; other seeds, other people")(
      "size", po::value<int>(&o.size)->default_value(o.size), "image side in pixels")(
      "format", po::value<std::string>(&o.format)->default_value(o.format),
      "folder (DIR/<identity>/<image>.png), recordio (DIR/train.rec, train.idx, property) or bin (insightface verification pack)")(
      "pairs", po::value<int64_t>(&o.pairs)->default_value(o.pairs), "bin: pairs, even ones same-identity")(
      "out", po::value<std::string>(&o.out)->required(), "output folder, or the .bin file for --format bin")(
      "sheet", po::value<std::string>(&o.sheet), "also write a contact sheet PNG: a row per identity (16 at most)");
  auto parsed = parse_args("draw-faces",
                           "--identities N --images-per-identity M --seed S --size P --out DIR [--format folder|recordio|bin --pairs K]",
                           "Draws faces with known identities (OpenCV drawing): an identity is a set of face-shape,\n"
                           "colour and proportion parameters (skin, hair colour and style, eyes, brows, nose, mouth,\n"
                           "beard, glasses); each image draws it with its own pose, scale, light, expression, blur and\n"
                           "noise. The stand-in for real photos in the miniature experiment (docs/miniature.md).",
                           opts, args);
  if (parsed.help) return kExitOk;
  o.seed = static_cast<uint64_t>(seed);
  const auto summary = dataset::draw_faces(o);
  LOG_INF("wrote ", summary.written, " in ", format_number("%.1f", summary.seconds), " s");
  if (!o.sheet.empty()) LOG_INF("contact sheet: ", o.sheet);
  return kExitOk;
}

}  // namespace idsynth::cli
