#include "core/device.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <dlfcn.h>

#include <cstdlib>
#include <thread>

#include "core/check.h"
#include "core/log.h"

namespace idsynth {

c10::Device parse_device(const std::string& text, const std::string& what) {
  if (text == "cpu") return c10::Device(c10::kCPU);
  if (text == "cuda" || text.rfind("cuda:", 0) == 0) {
    IDSYNTH_CHECK(torch::cuda::is_available(), what, ": expected a CUDA device to be available for '", text,
                  "', found none (this libtorch build or machine has no CUDA)");
    int index = 0;
    if (text.size() > 5) {
      const std::string num = text.substr(5);
      IDSYNTH_CHECK(!num.empty() && num.find_first_not_of("0123456789") == std::string::npos, what,
                    ": expected cuda:N, found '", text, "'");
      index = std::stoi(num);
    }
    const int count = static_cast<int>(torch::cuda::device_count());
    IDSYNTH_CHECK(index < count, what, ": expected a device index below ", count, ", found '", text, "'");
    return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  fail(what, ": expected cpu, cuda or cuda:N, found '", text, "'");
}

std::vector<c10::Device> resolve_devices(const std::vector<std::string>& names, const std::string& what) {
  std::vector<c10::Device> out;
  if (names.size() == 1 && names[0] == "auto") {
    const auto count = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
    for (size_t i = 0; i < count; ++i) out.emplace_back(c10::kCUDA, static_cast<c10::DeviceIndex>(i));
    if (out.empty()) out.emplace_back(c10::kCPU);
    return out;
  }
  IDSYNTH_CHECK(!names.empty(), what, ": expected 'auto' or a list of devices, found an empty list");
  for (const auto& n : names) out.push_back(parse_device(n, what));
  return out;
}

bool cpu_has_fast_bfloat16() {
#if defined(__x86_64__) || defined(__i386__)
  return at::hasMKLDNN() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq");
#else
  return false;  // aarch64 and others: not measured; float32 is the safe choice
#endif
}

c10::ScalarType runtime_dtype(c10::ScalarType requested, c10::Device device, const std::string& what) {
  if (!device.is_cpu() || requested == c10::kFloat) return requested;
  if (requested == c10::kBFloat16) {
    const char* force = std::getenv("IDSYNTH_CPU_BF16");
    if ((force != nullptr && std::string(force) == "1") || cpu_has_fast_bfloat16()) return requested;
    LOG_WRN(what, ": bfloat16 on this CPU (no AVX-512) runs libtorch's scalar fallback, 10-36x slower than float32; "
            "computing in float32 (IDSYNTH_CPU_BF16=1 keeps bfloat16)");
    return c10::kFloat;
  }
  if (requested == c10::kHalf) {
    LOG_WRN(what, ": float16 has no CPU convolution kernels in libtorch; computing in float32 on the CPU");
    return c10::kFloat;
  }
  return requested;
}

c10::ScalarType parse_dtype(const std::string& text, const std::string& what) {
  if (text == "float32" || text == "fp32") return c10::kFloat;
  if (text == "bfloat16" || text == "bf16") return c10::kBFloat16;
  if (text == "float16" || text == "fp16") return c10::kHalf;
  fail(what, ": expected float32, bfloat16 or float16, found '", text, "'");
}

std::string dtype_string(c10::ScalarType type) {
  switch (type) {
    case c10::kFloat: return "float32";
    case c10::kBFloat16: return "bfloat16";
    case c10::kHalf: return "float16";
    default: return c10::toString(type);
  }
}

namespace {
// OpenBLAS's control functions, looked up at run time: libtorch may be linked against any BLAS.
struct OpenBlasControl {
  void (*set_num_threads)(int) = nullptr;
  int (*get_num_threads)() = nullptr;
  int (*get_parallel)() = nullptr;  // 0 sequential, 1 pthreads, 2 OpenMP
  OpenBlasControl() {
    set_num_threads = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    get_num_threads = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    get_parallel = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "openblas_get_parallel"));
  }
  bool present() const { return set_num_threads && get_num_threads && get_parallel; }
};
const OpenBlasControl& openblas() {
  static const OpenBlasControl control;
  return control;
}
}  // namespace

BlasThreading blas_threading() {
  const auto& ob = openblas();
  if (!ob.present() || ob.get_parallel() == 2) return BlasThreading::kSharesOpenMP;
  return ob.get_num_threads() > 1 ? BlasThreading::kOwnPool : BlasThreading::kSingleThreaded;
}

void make_blas_single_threaded() {
  const auto& ob = openblas();
  if (ob.present() && ob.get_parallel() != 2) ob.set_num_threads(1);
}

int configure_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  if (at::hasMKLDNN()) make_blas_single_threaded();
  return n;
}

}  // namespace idsynth
