// Devices, precisions and CPU threads, parsed from user strings with clear errors.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>
#include <vector>

namespace idsynth {

// "cpu", "cuda", "cuda:N"; `what` names the field in errors.
c10::Device parse_device(const std::string& text, const std::string& what = "device");
// "auto" -> every CUDA device, else the CPU; otherwise a list of parse_device strings.
std::vector<c10::Device> resolve_devices(const std::vector<std::string>& names, const std::string& what = "devices");
// "float32"/"fp32", "bfloat16"/"bf16", "float16"/"fp16".
c10::ScalarType parse_dtype(const std::string& text, const std::string& what = "dtype");
std::string dtype_string(c10::ScalarType type);

// Sets libtorch's intra-op threads (Debian's default is 1); n <= 0 means all cores.
int configure_threads(int n);

}  // namespace idsynth
