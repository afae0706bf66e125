#pragma once
// Small numeric helpers shared by the quantizers.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "quant/kernels.h"

namespace ds4::quant {

// Groups whose largest magnitude is below this are stored as zeros.
constexpr float kGroupMaxEps = 1e-15f;

// Round half to even for |v| < 2^22 (all callers: scaled quantization levels).
// Adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits; this
// is plain arithmetic, unlike nearbyint, which is a libm call on baseline x86-64.
inline int nearest_int(float v) {
  const float shifted = v + 12582912.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, 4);
  return (bits & 0x007fffff) - 0x00400000;
}


}  // namespace ds4::quant
