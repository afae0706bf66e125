// AVX-512 (F, BW, VL, DQ) dot kernels; Q8_0 and MXFP4 also have VNNI
// (vpdpbusd) variants picked where the CPU has AVX512_VNNI. Same contracts as
// the scalar references; integer parts exact, float summation order differs.
#if defined(__x86_64__)
// GCC 12's AVX-512 headers implement _mm512_undefined_* (used by casts,
// reductions, inserts) with a deliberately uninitialized variable, which
// -Wuninitialized reports at every use inlined here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdlib>
#include <cstring>

#include "quant/blocks.h"
#include "quant/iq_tables.h"
#include "quant/kernels.h"
#include "util/float16.h"

#define DS4_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define DS4_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))

namespace ds4::quant {
namespace {

// Scale fields via the F16C instruction (the portable f16_to_f32 branches).
DS4_AVX512 inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

DS4_AVX512 inline __m512i load2x256(const void* lo, const void* hi) {
  const __m256i a = _mm256_loadu_si256(static_cast<const __m256i*>(lo));
  const __m256i b = _mm256_loadu_si256(static_cast<const __m256i*>(hi));
  return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}
DS4_AVX512 inline __m512i halves_epi16(int lo, int hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16(static_cast<short>(lo))),
                            _mm256_set1_epi16(static_cast<short>(hi)), 1);
}
DS4_AVX512 inline __m512 halves_ps(float lo, float hi) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_set1_ps(lo)), _mm256_set1_ps(hi), 1);
}
// |x| and y with x's sign, so that maddubs(|x|, y') = x * y in pairs.
DS4_AVX512 inline void sign_split(__m512i x, __m512i y, __m512i& ux, __m512i& sy) {
  ux = _mm512_abs_epi8(x);
  sy = _mm512_mask_sub_epi8(y, _mm512_movepi8_mask(x), _mm512_setzero_si512(), y);
}
DS4_AVX512 inline __m512i dot_u8i8(__m512i u, __m512i s) {
  return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
}
DS4_AVX512VNNI inline __m512i dot_u8i8_vnni(__m512i u, __m512i s) {
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
}
// 2 x 32 nibbles of two 16-byte groups: each 256-bit half = low then high nibbles.
DS4_AVX512 inline __m512i unpack_nibbles2(const uint8_t* p0, const uint8_t* p1) {
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p0));
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p1));
  const __m256i ha = _mm256_set_m128i(_mm_srli_epi16(a, 4), a), hb = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
  return _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(ha), hb, 1), _mm512_set1_epi8(0x0F));
}

DS4_AVX512 float dot_f32(int64_t n, const void* w, const void* a) {
  const float* x = static_cast<const float*>(w);
  const float* y = static_cast<const float*>(a);
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16), s1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}
DS4_AVX512 float dot_f16(int64_t n, const void* w, const void* a) {
  const uint16_t* x = static_cast<const uint16_t*>(w);
  const float* y = static_cast<const float*>(a);
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i))), _mm512_loadu_ps(y + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 16))),
                         _mm512_loadu_ps(y + i + 16), s1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  for (; i < n; ++i) s += f16_to_f32(x[i]) * y[i];
  return s;
}
DS4_AVX512 inline __m512 load_bf16(const uint16_t* p) {
  const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
DS4_AVX512 float dot_bf16(int64_t n, const void* w, const void* a) {
  const uint16_t* x = static_cast<const uint16_t*>(w);
  const float* y = static_cast<const float*>(a);
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(load_bf16(x + i), _mm512_loadu_ps(y + i), s0);
    s1 = _mm512_fmadd_ps(load_bf16(x + i + 16), _mm512_loadu_ps(y + i + 16), s1);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  for (; i < n; ++i) s += bf16_to_f32(x[i]) * y[i];
  return s;
}

// Q8_0 / MXFP4: two 32-value blocks per register; the odd tail block goes
// through the same code with a zero second half.
#define DS4_Q8_0_BODY(DOT)                                                                          \
  const auto* x = static_cast<const BlockQ8_0*>(w);                                                \
  const auto* y = static_cast<const BlockQ8_0*>(a);                                                \
  const int64_t nb = n / QK;                                                                       \
  __m512 acc = _mm512_setzero_ps();                                                                \
  for (int64_t i = 0; i < nb; i += 2) {                                                            \
    const bool two = i + 1 < nb;                                                                   \
    const __m512i qx = two ? load2x256(x[i].qs, x[i + 1].qs)                                       \
                           : _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs))); \
    const __m512i qy = two ? load2x256(y[i].qs, y[i + 1].qs)                                       \
                           : _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs))); \
    __m512i ux, sy;                                                                                \
    sign_split(qx, qy, ux, sy);                                                                    \
    const float d0 = h2f(x[i].d) * h2f(y[i].d);                                      \
    const float d1 = two ? h2f(x[i + 1].d) * h2f(y[i + 1].d) : 0.0f;                \
    acc = _mm512_fmadd_ps(halves_ps(d0, d1), _mm512_cvtepi32_ps(DOT(ux, sy)), acc);               \
  }                                                                                                \
  return _mm512_reduce_add_ps(acc);

DS4_AVX512 float dot_q8_0(int64_t n, const void* w, const void* a) { DS4_Q8_0_BODY(dot_u8i8) }
DS4_AVX512VNNI float dot_q8_0_vnni(int64_t n, const void* w, const void* a) { DS4_Q8_0_BODY(dot_u8i8_vnni) }

#define DS4_MXFP4_BODY(DOT)                                                                        \
  const auto* x = static_cast<const BlockMXFP4*>(w);                                               \
  const auto* y = static_cast<const BlockQ8_0*>(a);                                                \
  const __m512i table = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kvalues_mxfp4))); \
  const int64_t nb = n / QK;                                                                       \
  __m512 acc = _mm512_setzero_ps();                                                                \
  for (int64_t i = 0; i < nb; i += 2) {                                                            \
    const bool two = i + 1 < nb;                                                                   \
    const __m512i qx = _mm512_shuffle_epi8(table, unpack_nibbles2(x[i].qs, two ? x[i + 1].qs : x[i].qs)); \
    const __m512i qy = two ? load2x256(y[i].qs, y[i + 1].qs)                                       \
                           : _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].qs))); \
    __m512i ux, sy;                                                                                \
    sign_split(qx, two ? qy : _mm512_maskz_mov_epi8(0xFFFFFFFFull, qy), ux, sy);                   \
    const float d0 = e8m0_to_f32_half(x[i].e) * h2f(y[i].d);                                \
    const float d1 = two ? e8m0_to_f32_half(x[i + 1].e) * h2f(y[i + 1].d) : 0.0f;           \
    acc = _mm512_fmadd_ps(halves_ps(d0, d1), _mm512_cvtepi32_ps(DOT(ux, sy)), acc);               \
  }                                                                                                \
  return _mm512_reduce_add_ps(acc);

DS4_AVX512 float dot_mxfp4(int64_t n, const void* w, const void* a) { DS4_MXFP4_BODY(dot_u8i8) }
DS4_AVX512VNNI float dot_mxfp4_vnni(int64_t n, const void* w, const void* a) { DS4_MXFP4_BODY(dot_u8i8_vnni) }

DS4_AVX512 float dot_q2_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ2_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  const __m512i m3 = _mm512_set1_epi8(3);
  // Shift s: int16 lanes 0-7 take scale 2s, 8-15 2s+1, 16-23 8+2s, 24-31 9+2s.
  __m512i idx[4];
  for (int s = 0; s < 4; ++s) {
    alignas(64) int16_t v[32];
    for (int l = 0; l < 32; ++l) v[l] = static_cast<int16_t>((l / 16) * 8 + 2 * s + (l / 8) % 2);
    idx[s] = _mm512_load_si512(v);
  }
  __m512 acc = _mm512_setzero_ps();
  __m256 accm = _mm256_setzero_ps();  // mins x activation sums, reduced once at the end
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0x0F)));
    const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[i].bsums));
    accm = _mm256_fmadd_ps(_mm256_set1_ps(y[i].d * h2f(x[i].dmin)), _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs)), accm);
    const __m512i scales = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(sc8, _mm_set1_epi8(0x0F))));
    const __m512i q = _mm512_loadu_si512(x[i].qs);
    __m512i isum = _mm512_setzero_si512();
    for (int s = 0; s < 4; ++s) {
      const __m512i q2 = _mm512_and_si512(_mm512_srli_epi16(q, static_cast<unsigned>(2 * s)), m3);
      const __m512i qy = load2x256(y[i].qs + 32 * s, y[i].qs + 128 + 32 * s);
      const __m512i scv = _mm512_permutexvar_epi16(idx[s], scales);
      isum = _mm512_add_epi32(isum, _mm512_madd_epi16(_mm512_maddubs_epi16(q2, qy), scv));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(y[i].d * h2f(x[i].d)), _mm512_cvtepi32_ps(isum), acc);
  }
  return _mm512_reduce_add_ps(_mm512_sub_ps(acc, _mm512_zextps256_ps512(accm)));
}

DS4_AVX512 float dot_q4_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  const __m512i m4 = _mm512_set1_epi8(0x0F);
  __m512 acc = _mm512_setzero_ps();
  float mins_acc = 0;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    uint8_t sc[8], m[8];
    int summ = 0;
    for (int j = 0; j < 8; ++j) {
      get_scale_min_k4(j, x[i].scales, sc[j], m[j]);
      summ += m[j] * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
    }
    __m512i isum = _mm512_setzero_si512();
    for (int k = 0; k < 2; ++k) {  // qs bytes 64k..64k+63 = groups c = 2k, 2k+1
      const __m512i q = _mm512_loadu_si512(x[i].qs + 64 * k);
      const __m512i lo = _mm512_and_si512(q, m4), hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), m4);
      const int8_t* yq = y[i].qs + 128 * k;
      const __m512i ylo = load2x256(yq, yq + 64), yhi = load2x256(yq + 32, yq + 96);
      const __m512i p0 = _mm512_madd_epi16(_mm512_maddubs_epi16(lo, ylo), halves_epi16(sc[4 * k], sc[4 * k + 2]));
      const __m512i p1 = _mm512_madd_epi16(_mm512_maddubs_epi16(hi, yhi), halves_epi16(sc[4 * k + 1], sc[4 * k + 3]));
      isum = _mm512_add_epi32(isum, _mm512_add_epi32(p0, p1));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(y[i].d * h2f(x[i].d)), _mm512_cvtepi32_ps(isum), acc);
    mins_acc += y[i].d * h2f(x[i].dmin) * static_cast<float>(summ);
  }
  return _mm512_reduce_add_ps(acc) - mins_acc;
}

inline long long grid_u64(uint32_t i) {
  long long v;
  std::memcpy(&v, iq2xxs_grid[i], 8);
  return v;
}

DS4_AVX512 float dot_iq2_xxs(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockIQ2_XXS*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    __m512i isum = _mm512_setzero_si512();
    for (int ib = 0; ib < 8; ib += 2) {  // two 32-value sub-blocks per register
      uint32_t q[4];
      std::memcpy(q, x[i].qs + 4 * ib, 16);  // aux0, aux1 of ib, then of ib + 1
      const __m512i g = _mm512_set_epi64(grid_u64(q[2] >> 24), grid_u64((q[2] >> 16) & 0xFF), grid_u64((q[2] >> 8) & 0xFF),
                                         grid_u64(q[2] & 0xFF), grid_u64(q[0] >> 24), grid_u64((q[0] >> 16) & 0xFF),
                                         grid_u64((q[0] >> 8) & 0xFF), grid_u64(q[0] & 0xFF));
      // The 8 sign bytes are the negate mask of the 64 values directly.
      const uint64_t mask = iq2_sign_bytes(q[1]) | (static_cast<uint64_t>(iq2_sign_bytes(q[3])) << 32);
      const __m512i yv = _mm512_loadu_si512(y[i].qs + 32 * ib);
      const __m512i ys = _mm512_mask_sub_epi8(yv, mask, _mm512_setzero_si512(), yv);
      const __m512i scv = halves_epi16(static_cast<int>(2 * (q[1] >> 28) + 1), static_cast<int>(2 * (q[3] >> 28) + 1));
      isum = _mm512_add_epi32(isum, _mm512_madd_epi16(_mm512_maddubs_epi16(g, ys), scv));
    }
    acc = _mm512_fmadd_ps(_mm512_set1_ps(h2f(x[i].d) * y[i].d * 0.125f), _mm512_cvtepi32_ps(isum), acc);
  }
  return _mm512_reduce_add_ps(acc);
}

struct Entry {
  GgmlType t;
  DotKernel k, vnni;
};
const Entry kAvx512[] = {
    {GgmlType::F32, {GgmlType::F32, dot_f32}, {GgmlType::F32, dot_f32}},
    {GgmlType::F16, {GgmlType::F32, dot_f16}, {GgmlType::F32, dot_f16}},
    {GgmlType::BF16, {GgmlType::F32, dot_bf16}, {GgmlType::F32, dot_bf16}},
    {GgmlType::Q8_0, {GgmlType::Q8_0, dot_q8_0}, {GgmlType::Q8_0, dot_q8_0_vnni}},
    {GgmlType::MXFP4, {GgmlType::Q8_0, dot_mxfp4}, {GgmlType::Q8_0, dot_mxfp4_vnni}},
    {GgmlType::Q2_K, {GgmlType::Q8_K, dot_q2_k}, {GgmlType::Q8_K, dot_q2_k}},
    {GgmlType::Q4_K, {GgmlType::Q8_K, dot_q4_k}, {GgmlType::Q8_K, dot_q4_k}},
    {GgmlType::IQ2_XXS, {GgmlType::Q8_K, dot_iq2_xxs}, {GgmlType::Q8_K, dot_iq2_xxs}},
};

}  // namespace

bool cpu_has_avx512_vnni() { return __builtin_cpu_supports("avx512vnni"); }

const DotKernel* avx512_kernel(GgmlType t) {
  static const bool vnni = cpu_has_avx512_vnni() && !std::getenv("DS4_QUANT_NO_VNNI");
  for (const auto& e : kAvx512)
    if (e.t == t) return vnni ? &e.vnni : &e.k;
  return nullptr;
}

}  // namespace ds4::quant
#endif
