#pragma once
// The AVX-512 intrinsics of kernels_avx512.cpp in portable C, for a second
// build of the kernels (DS4_EMULATE_AVX512) that tests run on any x86-64
// machine: CI has no AVX-512, and without this those kernels would only ever
// be checked on a borrowed host. SIMDe (Debian's libsimde-dev) implements the
// intrinsics under their usual names; the few it lacks (or names wrongly) in
// its Debian 12 version are written below, each element by element as the
// instruction reference defines it. Only correctness means anything in this
// build, never speed.
#if !defined(DS4_EMULATE_AVX512)
#error "avx512_emulated.h is for the DS4_EMULATE_AVX512 build of kernels_avx512.cpp"
#endif

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>
#include <simde/x86/fma.h>
#include <simde/x86/gfni.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "util/float16.h"

// Names that only the native headers give (SIMDe defines the simde_ forms).
#if !defined(__AVX512BW__)
typedef simde__mmask64 __mmask64;
#endif
#if !defined(_MM_FROUND_NO_EXC)
#define _MM_FROUND_NO_EXC SIMDE_MM_FROUND_NO_EXC
#endif

namespace ds4::quant::emu {

// Lane arrays in and out of vector values (memcpy: no aliasing questions).
#define DS4_EMU_IN(T, n, name, vec) \
  T name[n];                        \
  std::memcpy(name, &(vec), sizeof name)
#define DS4_EMU_OUT(V, T, n, name) \
  V out_;                          \
  std::memset(&out_, 0, sizeof out_); \
  std::memcpy(&out_, name, sizeof(T) * (n));  \
  return out_

inline float reduce_add_ps(__m512 a) {
  // The tree of GCC's header: 256-bit halves, then 128-bit halves, then pairs.
  DS4_EMU_IN(float, 16, x, a);
  float s8[8], s4[4];
  for (int i = 0; i < 8; ++i) s8[i] = x[i] + x[i + 8];
  for (int i = 0; i < 4; ++i) s4[i] = s8[i] + s8[i + 4];
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
}
inline float reduce_max_ps(__m512 a) {
  DS4_EMU_IN(float, 16, x, a);
  float m = x[0];
  for (int i = 1; i < 16; ++i) m = x[i] > m ? x[i] : m;
  return m;
}
inline int reduce_add_epi32(__m512i a) {
  DS4_EMU_IN(uint32_t, 16, x, a);
  uint32_t s = 0;
  for (uint32_t v : x) s += v;
  return static_cast<int>(s);
}
inline __m512 cvtepi32_ps(__m512i a) {
  DS4_EMU_IN(int32_t, 16, x, a);
  float r[16];
  for (int i = 0; i < 16; ++i) r[i] = static_cast<float>(x[i]);
  DS4_EMU_OUT(__m512, float, 16, r);
}
// Truncation; NaN and out-of-range lanes give 0x80000000 as the instruction does.
inline __m512i cvttps_epi32(__m512 a) {
  DS4_EMU_IN(float, 16, x, a);
  int32_t r[16];
  for (int i = 0; i < 16; ++i)
    r[i] = std::isnan(x[i]) || x[i] >= 2147483648.0f || x[i] < -2147483648.0f ? INT32_MIN : static_cast<int32_t>(x[i]);
  DS4_EMU_OUT(__m512i, int32_t, 16, r);
}
// vpmovdb: the low byte of each lane.
inline __m128i cvtepi32_epi8(__m512i a) {
  DS4_EMU_IN(uint32_t, 16, x, a);
  uint8_t r[16];
  for (int i = 0; i < 16; ++i) r[i] = static_cast<uint8_t>(x[i]);
  DS4_EMU_OUT(__m128i, uint8_t, 16, r);
}
inline __m512i cvtepu16_epi32(__m256i a) {
  DS4_EMU_IN(uint16_t, 16, x, a);
  uint32_t r[16];
  for (int i = 0; i < 16; ++i) r[i] = x[i];
  DS4_EMU_OUT(__m512i, uint32_t, 16, r);
}
inline __m512i cvtepu8_epi32(__m128i a) {
  DS4_EMU_IN(uint8_t, 16, x, a);
  uint32_t r[16];
  for (int i = 0; i < 16; ++i) r[i] = x[i];
  DS4_EMU_OUT(__m512i, uint32_t, 16, r);
}
inline __m512 cvtph_ps(__m256i a) {
  DS4_EMU_IN(uint16_t, 16, x, a);
  float r[16];
  for (int i = 0; i < 16; ++i) r[i] = f16_to_f32(x[i]);
  DS4_EMU_OUT(__m512, float, 16, r);
}
inline __m512 zextps256_ps512(__m256 a) {
  DS4_EMU_IN(float, 8, x, a);
  DS4_EMU_OUT(__m512, float, 8, x);
}
inline __m512i zextsi128_si512(__m128i a) {
  DS4_EMU_IN(uint64_t, 2, x, a);
  DS4_EMU_OUT(__m512i, uint64_t, 2, x);
}
// Debian 12's SIMDe misreads imm (TO_ZERO | NO_EXC kept 3 fraction bits).
// imm bits 7-4: fraction bits kept, bits 1-0: rounding (nearest even, down,
// up, toward zero); bit 2 (use MXCSR) is not used here.
inline __m512 roundscale_ps(__m512 a, int imm) {
  DS4_EMU_IN(float, 16, x, a);
  const float scale = std::ldexp(1.0f, imm >> 4);
  float r[16];
  for (int i = 0; i < 16; ++i) {
    const float v = x[i] * scale;
    const float q = (imm & 3) == 0 ? std::nearbyint(v) : (imm & 3) == 1 ? std::floor(v) : (imm & 3) == 2 ? std::ceil(v) : std::trunc(v);
    r[i] = std::isfinite(v) ? q / scale : x[i];
  }
  DS4_EMU_OUT(__m512, float, 16, r);
}
inline float cvtsh_ss(uint16_t h) { return f16_to_f32(h); }
inline __mmask64 load_mask64(const __mmask64* p) { return *p; }

#undef DS4_EMU_IN
#undef DS4_EMU_OUT

}  // namespace ds4::quant::emu

// Debian 12's SIMDe defines this alias with the masked form's four arguments.
#undef _mm512_madd_epi16
#define _mm512_madd_epi16(a, b) simde_mm512_madd_epi16(a, b)
#define _mm512_reduce_add_ps ds4::quant::emu::reduce_add_ps
#define _mm512_reduce_max_ps ds4::quant::emu::reduce_max_ps
#define _mm512_reduce_add_epi32 ds4::quant::emu::reduce_add_epi32
#define _mm512_cvtepi32_ps ds4::quant::emu::cvtepi32_ps
#define _mm512_cvttps_epi32 ds4::quant::emu::cvttps_epi32
#define _mm512_cvtepi32_epi8 ds4::quant::emu::cvtepi32_epi8
#define _mm512_cvtepu16_epi32 ds4::quant::emu::cvtepu16_epi32
#define _mm512_cvtepu8_epi32 ds4::quant::emu::cvtepu8_epi32
#define _mm512_cvtph_ps ds4::quant::emu::cvtph_ps
#define _mm512_zextps256_ps512 ds4::quant::emu::zextps256_ps512
#define _mm512_zextsi128_si512 ds4::quant::emu::zextsi128_si512
#undef _mm512_roundscale_ps
#define _mm512_roundscale_ps ds4::quant::emu::roundscale_ps
#define _cvtsh_ss ds4::quant::emu::cvtsh_ss
#define _load_mask64 ds4::quant::emu::load_mask64
