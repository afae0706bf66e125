// set_isa_cap: the in-process form of DS4_QUANT_ISA, which the GPU forward
// test uses to compare the CPU's scalar and SIMD kernels from the same state.
#include <gtest/gtest.h>

#include <vector>

#include "quant/kernels.h"
#include "quant/quant.h"

namespace ds4::quant {
namespace {

TEST(IsaCap, ScalarCapSelectsTheScalarKernelAndLiftingItRestoresTheBest) {
  const DotKernel* best = best_kernel(GgmlType::Q8_0);
  ASSERT_NE(best, nullptr);
  set_isa_cap(Isa::Scalar);
  EXPECT_EQ(best_kernel(GgmlType::Q8_0), scalar_kernel(GgmlType::Q8_0));
  EXPECT_EQ(best_kernel(GgmlType::Q2_K), scalar_kernel(GgmlType::Q2_K));
  set_isa_cap(Isa::Avx512);  // no cap
  EXPECT_EQ(best_kernel(GgmlType::Q8_0), best);
}

TEST(IsaCap, MatvecUnderScalarCapEqualsTheScalarDot) {
  // One Q8_0 row: under the scalar cap matvec must give exactly the scalar
  // kernel's dot of the quantized activation.
  const int64_t cols = 256;
  std::vector<float> w(cols), x(cols);
  for (int64_t i = 0; i < cols; ++i) {
    w[i] = static_cast<float>((i * 37) % 17) - 8.0f;
    x[i] = static_cast<float>((i * 11) % 13) * 0.25f - 1.5f;
  }
  std::vector<uint8_t> wq(row_bytes(GgmlType::Q8_0, cols)), xq(row_bytes(GgmlType::Q8_0, cols));
  quantize_row(GgmlType::Q8_0, w.data(), wq.data(), cols);
  quantize_row_q8_0(x.data(), xq.data(), cols);
  set_isa_cap(Isa::Scalar);
  float y = 0;
  matvec(GgmlType::Q8_0, wq.data(), 1, cols, x.data(), &y);
  set_isa_cap(Isa::Avx512);
  EXPECT_EQ(y, scalar_kernel(GgmlType::Q8_0)->dot(cols, wq.data(), xq.data()));
}

}  // namespace
}  // namespace ds4::quant
