#pragma once
// Small numeric helpers shared by the quantizers.
#include <cmath>
#include <cstdint>

#include "quant/kernels.h"

namespace ds4::quant {

// Groups whose largest magnitude is below this are stored as zeros.
constexpr float kGroupMaxEps = 1e-15f;

// Round half to even, as ggml's nearest_int (the 1.5*2^23 trick) does for the
// magnitudes quantizers see.
inline int nearest_int(float v) { return static_cast<int>(std::nearbyint(v)); }


}  // namespace ds4::quant
