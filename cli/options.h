// Shared command-line plumbing on Boost.Program_options. Every command gets --help, --threads and
// --log-level; the options several commands take are declared here once, with one spelling and one
// help text (the option table): --device, --dtype (float32 | float16 | bfloat16; the old fp32 /
// fp16 / bf16 are accepted with a warning) and --recognizer (the old --model is accepted with a
// warning). Usage errors become kExitUsage with one line.
#pragma once

#include <boost/program_options.hpp>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>
#include <vector>

namespace idsynth::cli {

namespace po = boost::program_options;

// The shared options a command takes: declare with add(), read after parse_args().
class SharedOptions {
 public:
  // --device; `runs` says what runs there ("the UNet, VAE and text encoder").
  SharedOptions& device(const std::string& runs, const std::string& default_value = "cpu");
  // --dtype; `applies_to` says which weights it sets.
  SharedOptions& dtype(const std::string& applies_to, const std::string& default_value = "float32");
  // --recognizer (and the deprecated --model).
  SharedOptions& recognizer(bool required, const std::string& default_value = "");

  c10::Device device_value() const;
  const std::string& device_text() const { return device_; }
  c10::ScalarType dtype_value() const;
  std::string dtype_text() const;  // normalised spelling
  const std::string& recognizer_path() const { return recognizer_; }

  // Called by parse_args: declare the options, then apply deprecations and required checks.
  void add_to(po::options_description& opts);
  void finish(const po::variables_map& vars);

 private:
  bool has_device_ = false, has_dtype_ = false, has_recognizer_ = false, recognizer_required_ = false;
  std::string device_help_, dtype_help_;
  std::string device_, dtype_, recognizer_, model_alias_;
};

struct ParsedArgs {
  po::variables_map vars;
  bool help = false;
};

// Parses args against `options` (+ positional, + the shared options declared in `shared`); prints
// "usage: idsynth <command> <usage>" and the option table for --help; applies --threads and
// --log-level. Throws po::error for bad input (caught in main as a usage error).
ParsedArgs parse_args(const std::string& command, const std::string& usage, const std::string& description,
                      po::options_description options, const std::vector<std::string>& args,
                      const po::positional_options_description* positional = nullptr, SharedOptions* shared = nullptr);

// The process-wide defaults of --threads and --log-level given before the command (main.cpp).
void set_global_defaults(int threads, const std::string& log_level);

}  // namespace idsynth::cli
