#include "tests/support/tensor_compare.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <cstdlib>

#include "core/check.h"
#include "core/tensor_dict.h"

namespace idsynth::test {

c10::Device test_device() {
  const char* env = std::getenv("IDSYNTH_TEST_DEVICE");
  const std::string name = env && *env ? env : "cpu";
  c10::Device device = c10::kCPU;
  try {
    device = c10::Device(name);
  } catch (const c10::Error&) {
    fail("IDSYNTH_TEST_DEVICE: expected cpu, cuda or cuda:N, found '", name, "'");
  }
  // Parity tolerances are for true float32: no TensorFloat-32 convolutions or products on the GPU.
  if (device.is_cuda()) {
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
  }
  return device;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.detach().to(at::kCPU, at::kDouble) - b.detach().to(at::kCPU, at::kDouble)).abs().max().item<double>();
}

::testing::AssertionResult all_close(const at::Tensor& actual, const at::Tensor& expected, double atol,
                                     const std::string& what) {
  if (actual.sizes() != expected.sizes())
    return ::testing::AssertionFailure() << what << ": shape " << shape_string(actual.sizes()) << ", expected "
                                         << shape_string(expected.sizes());
  if (actual.numel() == 0) return ::testing::AssertionSuccess();
  at::Tensor diff = (actual.detach().to(at::kCPU, at::kDouble) - expected.detach().to(at::kCPU, at::kDouble)).abs();
  if (!diff.isfinite().all().item<bool>())
    return ::testing::AssertionFailure() << what << ": non-finite values in the comparison";
  const double worst = diff.max().item<double>();
  if (worst <= atol) return ::testing::AssertionSuccess() << what << ": max|diff| " << worst;
  const int64_t at_index = diff.flatten().argmax().item<int64_t>();
  return ::testing::AssertionFailure() << what << ": max|diff| = " << worst << " > tolerance " << atol
                                       << " at flat index " << at_index << " (actual "
                                       << actual.flatten()[at_index].item<double>() << ", expected "
                                       << expected.flatten()[at_index].item<double>() << ")";
}

}  // namespace idsynth::test
