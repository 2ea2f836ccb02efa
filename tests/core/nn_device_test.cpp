// Which dtype models compute in on the CPU (core/device.h runtime_dtype): float32 stays; float16
// becomes float32 (libtorch has no float16 CPU convolution); bfloat16 stays only where this CPU has
// fast bfloat16 kernels (AVX-512) or IDSYNTH_CPU_BF16=1 asks for it.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "core/device.h"

namespace idsynth {
namespace {

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    if (value) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_, old_.c_str(), 1);
    else unsetenv(name_);
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(RuntimeDtype, CpuComputesHalfPrecisionOnlyWhereItIsFast) {
  const c10::Device cpu(c10::kCPU);
  ScopedEnv unset("IDSYNTH_CPU_BF16", nullptr);
  EXPECT_EQ(runtime_dtype(c10::kFloat, cpu, "--dtype"), c10::kFloat);
  EXPECT_EQ(runtime_dtype(c10::kHalf, cpu, "--dtype"), c10::kFloat);
  EXPECT_EQ(runtime_dtype(c10::kBFloat16, cpu, "--dtype"), cpu_has_fast_bfloat16() ? c10::kBFloat16 : c10::kFloat);
  {
    ScopedEnv force("IDSYNTH_CPU_BF16", "1");
    EXPECT_EQ(runtime_dtype(c10::kBFloat16, cpu, "--dtype"), c10::kBFloat16);
    EXPECT_EQ(runtime_dtype(c10::kHalf, cpu, "--dtype"), c10::kFloat) << "IDSYNTH_CPU_BF16 is about bfloat16 only";
  }
  // Other devices keep what was asked for (CUDA has every kernel); the device need not exist.
  const c10::Device cuda(c10::kCUDA, 0);
  EXPECT_EQ(runtime_dtype(c10::kHalf, cuda, "--dtype"), c10::kHalf);
  EXPECT_EQ(runtime_dtype(c10::kBFloat16, cuda, "--dtype"), c10::kBFloat16);
}

}  // namespace
}  // namespace idsynth
