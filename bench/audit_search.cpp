// The audit's exact nearest-centre search (eval::nearest_rows): Q synthetic centres against K real
// centres (random unit vectors), top-1 by cosine in blocks, next to the matrix-product rate of one
// block measured in the same run (at::matmul on OpenBLAS split over the threads, and the oneDNN 1x1
// convolution the search uses on a CPU), and a check of 200 rows against a one-shot argmax.
//   bench_audit_search [--queries 10000] [--gallery 200000] [--dim 512] [--threads 0] [--device cpu]
//                      [--block-rows 2048] [--block-cols 16384]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/device.h"
#include "core/log.h"
#include "eval/audit.h"
#include "recognition/recognizer.h"

using namespace idsynth;

int main(int argc, char** argv) {
  int64_t queries = 10000, gallery = 200000, dim = 512, block_rows = 2048, block_cols = 16384;
  int threads = 0;
  std::string device_text = "cpu";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const char* v = argv[i + 1];
    if (a == "--queries") queries = std::atoll(v);
    else if (a == "--gallery") gallery = std::atoll(v);
    else if (a == "--dim") dim = std::atoll(v);
    else if (a == "--threads") threads = std::atoi(v);
    else if (a == "--device") device_text = v;
    else if (a == "--block-rows") block_rows = std::atoll(v);
    else if (a == "--block-cols") block_cols = std::atoll(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  const int used = configure_threads(threads);
  const c10::Device device = parse_device(device_text, "--device");
  at::manual_seed(0);
  const at::Tensor q = recognition::l2_normalize(at::randn({queries, dim}));
  const at::Tensor k = recognition::l2_normalize(at::randn({gallery, dim}));
  std::printf("audit search: %lld queries x %lld centres x %lld dims on %s, %d threads, blocks %lld x %lld\n",
              static_cast<long long>(queries), static_cast<long long>(gallery), static_cast<long long>(dim),
              device_text.c_str(), used, static_cast<long long>(block_rows), static_cast<long long>(block_cols));

  // 1. reference: the products alone, one block of rows per thread as the search runs them on the
  //    CPU (OpenBLAS single-threaded inside ATen's threads, core/device.h), without the top-1
  const int64_t rb = std::min(queries, block_rows), cb = std::min(gallery, block_cols);
  const at::Tensor qb = q.slice(0, 0, rb).to(device), kb = k.slice(0, 0, cb).to(device);
  const int64_t parts = device.is_cpu() ? at::get_num_threads() : 1;
  const auto products = [&] {
    at::parallel_for(0, parts, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        at::Tensor s = at::matmul(qb.slice(0, p * rb / parts, (p + 1) * rb / parts), kb.t());
        if (device.is_cuda()) s.cpu();
      }
    });
  };
  products();  // warm-up
  log::Stopwatch ref;
  int reps = 0;
  do {
    products();
    ++reps;
  } while (ref.seconds() < 2.0);
  const double ref_gflops = 2.0 * static_cast<double>(rb * cb * dim) * reps / ref.seconds() / 1e9;
  std::printf("reference: the %lld x %lld x %lld product (at::matmul, %lld row parts in parallel): %.1f GFLOP/s\n",
              static_cast<long long>(rb), static_cast<long long>(dim), static_cast<long long>(cb),
              static_cast<long long>(parts), ref_gflops);

  // ... and the same product as the search runs it on a CPU with oneDNN: a 1x1 convolution over a
  //     channels-last view, on all threads
  if (device.is_cpu() && at::hasMKLDNN()) {
    const at::Tensor x4 = qb.as_strided({1, dim, 1, rb}, {rb * dim, 1, rb * dim, dim});
    const at::Tensor w4 = kb.view({cb, dim, 1, 1}).contiguous(at::MemoryFormat::ChannelsLast);
    at::conv2d(x4, w4);  // warm-up
    log::Stopwatch conv;
    int conv_reps = 0;
    do {
      at::conv2d(x4, w4);
      ++conv_reps;
    } while (conv.seconds() < 2.0);
    std::printf("reference: the same product as a oneDNN 1x1 convolution: %.1f GFLOP/s\n",
                2.0 * static_cast<double>(rb * cb * dim) * conv_reps / conv.seconds() / 1e9);
  }

  // 2. the search
  log::Stopwatch sw;
  const eval::NearestRows r = eval::nearest_rows(q, k, device, false, block_rows, block_cols);
  const double s = sw.seconds();
  const double dots = static_cast<double>(queries) * static_cast<double>(gallery);
  std::printf("search: %.2f s for %.3g dot products (%.1f GFLOP/s, %.0f%% of the reference; %.0f queries/s)\n", s, dots,
              2.0 * dots * static_cast<double>(dim) / s / 1e9, 100.0 * 2.0 * dots * static_cast<double>(dim) / s / 1e9 / ref_gflops,
              static_cast<double>(queries) / s);

  // 3. check: 200 rows against a one-shot argmax
  const int64_t n = std::min<int64_t>(200, queries);
  const auto [v, i] = at::matmul(q.slice(0, 0, n), k.t()).max(1);
  int64_t wrong = 0;
  for (int64_t j = 0; j < n; ++j) wrong += r.index[static_cast<size_t>(j)] != i[j].item<int64_t>();
  std::printf("check: %lld of %lld rows differ from the one-shot argmax\n", static_cast<long long>(wrong),
              static_cast<long long>(n));
  return wrong == 0 ? 0 : 1;
}
