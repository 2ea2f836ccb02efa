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

// Whether this CPU runs libtorch's bfloat16 products at float32 speed or better: oneDNN's bf16
// kernels need AVX-512 (avx512_core). Without it (AVX2 CPUs) libtorch 1.13 falls back to scalar
// loops: measured on an AVX2 machine, linear 36x, 3x3 convolution 24x and bmm 10x slower
// than float32 (`bench_nn_unet_step --what kernels`).
bool cpu_has_fast_bfloat16();
// The dtype models run in when `requested` is asked for on `device`. On the CPU float16 has no
// convolution kernels in libtorch, and bfloat16 without AVX-512 is the crawl above, so both become
// float32 there with one warning naming `what` (the field or flag). IDSYNTH_CPU_BF16=1 keeps
// bfloat16 on any CPU (benchmarks of the slow path). Other devices and float32: `requested`.
c10::ScalarType runtime_dtype(c10::ScalarType requested, c10::Device device, const std::string& what);

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
