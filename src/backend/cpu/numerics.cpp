#include "backend/cpu/numerics.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace ds4::backend::cpu {
namespace {

// Round |x| onto a grid with `mant_bits` mantissa bits, minimum normal exponent
// `emin` (subnormals below it share 2^(emin - mant_bits) spacing), saturating at
// `maxv`. Ties go to the even code, i.e. the grid point whose last mantissa bit
// is 0: with a uniform local step that is the even multiple of the step.
float round_minifloat(float x, int mant_bits, int emin, float maxv) {
  if (std::isnan(x)) return x;
  const float a = std::fabs(x);
  if (a >= maxv) return std::copysign(maxv, x);
  int e = a > 0 ? std::ilogb(a) : emin;
  if (e < emin) e = emin;
  const float step = std::ldexp(1.0f, e - mant_bits);
  const float q = a / step;  // exact: power-of-two division
  float r = std::nearbyint(q);  // default rounding mode: nearest, ties to even
  float v = r * step;
  if (v > maxv) v = maxv;
  return std::copysign(v, x);
}

void scaled_round(std::span<float> x, size_t block, float maxv, float min_amax, float (*rnd)(float)) {
  for (size_t b = 0; b < x.size(); b += block) {
    const size_t e = std::min(x.size(), b + block);
    float amax = min_amax;
    for (size_t k = b; k < e; ++k) amax = std::max(amax, std::fabs(x[k]));
    const float s = std::ldexp(1.0f, static_cast<int>(std::ceil(std::log2(amax / maxv))));
    for (size_t k = b; k < e; ++k) x[k] = rnd(std::clamp(x[k] / s, -maxv, maxv)) * s;
  }
}

}  // namespace

float e4m3_round(float x) { return round_minifloat(x, 3, -6, 448.0f); }
float e2m1_round(float x) { return round_minifloat(x, 1, 0, 6.0f); }

void fp8_simulate_64(std::span<float> x) { scaled_round(x, 64, 448.0f, 1e-4f, e4m3_round); }
void fp4_simulate_32(std::span<float> x) { scaled_round(x, 32, 6.0f, 6.0f * std::ldexp(1.0f, -126), e2m1_round); }

void hadamard_inplace(std::span<float> x) {
  const size_t n = x.size();
  if (n == 0 || (n & (n - 1)) != 0) fail("hadamard: length {} is not a power of two", n);
  for (size_t h = 1; h < n; h *= 2)
    for (size_t i = 0; i < n; i += 2 * h)
      for (size_t j = i; j < i + h; ++j) {
        const float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  const float s = 1.0f / std::sqrt(static_cast<float>(n));
  for (float& v : x) v *= s;
}

void indexer_qat(std::span<float> x) {
  hadamard_inplace(x);
  fp4_simulate_32(x);
}

}  // namespace ds4::backend::cpu
