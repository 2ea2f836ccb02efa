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

// Sets libtorch's intra-op threads (Debian's default is 1); n <= 0 means all cores. With oneDNN in
// libtorch it also makes OpenBLAS single-threaded (see BlasThreading): the large float32 products
// then run on oneDNN (generator::linear) or in per-thread attention tiles, on ATen's OpenMP threads.
int configure_threads(int n);

// How the BLAS behind libtorch's float32 products threads. Debian's libtorch uses the system BLAS:
// OpenBLAS's pthreads build keeps its own thread pool beside ATen's OpenMP pool. Measured on 2
// cores, the two pools spin against each other when their calls alternate, and concurrent calls
// from inside an OpenMP region run at half speed; with OpenBLAS at one thread, products split over
// ATen's threads reach the full two-core rate.
enum class BlasThreading {
  kSharesOpenMP,    // MKL, OpenBLAS's OpenMP build, or no OpenBLAS: single-threaded inside parallel regions
  kOwnPool,         // OpenBLAS pthreads with several threads: avoid calling it from parallel regions
  kSingleThreaded,  // OpenBLAS at one thread: safe to call from inside parallel regions
};
BlasThreading blas_threading();
// Sets OpenBLAS (pthreads or serial build) to one thread; no-op for other BLAS libraries.
void make_blas_single_threaded();

}  // namespace idsynth
