// Half and bfloat16 conversions, checked against the CPU's own F16C conversion
// instructions (an implementation we did not write) where available, and
// against exhaustive invariants everywhere.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "util/float16.h"

namespace ds4 {
namespace {

#if defined(__x86_64__)
__attribute__((target("f16c"))) uint16_t hw_f32_to_f16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float hw_f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
#endif

TEST(Float16, EveryHalfRoundTrips) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    EXPECT_EQ(f32_to_f16(f), h) << std::hex << h;
  }
}

#if defined(__x86_64__)
TEST(Float16, MatchesF16CInstructions) {
  if (!__builtin_cpu_supports("f16c")) GTEST_FAIL() << "CPU without F16C: cannot run the hardware oracle";
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = f16_to_f32(static_cast<uint16_t>(h)), b = hw_f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(b)) {
      EXPECT_TRUE(std::isnan(a));
    } else {
      EXPECT_EQ(std::bit_cast<uint32_t>(a), std::bit_cast<uint32_t>(b)) << std::hex << h;
    }
  }
  std::mt19937 rng(42);
  for (int k = 0; k < 2000000; ++k) {
    // Random bit patterns cover subnormals, ties, overflow and NaN.
    const float f = std::bit_cast<float>(static_cast<uint32_t>(rng()));
    const uint16_t want = hw_f32_to_f16(f), got = f32_to_f16(f);
    if (std::isnan(f)) {
      EXPECT_EQ(got & 0x7c00, 0x7c00);
      EXPECT_NE(got & 0x3ff, 0);
    } else {
      ASSERT_EQ(got, want) << "f=" << f << " bits=" << std::hex << std::bit_cast<uint32_t>(f);
    }
  }
  // Exact midpoints between adjacent halves, where ties-to-even decides.
  for (uint32_t h = 0; h < 0x7bff; ++h) {
    const double lo = f16_to_f32(static_cast<uint16_t>(h)), hi = f16_to_f32(static_cast<uint16_t>(h + 1));
    const float mid = static_cast<float>((lo + hi) / 2);
    if (static_cast<double>(mid) != (lo + hi) / 2) continue;
    EXPECT_EQ(f32_to_f16(mid), hw_f32_to_f16(mid)) << std::hex << h;
  }
}
#endif

TEST(BFloat16, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is exactly between 1 and 1 + 2^-7: ties to even (down).
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808000u)), 0x3f80);
  // 1 + 3*2^-8 is between 1+2^-7 (odd) and 1+2^-6: rounds up to even.
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f818000u)), 0x3f82);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x3f808001u)), 0x3f81);
  EXPECT_EQ(f32_to_bf16(std::bit_cast<float>(0x7f7fffffu)), 0x7f80);  // rounds to inf
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(std::nanf("")))));
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = bf16_to_f32(static_cast<uint16_t>(h));
    if (!std::isnan(f)) {
      EXPECT_EQ(f32_to_bf16(f), h);
    }
  }
}

}  // namespace
}  // namespace ds4
