// Tensor comparisons for parity tests: report the max abs difference, where it is, and the tolerance.
#pragma once

#include <ATen/Tensor.h>
#include <c10/core/Device.h>
#include <gtest/gtest.h>

#include <string>

namespace idsynth::test {

// Succeeds when shapes match and max|a - b| <= atol (compared in float64).
::testing::AssertionResult all_close(const at::Tensor& actual, const at::Tensor& expected, double atol,
                                     const std::string& what = "tensor");
double max_abs_diff(const at::Tensor& a, const at::Tensor& b);

// Device the libtorch-only (nn_*) tests run their models on: $IDSYNTH_TEST_DEVICE ("cpu" when unset,
// "cuda", "cuda:1"). CI runs on the CPU; a GPU machine reruns the same parity tests with
// IDSYNTH_TEST_DEVICE=cuda (scripts/gpu-check.sh).
c10::Device test_device();

}  // namespace idsynth::test

#define EXPECT_ALL_CLOSE(actual, expected, atol) EXPECT_TRUE(::idsynth::test::all_close(actual, expected, atol, #actual))
#define ASSERT_ALL_CLOSE(actual, expected, atol) ASSERT_TRUE(::idsynth::test::all_close(actual, expected, atol, #actual))
