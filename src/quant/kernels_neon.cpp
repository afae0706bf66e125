// NEON kernels for aarch64 (dot products with SDOT where the compiler targets
// the dotprod extension, widening multiplies otherwise). Same contracts as the
// scalar references. Checked by the unit tests (SimdEqualsScalar and the
// random-block test) cross-compiled and run under qemu-aarch64 in `make test`
// (scripts/test-aarch64, with and without dotprod); not yet timed on ARM
// hardware.
#if defined(__aarch64__)
#include <arm_neon.h>

#include <cstring>

#include "quant/blocks.h"
#include "quant/iq_tables.h"
#include "quant/kernels.h"
#include "util/float16.h"

namespace ds4::quant {
namespace {

// Sum of 16 int8 products into 4 int32 lanes.
inline int32x4_t dot16(int32x4_t acc, int8x16_t a, int8x16_t b) {
#if defined(__ARM_FEATURE_DOTPROD)
  return vdotq_s32(acc, a, b);
#else
  const int16x8_t lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
  const int16x8_t hi = vmull_high_s8(a, b);
  return vaddq_s32(acc, vaddq_s32(vpaddlq_s16(lo), vpaddlq_s16(hi)));
#endif
}

float dot_f32(int64_t n, const void* w, const void* a) {
  const float* x = static_cast<const float*>(w);
  const float* y = static_cast<const float*>(a);
  float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 = vfmaq_f32(s0, vld1q_f32(x + i), vld1q_f32(y + i));
    s1 = vfmaq_f32(s1, vld1q_f32(x + i + 4), vld1q_f32(y + i + 4));
  }
  float s = vaddvq_f32(vaddq_f32(s0, s1));
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}
float dot_f16(int64_t n, const void* w, const void* a) {
  const uint16_t* x = static_cast<const uint16_t*>(w);
  const float* y = static_cast<const float*>(a);
  float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float16x8_t h = vreinterpretq_f16_u16(vld1q_u16(x + i));
    s0 = vfmaq_f32(s0, vcvt_f32_f16(vget_low_f16(h)), vld1q_f32(y + i));
    s1 = vfmaq_f32(s1, vcvt_high_f32_f16(h), vld1q_f32(y + i + 4));
  }
  float s = vaddvq_f32(vaddq_f32(s0, s1));
  for (; i < n; ++i) s += f16_to_f32(x[i]) * y[i];
  return s;
}
float dot_bf16(int64_t n, const void* w, const void* a) {
  const uint16_t* x = static_cast<const uint16_t*>(w);
  const float* y = static_cast<const float*>(a);
  float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint16x8_t h = vld1q_u16(x + i);
    s0 = vfmaq_f32(s0, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(h), 16)), vld1q_f32(y + i));
    s1 = vfmaq_f32(s1, vreinterpretq_f32_u32(vshll_high_n_u16(h, 16)), vld1q_f32(y + i + 4));
  }
  float s = vaddvq_f32(vaddq_f32(s0, s1));
  for (; i < n; ++i) s += bf16_to_f32(x[i]) * y[i];
  return s;
}

float dot_q8_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ8_0*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float32x4_t acc = vdupq_n_f32(0);
  for (int64_t i = 0; i < n / QK; ++i) {
    int32x4_t s = vdupq_n_s32(0);
    s = dot16(s, vld1q_s8(x[i].qs), vld1q_s8(y[i].qs));
    s = dot16(s, vld1q_s8(x[i].qs + 16), vld1q_s8(y[i].qs + 16));
    acc = vfmaq_n_f32(acc, vcvtq_f32_s32(s), f16_to_f32(x[i].d) * f16_to_f32(y[i].d));
  }
  return vaddvq_f32(acc);
}

float dot_mxfp4(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockMXFP4*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  const int8x16_t table = vld1q_s8(kvalues_mxfp4);
  float32x4_t acc = vdupq_n_f32(0);
  for (int64_t i = 0; i < n / QK; ++i) {
    const uint8x16_t q = vld1q_u8(x[i].qs);
    const int8x16_t lo = vqtbl1q_s8(table, vandq_u8(q, vdupq_n_u8(0x0F)));
    const int8x16_t hi = vqtbl1q_s8(table, vshrq_n_u8(q, 4));
    int32x4_t s = dot16(vdupq_n_s32(0), lo, vld1q_s8(y[i].qs));
    s = dot16(s, hi, vld1q_s8(y[i].qs + 16));
    acc = vfmaq_n_f32(acc, vcvtq_f32_s32(s), e8m0_to_f32_half(x[i].e) * f16_to_f32(y[i].d));
  }
  return vaddvq_f32(acc);
}

float dot_q2_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ2_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  const uint8x16_t m3 = vdupq_n_u8(3);
  float sum = 0;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int summs = 0;
    for (int j = 0; j < 16; ++j) summs += y[i].bsums[j] * (x[i].scales[j] >> 4);
    int isum = 0;
    for (int h = 0; h < 2; ++h)
      for (int half = 0; half < 2; ++half) {
        const uint8x16_t q = vld1q_u8(x[i].qs + 32 * h + 16 * half);
        for (int s = 0; s < 4; ++s) {
          const int8x16_t q2 = vreinterpretq_s8_u8(vandq_u8(vshlq_u8(q, vdupq_n_s8(static_cast<int8_t>(-2 * s))), m3));
          const int pos0 = 128 * h + 32 * s + 16 * half;
          const int32x4_t d = dot16(vdupq_n_s32(0), q2, vld1q_s8(y[i].qs + pos0));
          isum += (x[i].scales[pos0 / 16] & 0xF) * vaddvq_s32(d);
        }
      }
    sum += y[i].d * f16_to_f32(x[i].d) * static_cast<float>(isum) - y[i].d * f16_to_f32(x[i].dmin) * static_cast<float>(summs);
  }
  return sum;
}

float dot_q4_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  float sum = 0;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int isum = 0, summ = 0;
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      get_scale_min_k4(j, x[i].scales, sc, m);
      summ += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
      int32x4_t d = vdupq_n_s32(0);
      for (int half = 0; half < 2; ++half) {
        const uint8x16_t q = vld1q_u8(x[i].qs + 32 * (j / 2) + 16 * half);
        const uint8x16_t v = (j & 1) ? vshrq_n_u8(q, 4) : vandq_u8(q, vdupq_n_u8(0x0F));
        d = dot16(d, vreinterpretq_s8_u8(v), vld1q_s8(y[i].qs + 32 * j + 16 * half));
      }
      isum += sc * vaddvq_s32(d);
    }
    sum += y[i].d * f16_to_f32(x[i].d) * static_cast<float>(isum) - y[i].d * f16_to_f32(x[i].dmin) * static_cast<float>(summ);
  }
  return sum;
}

float dot_iq2_xxs(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockIQ2_XXS*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  // Sign bit j of a byte -> lane j mask.
  const uint8x8_t bit = {1, 2, 4, 8, 16, 32, 64, 128};
  float sum = 0;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int bsum = 0;
    for (int ib = 0; ib < 8; ++ib) {
      uint32_t aux0, aux1;
      std::memcpy(&aux0, x[i].qs + 4 * ib, 4);
      std::memcpy(&aux1, x[i].qs + 4 * ib + 2, 4);
      int32x4_t d = vdupq_n_s32(0);
      for (int k = 0; k < 4; k += 2) {
        const uint8x16_t g = vcombine_u8(vld1_u8(iq2xxs_grid[(aux0 >> (8 * k)) & 0xFF]),
                                         vld1_u8(iq2xxs_grid[(aux0 >> (8 * (k + 1))) & 0xFF]));
        const uint8x8_t s0 = vtst_u8(vdup_n_u8(ksigns_iq2xs[(aux1 >> (7 * k)) & 127]), bit);
        const uint8x8_t s1 = vtst_u8(vdup_n_u8(ksigns_iq2xs[(aux1 >> (7 * (k + 1))) & 127]), bit);
        const int8x16_t gv = vreinterpretq_s8_u8(g);
        const int8x16_t neg = vnegq_s8(gv);
        const int8x16_t sg = vbslq_s8(vcombine_u8(s0, s1), neg, gv);
        d = dot16(d, sg, vld1q_s8(y[i].qs + 32 * ib + 8 * k));
      }
      bsum += vaddvq_s32(d) * static_cast<int>(2 * (aux1 >> 28) + 1);
    }
    sum += f16_to_f32(x[i].d) * y[i].d * 0.125f * static_cast<float>(bsum);
  }
  return sum;
}

struct Entry {
  GgmlType t;
  DotKernel k;
};
const Entry kNeon[] = {
    {GgmlType::F32, {GgmlType::F32, dot_f32}},       {GgmlType::F16, {GgmlType::F32, dot_f16}},
    {GgmlType::BF16, {GgmlType::F32, dot_bf16}},     {GgmlType::Q8_0, {GgmlType::Q8_0, dot_q8_0}},
    {GgmlType::MXFP4, {GgmlType::Q8_0, dot_mxfp4}},  {GgmlType::Q2_K, {GgmlType::Q8_K, dot_q2_k}},
    {GgmlType::Q4_K, {GgmlType::Q8_K, dot_q4_k}},    {GgmlType::IQ2_XXS, {GgmlType::Q8_K, dot_iq2_xxs}},
};

}  // namespace

const DotKernel* neon_kernel(GgmlType t) {
  for (const auto& e : kNeon)
    if (e.t == t) return &e.k;
  return nullptr;
}

}  // namespace ds4::quant
#endif
