// idsynth: synthetic face-recognition datasets with Arc2Face, and the tools that measure them.
#include <algorithm>
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
      {"draw-faces", "faces with known identities from a procedural renderer: folders, RecordIO or a .bin pack", cmd_draw_faces},
      {"identities", "sample well-separated synthetic identity vectors", cmd_identities},
      {"sample", "identity vectors -> Arc2Face face images (PNG) and a sample.json record", cmd_sample},
      {"embed", "photos -> L2-normalised identity vectors (SCRFD, ArcFace alignment, ArcFace/IResNet)", cmd_embed},
      {"weights", "list the tensors of a weight file (safetensors, torch checkpoint, ONNX)", cmd_weights},
      {"check-model", "which file, layout and dtype each part of a model loads from; fails on the first that does not", cmd_check_model},
      {"config", "print the default config, or validate and resolve a config file", cmd_config},
      {"generate", "the main job: a YAML config -> a face-recognition training set (HDF5 shards)", cmd_generate},
      {"merge", "verify a dataset's shards (size, sha256), report gaps, rebuild manifest.json", cmd_merge},
      {"export", "dataset -> insightface RecordIO (train.rec/.idx, property) or a folder per identity", cmd_export},
      {"inspect", "dataset counts, per-identity cosine statistics, a contact sheet", cmd_inspect},
      {"eval", "evaluate: verification on .bin packs, ID similarity, FID, LPIPS diversity, audit against real people; reports comparing runs", cmd_eval},
      {"train", "train an IResNet face recogniser (ArcFace/CosFace/AdaFace) on shards or RecordIO", cmd_train},
      {"train-generator", "fine-tune the Arc2Face UNet and ID encoder (full or LoRA) on (face, ID vector) pairs", cmd_train_generator},
  };
  return table;
}

namespace {

// The options given before the command; every command also takes --threads and --log-level itself.
po::options_description global_options(int* threads, std::string* log_level) {
  po::options_description g("global options (before the command)");
  g.add_options()("log-level", po::value<std::string>(log_level)->default_value("info"),
                  "debug | info | warn | error | quiet")(
      "threads", po::value<int>(threads)->default_value(0), "CPU threads for libtorch (0: all cores)")(
      "timestamps", "prefix log lines with the time")("version", "print the version and exit")(
      "help,h", "show this help and exit");
  return g;
}

void print_usage(std::ostream& os, const po::options_description& global) {
  os << "usage: idsynth [global options] <command> [options]\n\ncommands:\n";
  size_t width = 0;
  for (const auto& c : commands()) width = std::max(width, std::string(c.name).size());
  for (const auto& c : commands()) {
    std::string name = c.name;
    name.resize(width, ' ');
    os << "  " << name << " " << c.summary << "\n";
  }
  os << "\n" << global
     << "\n'idsynth <command> --help' describes each command. Exit codes: 0 ok, 1 error, 2 usage, 3 partial,\n"
     << "130 stopped by SIGTERM/SIGINT (finished work saved; rerun resumes).\n";
}

}  // namespace
}  // namespace idsynth::cli

int main(int argc, char** argv) {
  using namespace idsynth;
  using namespace idsynth::cli;
  std::vector<std::string> args(argv + 1, argv + argc);
  // 1. global options: the tokens before the first word that is not an option or its value
  int threads = 0;
  std::string log_level;
  const po::options_description global = global_options(&threads, &log_level);
  size_t i = 0;
  while (i < args.size() && args[i].rfind("-", 0) == 0) {
    const std::string name = args[i].substr(args[i].find_first_not_of('-'));
    const auto* option = global.find_nothrow(name.substr(0, name.find('=')), false);
    i += (option != nullptr && option->semantic()->max_tokens() > 0 && name.find('=') == std::string::npos) ? 2 : 1;
  }
  i = std::min(i, args.size());
  po::variables_map vars;
  try {
    po::store(po::command_line_parser(std::vector<std::string>(args.begin(), args.begin() + static_cast<std::ptrdiff_t>(i)))
                  .options(global)
                  .run(),
              vars);
    po::notify(vars);
    log::set_threshold(log::parse_level(log_level));
  } catch (const std::exception& e) {
    std::cerr << "idsynth: " << e.what() << "\n";
    print_usage(std::cerr, global);
    return kExitUsage;
  }
  if (vars.count("help")) {
    print_usage(std::cout, global);
    return kExitOk;
  }
  if (vars.count("version")) {
    std::cout << "idsynth 0.1.0\n";
    return kExitOk;
  }
  if (vars.count("timestamps")) log::set_timestamps(true);
  set_global_defaults(threads, log_level);
  // 2. the command
  if (i >= args.size()) {
    print_usage(std::cerr, global);
    return kExitUsage;
  }
  const std::string name = args[i];
  const Command* command = nullptr;
  for (const auto& c : commands())
    if (name == c.name) command = &c;
  if (command == nullptr) {
    std::cerr << "idsynth: unknown command '" << name << "'\n";
    print_usage(std::cerr, global);
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
    if (e.condition() != nullptr) LOG_DBG("failed check: ", e.condition(), " (", e.file(), ":", e.line(), ")");
    return kExitError;
  } catch (const c10::Error& e) {
    std::cerr << "idsynth " << name << ": error: " << e.what_without_backtrace() << "\n";
    return kExitError;
  } catch (const std::exception& e) {
    std::cerr << "idsynth " << name << ": error: " << e.what() << "\n";
    return kExitError;
  }
}
