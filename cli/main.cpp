// idsynth: synthetic face-recognition datasets with Arc2Face, and the tools that measure them.
#include <csignal>
#include <cstring>
#include <iostream>

#include <c10/util/Exception.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/check.h"
#include "core/device.h"
#include "core/log.h"

namespace idsynth::cli {

const std::vector<Command>& commands() {
  static const std::vector<Command> table = {
      {"init-model", "write a small random-weight Arc2Face model in the real file layout", cmd_init_model},
      {"identities", "sample well-separated synthetic identity vectors", cmd_identities},
      {"sample", "identity vectors -> Arc2Face face images (PNG) and a sample.json record", cmd_sample},
      {"embed", "photos -> L2-normalised identity vectors (SCRFD, ArcFace alignment, ArcFace/IResNet)", cmd_embed},
      {"weights", "list the tensors of a weight file (safetensors, torch checkpoint, ONNX)", cmd_weights},
      {"config", "print the default config, or validate and resolve a config file", cmd_config},
      {"generate", "the main job: a YAML config -> a face-recognition training set (HDF5 shards)", cmd_generate},
      {"merge", "verify a dataset's shards (size, sha256), report gaps, rebuild manifest.json", cmd_merge},
      {"export", "dataset -> insightface RecordIO (train.rec/.idx, property) or a folder per identity", cmd_export},
      {"inspect", "dataset counts, per-identity cosine statistics, a contact sheet", cmd_inspect},
      {"eval", "evaluate: verification on .bin packs, ID similarity, FID, LPIPS diversity; reports comparing runs", cmd_eval},
      {"train", "train an IResNet face recogniser (ArcFace/CosFace/AdaFace) on shards or RecordIO", cmd_train},
  };
  return table;
}

namespace {

void print_usage(std::ostream& os) {
  os << "usage: idsynth [--log-level LEVEL] [--threads N] [--timestamps] <command> [options]\n\n"
        "commands:\n";
  for (const auto& c : commands()) {
    std::string name = c.name;
    name.resize(12, ' ');
    os << "  " << name << " " << c.summary << "\n";
  }
  os << "\nglobal options (before the command):\n"
        "  --log-level L   debug | info | warn | error | quiet (default info)\n"
        "  --threads N     CPU threads for libtorch (default: all cores)\n"
        "  --timestamps    prefix log lines with the time\n"
        "  --version       print the version and exit\n"
        "\n'idsynth <command> --help' describes each command. Exit codes: 0 ok, 1 error, 2 usage, 3 partial.\n";
}

}  // namespace
}  // namespace idsynth::cli

int main(int argc, char** argv) {
  using namespace idsynth;
  using namespace idsynth::cli;
  std::vector<std::string> args(argv + 1, argv + argc);
  int threads = 0;
  size_t i = 0;
  try {
    for (; i < args.size() && args[i].rfind("--", 0) == 0; ++i) {
      const std::string& a = args[i];
      if (a == "--help" || a == "-h") {
        print_usage(std::cout);
        return kExitOk;
      } else if (a == "--version") {
        std::cout << "idsynth 0.1.0\n";
        return kExitOk;
      } else if (a == "--timestamps") {
        log::set_timestamps(true);
      } else if (a == "--log-level" && i + 1 < args.size()) {
        log::set_threshold(log::parse_level(args[++i]));
      } else if (a == "--threads" && i + 1 < args.size()) {
        threads = std::stoi(args[++i]);
      } else {
        std::cerr << "idsynth: unknown global option '" << a << "'\n";
        print_usage(std::cerr);
        return kExitUsage;
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "idsynth: " << e.what() << "\n";
    return kExitUsage;
  }
  if (i >= args.size()) {
    print_usage(std::cerr);
    return kExitUsage;
  }
  const std::string name = args[i];
  const Command* command = nullptr;
  for (const auto& c : commands())
    if (name == c.name) command = &c;
  if (command == nullptr) {
    std::cerr << "idsynth: unknown command '" << name << "'\n";
    print_usage(std::cerr);
    return kExitUsage;
  }
  configure_threads(threads);
  std::vector<std::string> rest(args.begin() + static_cast<std::ptrdiff_t>(i) + 1, args.end());
  try {
    return command->run(rest);
  } catch (const po::error& e) {
    std::cerr << "idsynth " << name << ": " << e.what() << " (see 'idsynth " << name << " --help')\n";
    return kExitUsage;
  } catch (const Error& e) {
    std::cerr << "idsynth " << name << ": error: " << e.what() << "\n";
    return kExitError;
  } catch (const c10::Error& e) {
    std::cerr << "idsynth " << name << ": error: " << e.what_without_backtrace() << "\n";
    return kExitError;
  } catch (const std::exception& e) {
    std::cerr << "idsynth " << name << ": error: " << e.what() << "\n";
    return kExitError;
  }
}
