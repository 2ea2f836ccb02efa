// idsynth inspect: counts, per-identity cosine statistics and a contact sheet of a dataset.
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "dataset/export.h"

namespace idsynth::cli {

int cmd_inspect(const std::vector<std::string>& args) {
  dataset::InspectOptions o;
  po::options_description opts("options");
  opts.add_options()("dir", po::value<std::string>()->required(), "dataset folder (output.dir)")(
      "sheet", po::value<std::string>(&o.sheet), "write a contact sheet PNG of the first identities")(
      "sheet-identities", po::value<int64_t>(&o.sheet_identities)->default_value(o.sheet_identities), "rows of the sheet")(
      "sheet-images", po::value<int64_t>(&o.sheet_images)->default_value(o.sheet_images), "images per row")(
      "tile", po::value<int64_t>(&o.tile)->default_value(o.tile), "tile size in pixels");
  po::positional_options_description pos;
  pos.add("dir", 1);
  auto parsed = parse_args("inspect", "DIR [--sheet sheet.png]",
                           "Prints shard, identity and image counts, short identities, the attempt that produced the kept\n"
                           "images, and the cosine of each image to its identity (per image and per identity mean).",
                           opts, args, &pos);
  if (parsed.help) return kExitOk;
  std::cout << dataset::inspect_dataset(parsed.vars["dir"].as<std::string>(), o);
  return kExitOk;
}

}  // namespace idsynth::cli
