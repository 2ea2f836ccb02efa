#include "cli/options.h"

#include <iostream>

#include "core/check.h"
#include "core/device.h"
#include "core/log.h"

namespace idsynth::cli {

namespace {

int g_threads = 0;
std::string g_log_level = "info";

}  // namespace

void set_global_defaults(int threads, const std::string& log_level) {
  g_threads = threads;
  g_log_level = log_level;
}

SharedOptions& SharedOptions::device(const std::string& runs, const std::string& default_value) {
  has_device_ = true;
  device_ = default_value;
  device_help_ = "cpu, cuda or cuda:N: where " + runs + " run";
  return *this;
}

SharedOptions& SharedOptions::dtype(const std::string& applies_to, const std::string& default_value) {
  has_dtype_ = true;
  dtype_ = default_value;
  dtype_help_ = "float32 | float16 | bfloat16: precision of " + applies_to;
  return *this;
}

SharedOptions& SharedOptions::recognizer(bool required, const std::string& default_value) {
  has_recognizer_ = true;
  recognizer_required_ = required;
  recognizer_ = default_value;
  return *this;
}

void SharedOptions::add_to(po::options_description& opts) {
  if (has_device_) opts.add_options()("device", po::value<std::string>(&device_)->default_value(device_), device_help_.c_str());
  if (has_dtype_) opts.add_options()("dtype", po::value<std::string>(&dtype_)->default_value(dtype_), dtype_help_.c_str());
  if (has_recognizer_) {
    auto* value = po::value<std::string>(&recognizer_);
    if (!recognizer_.empty()) value->default_value(recognizer_);
    opts.add_options()("recognizer", value, "face recogniser: insightface ONNX file or IResNet weights (safetensors / torch checkpoint)")(
        "model", po::value<std::string>(&model_alias_), "deprecated spelling of --recognizer");
  }
}

void SharedOptions::finish(const po::variables_map& vars) {
  if (has_recognizer_) {
    if (vars.count("model")) {
      LOG_WRN("--model is deprecated; use --recognizer");
      if (!vars.count("recognizer") || vars["recognizer"].defaulted()) recognizer_ = model_alias_;
    }
    if (recognizer_required_ && recognizer_.empty()) throw po::required_option("--recognizer");
  }
  if (has_dtype_) {
    const c10::ScalarType t = dtype_value();  // throws for unknown spellings
    if (dtype_ != dtype_string(t)) LOG_WRN("--dtype ", dtype_, " is deprecated; use --dtype ", dtype_string(t));
  }
}

c10::Device SharedOptions::device_value() const { return parse_device(device_, "--device"); }
c10::ScalarType SharedOptions::dtype_value() const { return parse_dtype(dtype_, "--dtype"); }
std::string SharedOptions::dtype_text() const { return dtype_string(dtype_value()); }

ParsedArgs parse_args(const std::string& command, const std::string& usage, const std::string& description,
                      po::options_description options, const std::vector<std::string>& args,
                      const po::positional_options_description* positional, SharedOptions* shared) {
  int threads = g_threads;
  std::string level = g_log_level;
  if (shared != nullptr) shared->add_to(options);
  options.add_options()("threads", po::value<int>(&threads)->default_value(g_threads),
                        "CPU threads for libtorch (0: all cores)")(
      "log-level", po::value<std::string>(&level)->default_value(g_log_level), "debug | info | warn | error | quiet")(
      "help,h", "show this help and exit");
  ParsedArgs out;
  auto parser = po::command_line_parser(args).options(options);
  if (positional) parser.positional(*positional);
  po::store(parser.run(), out.vars);
  if (out.vars.count("help")) {
    std::cout << "usage: idsynth " << command << " " << usage << "\n\n" << description << "\n\n" << options << std::flush;
    out.help = true;
    return out;
  }
  po::notify(out.vars);
  log::set_threshold(log::parse_level(level));
  configure_threads(threads);
  if (shared != nullptr) shared->finish(out.vars);
  return out;
}

}  // namespace idsynth::cli
