// The idsynth subcommands. Each lives in its own cli/cmd_<name>.cpp and stays thin: parse options,
// call the library, report. Add a command by writing its file and one line in cli/main.cpp's table.
#pragma once

#include <string>
#include <vector>

namespace idsynth::cli {

// Exit codes (docs/cli.md, docs/reliability.md): 0 success; 1 bad input or a failed run
// (idsynth::Error, one line); 2 bad command line; 3 finished, but some items failed or are left
// (listed); 130 stopped by SIGTERM or SIGINT after saving what was finished (rerun resumes).
constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr int kExitPartial = 3;
constexpr int kExitInterrupted = 130;

// args excludes the program and command names.
using CommandFn = int (*)(const std::vector<std::string>& args);

struct Command {
  const char* name;
  const char* summary;
  CommandFn run;
};

const std::vector<Command>& commands();

int cmd_weights(const std::vector<std::string>& args);
int cmd_embed(const std::vector<std::string>& args);
int cmd_draw_faces(const std::vector<std::string>& args);
int cmd_identities(const std::vector<std::string>& args);
int cmd_init_model(const std::vector<std::string>& args);
int cmd_config(const std::vector<std::string>& args);
int cmd_eval(const std::vector<std::string>& args);
int cmd_train(const std::vector<std::string>& args);
int cmd_train_generator(const std::vector<std::string>& args);
int cmd_generate(const std::vector<std::string>& args);
int cmd_merge(const std::vector<std::string>& args);
int cmd_export(const std::vector<std::string>& args);
int cmd_inspect(const std::vector<std::string>& args);
int cmd_sample(const std::vector<std::string>& args);
int cmd_check_model(const std::vector<std::string>& args);

}  // namespace idsynth::cli
