// idsynth export: a finished dataset -> insightface RecordIO or one folder per identity.
#include <iostream>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/log.h"
#include "dataset/export.h"

namespace idsynth::cli {

int cmd_export(const std::vector<std::string>& args) {
  dataset::ExportOptions o;
  po::options_description opts("options");
  opts.add_options()("dir", po::value<std::string>()->required(), "dataset folder (output.dir)")(
      "out", po::value<std::string>()->required(), "output folder")(
      "format", po::value<std::string>(&o.format)->default_value(o.format),
      "recordio (train.rec, train.idx, property: insightface/arcface_torch) or folder (<identity>/<image>.jpg)")(
      "image", po::value<std::string>(&o.image)->default_value(o.image), "aligned (112x112 crops) or full")(
      "allow-incomplete", po::bool_switch(&o.allow_incomplete), "export the finished shards of an unfinished dataset");
  auto parsed = parse_args("export", "--dir DATASET --out DIR [--format recordio|folder] [--image aligned|full]",
                           "Writes the images of every shard with dense class labels (identities with at least one\n"
                           "image, in identity order). RecordIO follows insightface's layout: record 0 holds the label\n"
                           "ranges, records 1..N the images (IRHeader flag 0, label = class), then one record per class.",
                           opts, args);
  if (parsed.help) return kExitOk;
  const auto summary = dataset::export_dataset(parsed.vars["dir"].as<std::string>(), parsed.vars["out"].as<std::string>(), o);
  std::cout << "exported " << summary.images << " images of " << summary.classes << " classes to "
            << parsed.vars["out"].as<std::string>() << " (" << o.format << ")\n";
  return kExitOk;
}

}  // namespace idsynth::cli
