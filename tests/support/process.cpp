#include "tests/support/process.h"

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "tests/support/goldens.h"

namespace idsynth::test {

CommandResult run_command(const std::string& command) {
  const std::string dir = temp_dir("cmd");
  const std::string full = "(" + command + ") >" + dir + "/out 2>" + dir + "/err";
  const int status = std::system(full.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ostringstream o, e;
  o << std::ifstream(dir + "/out").rdbuf();
  e << std::ifstream(dir + "/err").rdbuf();
  r.out = o.str();
  r.err = e.str();
  return r;
}

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

std::string idsynth_binary() { return std::string(IDSYNTH_BINARY_DIR_FOR_SUPPORT) + "/cli/idsynth"; }

}  // namespace idsynth::test
