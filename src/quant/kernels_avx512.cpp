// AVX-512 (F, BW, VL, DQ) dot kernels at three levels, picked by what the CPU
// has: base, + VNNI (Cascade Lake: Q8_0, MXFP4, Q4_K) and + VBMI/VNNI/GFNI
// (Ice Lake, Sapphire Rapids, Zen 4: Q2_K, IQ2_XXS). Same contracts as the
// scalar references; integer parts exact, float summation order differs.
#if defined(__x86_64__)
// GCC 12's AVX-512 headers implement _mm512_undefined_* (used by casts,
// reductions, inserts) with a deliberately uninitialized variable, which
// -Wuninitialized reports at every use inlined here.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#if defined(DS4_EMULATE_AVX512)
#include "quant/avx512_emulated.h"
#else
#include <immintrin.h>
#endif

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "quant/blocks.h"
#include "quant/iq_tables.h"
#include "quant/kernel_rows.h"
#include "quant/kernels.h"
#include "util/float16.h"

#if defined(DS4_EMULATE_AVX512)
// Emulated (the test build that CI runs): plain portable code, no target.
#define DS4_AVX512
#define DS4_AVX512VNNI
#define DS4_AVX512ICL
#else
#define DS4_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define DS4_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
// Ice Lake and later (and Zen 4): byte permutes (VBMI: vpermb, vpermt2b,
// vpmultishiftqb), VNNI and GFNI. The Q2_K and IQ2_XXS kernels of this level
// replace scalar table lookups and per-16 scale shuffles with those.
#define DS4_AVX512ICL \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,gfni,fma,f16c")))
#endif

namespace ds4::quant {
namespace {

// Scale fields via the F16C instruction (the portable f16_to_f32 branches).
DS4_AVX512 inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

// Software prefetch of the weight stream 4 KiB ahead into L2, once per block
// (or per 64 bytes) in the kernels matvec streams from DRAM. On the Sapphire
// Rapids test VM one thread reads DRAM at ~10 GB/s, and a Q2_K matvec left to
// the hardware prefetchers reached 0.6 of that (compute and memory stalls did
// not overlap); 4 KiB ahead in L2 gave 0.95-1.06. On 16 threads every distance
// tried (2-8 KiB, L1 or L2) beat none, by 0.64-0.79 -> 0.71-0.89 of the read
// bandwidth, with no clear winner inside the run-to-run noise.
constexpr int kPrefetchBytes = 4096;
inline void prefetch_weights(const void* p) { _mm_prefetch(static_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T1); }

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
// 2 x 32 nibbles of two 16-byte groups: each 256-bit half = low then high nibbles.
DS4_AVX512 inline __m512i unpack_nibbles2(const uint8_t* p0, const uint8_t* p1) {
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p0));
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p1));
  const __m256i ha = _mm256_set_m128i(_mm_srli_epi16(a, 4), a), hb = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
  return _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(ha), hb, 1), _mm512_set1_epi8(0x0F));
}

DS4_AVX512 inline __m512 load_bf16(const uint16_t* p) {
  const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

// Float weights (T: F32, F16 or BF16) against NA f32 activation rows: each
// 32 weights are loaded and widened once for all rows, and each row is summed
// as dot sums it (two accumulators over 32-value steps, added and reduced,
// then the tail in order), so dotn equals dot bit for bit; dot is NA = 1.
template <GgmlType T>
DS4_AVX512 inline __m512 float_w16(const void* w, int64_t i) {
  if constexpr (T == GgmlType::F32) return _mm512_loadu_ps(static_cast<const float*>(w) + i);
  else if constexpr (T == GgmlType::F16)
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + i)));
  else return load_bf16(static_cast<const uint16_t*>(w) + i);
}
template <GgmlType T, int NA>
DS4_AVX512 void dotn_float(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  const float* y[NA];
  for (int j = 0; j < NA; ++j) y[j] = reinterpret_cast<const float*>(static_cast<const uint8_t*>(a) + stride * j);
  __m512 s0[NA], s1[NA];
  for (int j = 0; j < NA; ++j) s0[j] = s1[j] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    if constexpr (T != GgmlType::F32) prefetch_weights(static_cast<const uint16_t*>(w) + i);
    const __m512 w0 = float_w16<T>(w, i), w1 = float_w16<T>(w, i + 16);
    for (int j = 0; j < NA; ++j) {
      s0[j] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(y[j] + i), s0[j]);
      s1[j] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(y[j] + i + 16), s1[j]);
    }
  }
  for (int j = 0; j < NA; ++j) {
    float s = _mm512_reduce_add_ps(_mm512_add_ps(s0[j], s1[j]));
    for (int64_t k = i; k < n; ++k) s += float_weight<T>(w, k) * y[j][k];
    out[j] = s;
  }
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

// --- Ice Lake level (VBMI + VNNI + GFNI) ---

// 64 constant bytes from f(i), for vector constants built at compile time.
template <class F>
constexpr std::array<uint8_t, 64> bytes64(F f) {
  std::array<uint8_t, 64> a{};
  for (int i = 0; i < 64; ++i) a[static_cast<size_t>(i)] = static_cast<uint8_t>(f(i));
  return a;
}
DS4_AVX512ICL inline __m512i load64(const std::array<uint8_t, 64>& a) { return _mm512_loadu_si512(a.data()); }

// Keeps values that were just stored to `p` in memory: without it the compiler
// forwards them from registers and turns each later use (a mask, a broadcast)
// into lane extracts and moves that all queue on port 5, the port the byte
// permutes need. Reloaded, they are plain loads and broadcast loads.
#define DS4_SPILL(p) __asm__ __volatile__("" : : "r"(p) : "memory")
// Makes pointer p opaque, once per loop iteration: vectors loaded through it are
// then loaded again each time, not hoisted into registers. For the operand a
// vpermt2b/vpermi2b overwrites: a fresh load takes a load port, where a
// register kept across iterations needs a copy first (port 0 or 5).
#define DS4_RELOAD(p) __asm__ __volatile__("" : "+r"(p))

// Q2_K. Chunk t (values 64t..64t+63) is bits 2s of qs[32h + l] with h = t / 2,
// s = 2 (t % 2) in its low half and s + 1 in its high half: one 32-byte load
// broadcast to both halves, its field cut out per half. Each 16-byte lane of a chunk
// is one scale group (4t + lane), so an in-lane byte shuffle can multiply the
// 2-bit value by its 4-bit scale (<= 45, a valid unsigned vpdpbusd operand):
// the shuffle's table holds, in lane k, dword m, the products j * scale(4m + k)
// for j = 0..3, and the index is the value | t << 2.
// Lane k, byte 4m + j of the table takes scale byte 4m + k ...
alignas(64) constexpr auto kQ2ScalePlace = bytes64([](int b) { return 4 * ((b % 16) / 4) + b / 16; });
// ... with j in bits 4-5 next to the scale's low nibble, ...
alignas(64) constexpr auto kQ2J = bytes64([](int b) { return (b % 4) << 4; });
// ... indexing 64 products j * scale.
alignas(64) constexpr auto kQ2Mul = bytes64([](int i) { return (i >> 4) * (i & 15); });

// The 2-bit field of chunk t as a shuffle index (value | t << 2) in one GF(2)
// affine map per byte, where a shift and a mask-and-or took two: the matrix of
// a 64-bit lane copies bits 2s, 2s + 1 to bits 0, 1 (s = 2 (t % 2) in the low
// half, s + 1 in the high half: byte 7 of the matrix feeds output bit 0, byte 6
// bit 1), and the constant supplies t << 2.
constexpr long long q2_field_matrix(int s) { return static_cast<long long>((1ull << (2 * s)) << 56 | (1ull << (2 * s + 1)) << 48); }
DS4_AVX512 inline __m512i halves_epi64(long long lo, long long hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi64x(lo)), _mm256_set1_epi64x(hi), 1);
}
template <int T>
DS4_AVX512ICL inline __m512i q2_field(__m512i q, __m512i matrix) {
  return _mm512_gf2p8affine_epi64_epi8(q, matrix, T << 2);
}

// Against NA activation rows at once: the scale table and the 2-bit fields
// are unpacked once per block for all of them (dot is NA = 1, so both agree
// bit for bit).
template <int NA>
DS4_AVX512ICL void dotn_q2_k_icl(int64_t n, const void* w, const void* a, size_t act_stride, float* out) {
  const auto* x = static_cast<const BlockQ2_K*>(w);
  const BlockQ8_K* y[NA];
  for (int j = 0; j < NA; ++j) y[j] = reinterpret_cast<const BlockQ8_K*>(static_cast<const uint8_t*>(a) + act_stride * j);
  const __m512i place = load64(kQ2ScalePlace), jbits = load64(kQ2J), mul = load64(kQ2Mul);
  const __m512i m15 = _mm512_set1_epi8(0x0F);
  const __m512i field[2] = {halves_epi64(q2_field_matrix(0), q2_field_matrix(1)),
                            halves_epi64(q2_field_matrix(2), q2_field_matrix(3))};
  alignas(16) float f[NA][4];  // d * y.d, dmin * y.d of the block, read back as broadcasts
  __m512 acc[NA];
  __m256 accm[NA];  // mins x activation sums, reduced once at the end
  for (int j = 0; j < NA; ++j) {
    acc[j] = _mm512_setzero_ps();
    accm[j] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < n / QK_K; ++i) {
    prefetch_weights(&x[i]);
    // d and dmin are adjacent: one 4-byte load, one conversion.
    const __m128 dd = _mm_cvtph_ps(_mm_loadu_si32(&x[i].d));
    for (int j = 0; j < NA; ++j) _mm_store_ps(f[j], _mm_mul_ps(dd, _mm_set1_ps(y[j][i].d)));
    DS4_SPILL(f);
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), _mm_set1_epi8(0x0F)));
    for (int j = 0; j < NA; ++j) {
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[j][i].bsums));
      accm[j] = _mm256_fmadd_ps(_mm256_set1_ps(f[j][1]), _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs)), accm[j]);
    }
    // (A & B) | C is ternary-logic immediate 0xEA.
    const __m512i tidx = _mm512_ternarylogic_epi32(_mm512_permutexvar_epi8(place, _mm512_zextsi128_si512(sc8)), m15, jbits, 0xEA);
    const __m512i table = _mm512_permutexvar_epi8(tidx, mul);
    const __m512i q0 = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs)));
    const __m512i q1 = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + 32)));
    const __m512i g[4] = {_mm512_shuffle_epi8(table, q2_field<0>(q0, field[0])), _mm512_shuffle_epi8(table, q2_field<1>(q0, field[1])),
                          _mm512_shuffle_epi8(table, q2_field<2>(q1, field[0])), _mm512_shuffle_epi8(table, q2_field<3>(q1, field[1]))};
    for (int j = 0; j < NA; ++j) {
      __m512i isum = _mm512_setzero_si512();
      for (int t = 0; t < 4; ++t) isum = _mm512_dpbusd_epi32(isum, g[t], _mm512_loadu_si512(y[j][i].qs + 64 * t));
      acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(f[j][0]), _mm512_cvtepi32_ps(isum), acc[j]);
    }
  }
  for (int j = 0; j < NA; ++j) out[j] = _mm512_reduce_add_ps(_mm512_sub_ps(acc[j], _mm512_zextps256_ps512(accm[j])));
}

// Q4_K. Chunk c (values 64c..64c+63: sub-blocks 2c and 2c + 1) is the low
// and high nibbles of qs[32c..32c+31]: one 32-byte load broadcast to both
// halves, the high half shifted by 4. The 6-bit scales and mins are unpacked
// with 32-bit integer operations and widened once per block to int16 pairs
// (s | s << 16), read back as broadcasts for vpdpwssd and, for the mins, as
// the multipliers of the activation's pairs of sums of 16.
// Against NA activation rows at once (dot is NA = 1): scales, mins and
// nibbles unpacked once per block for all of them.
template <int NA>
DS4_AVX512VNNI void dotn_q4_k_vnni(int64_t n, const void* w, const void* a, size_t act_stride, float* out) {
  const auto* x = static_cast<const BlockQ4_K*>(w);
  const BlockQ8_K* y[NA];
  for (int j = 0; j < NA; ++j) y[j] = reinterpret_cast<const BlockQ8_K*>(static_cast<const uint8_t*>(a) + act_stride * j);
  const __m512i shift = halves_epi16(0, 4), m4 = _mm512_set1_epi8(0x0F);
  struct alignas(64) Spill {
    uint32_t sm[16];  // scales 0-7 then mins 0-7, each as an int16 pair
    uint32_t packed[4];
    float f[NA][4];
  } sp;
  __m512 acc[NA];
  __m256 accm[NA];
  for (int j = 0; j < NA; ++j) {
    acc[j] = _mm512_setzero_ps();
    accm[j] = _mm256_setzero_ps();
  }
  for (int64_t i = 0; i < n / QK_K; ++i) {
    prefetch_weights(&x[i]);
    prefetch_weights(reinterpret_cast<const uint8_t*>(&x[i]) + 64);
    prefetch_weights(reinterpret_cast<const uint8_t*>(&x[i]) + 128);
    uint32_t q[3];
    std::memcpy(q, x[i].scales, 12);
    // get_scale_min_k4 for all 8 sub-blocks, 4 bytes at a time.
    sp.packed[0] = q[0] & 0x3F3F3F3Fu;                                         // scales 0-3
    sp.packed[1] = (q[2] & 0x0F0F0F0Fu) | ((q[0] >> 2) & 0x30303030u);         // scales 4-7
    sp.packed[2] = q[1] & 0x3F3F3F3Fu;                                         // mins 0-3
    sp.packed[3] = ((q[2] >> 4) & 0x0F0F0F0Fu) | ((q[1] >> 2) & 0x30303030u);  // mins 4-7
    const __m128 dd = _mm_cvtph_ps(_mm_loadu_si32(&x[i].d));
    for (int j = 0; j < NA; ++j) _mm_store_ps(sp.f[j], _mm_mul_ps(dd, _mm_set1_ps(y[j][i].d)));
    DS4_SPILL(&sp);
    const __m512i v = _mm512_cvtepu8_epi32(_mm_load_si128(reinterpret_cast<const __m128i*>(sp.packed)));
    _mm512_store_si512(sp.sm, _mm512_or_si512(v, _mm512_slli_epi32(v, 16)));
    DS4_SPILL(&sp);
    const __m256i mins = _mm256_load_si256(reinterpret_cast<const __m256i*>(sp.sm + 8));
    for (int j = 0; j < NA; ++j) {
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[j][i].bsums));
      accm[j] = _mm256_fmadd_ps(_mm256_set1_ps(sp.f[j][1]), _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs)), accm[j]);
    }
    __m512i isum[NA];
    for (int j = 0; j < NA; ++j) isum[j] = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      const __m512i qv = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + 32 * c)));
      const __m512i nib = _mm512_and_si512(_mm512_srlv_epi16(qv, shift), m4);
      const __m512i sc = _mm512_mask_broadcastd_epi32(_mm512_broadcastd_epi32(_mm_loadu_si32(&sp.sm[2 * c])), 0xFF00,
                                                      _mm_loadu_si32(&sp.sm[2 * c + 1]));
      for (int j = 0; j < NA; ++j)
        isum[j] = _mm512_dpwssd_epi32(isum[j], _mm512_maddubs_epi16(nib, _mm512_loadu_si512(y[j][i].qs + 64 * c)), sc);
    }
    for (int j = 0; j < NA; ++j) acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(sp.f[j][0]), _mm512_cvtepi32_ps(isum[j]), acc[j]);
  }
  for (int j = 0; j < NA; ++j) out[j] = _mm512_reduce_add_ps(_mm512_sub_ps(acc[j], _mm512_zextps256_ps512(accm[j])));
}

// Q8_0 and MXFP4 with VNNI on 256-bit registers, one block each: the 34- and
// 17-byte blocks need no cross-lane inserts this way, and ymm operations have
// three ports. The weight block's values (W: Q8_0 as stored, MXFP4 through its
// 16-entry table), their absolute values and signs are taken once for all NA
// activation rows (dotn; dot is NA = 1).
struct Q8_0Vnni256 {
  using Block = BlockQ8_0;
  DS4_AVX512VNNI __m256i values(const Block& b) const { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)); }
  DS4_AVX512VNNI __m128 scale(const Block& b) const { return _mm_cvtph_ps(_mm_loadu_si32(&b.d)); }
};
struct Mxfp4Vnni256 {
  using Block = BlockMXFP4;
  __m256i table;
  DS4_AVX512VNNI Mxfp4Vnni256() : table(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kvalues_mxfp4)))) {}
  // Values 0-15 are the low nibbles of qs, 16-31 the high ones.
  DS4_AVX512VNNI __m256i values(const Block& b) const {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
    const __m256i nib = _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1), _mm256_set1_epi8(0x0F));
    return _mm256_shuffle_epi8(table, nib);
  }
  DS4_AVX512VNNI __m128 scale(const Block& b) const { return _mm_set_ss(e8m0_to_f32_half(b.e)); }
};
template <class W, int NA>
DS4_AVX512VNNI inline void int8_block_vnni256(const W& wt, const typename W::Block& x, const BlockQ8_0* const* y, int64_t i, __m256* acc) {
  prefetch_weights(&x);
  const __m256i qx = wt.values(x);
  const __m256i ax = _mm256_sign_epi8(qx, qx);
  const __m128 dx = wt.scale(x);
  for (int j = 0; j < NA; ++j) {
    const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[j][i].qs));
    const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, _mm256_sign_epi8(qy, qx));
    const __m128 d = _mm_mul_ss(dx, _mm_cvtph_ps(_mm_loadu_si32(&y[j][i].d)));
    acc[j] = _mm256_fmadd_ps(_mm256_broadcastss_ps(d), _mm256_cvtepi32_ps(p), acc[j]);
  }
}
template <class W, int NA>
DS4_AVX512VNNI void dotn_int8_vnni256(int64_t n, const void* w, const void* a, size_t act_stride, float* out) {
  const W wt;
  const auto* x = static_cast<const typename W::Block*>(w);
  const BlockQ8_0* y[NA];
  for (int j = 0; j < NA; ++j) y[j] = reinterpret_cast<const BlockQ8_0*>(static_cast<const uint8_t*>(a) + act_stride * j);
  __m256 acc0[NA], acc1[NA];
  for (int j = 0; j < NA; ++j) acc0[j] = acc1[j] = _mm256_setzero_ps();
  const int64_t nb = n / QK;
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    int8_block_vnni256<W, NA>(wt, x[i], y, i, acc0);
    int8_block_vnni256<W, NA>(wt, x[i + 1], y, i + 1, acc1);
  }
  if (i < nb) int8_block_vnni256<W, NA>(wt, x[i], y, i, acc0);
  for (int j = 0; j < NA; ++j) {
    const __m256 s = _mm256_add_ps(acc0[j], acc1[j]);
    __m128 r = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    out[j] = _mm_cvtss_f32(_mm_add_ss(r, _mm_movehdup_ps(r)));
  }
}
template <int NA>
DS4_AVX512VNNI void dotn_q8_0_vnni256(int64_t n, const void* w, const void* a, size_t act_stride, float* out) {
  dotn_int8_vnni256<Q8_0Vnni256, NA>(n, w, a, act_stride, out);
}

// Q8_0 tiles for prefill: NW weight rows by NA activation rows, each pair's
// sum exactly dotn_int8_vnni256's. That kernel keeps two 8-lane accumulators,
// acc0 for even blocks and acc1 for odd ones; here one 16-lane register holds
// both (lanes 0-7 acc0, 8-15 acc1), so a pair of blocks takes one 512-bit
// dpbusd, convert and FMA where it took two of each, and every value loaded
// (a weight block pair, an activation block pair) serves a whole row or
// column of the tile. Lane by lane the values are the ones dot forms: the
// integer sum of 4 products w * a (dot takes |w| times a with w's signs;
// here the lane starts at -128 * the sum of its 4 weights and dpbusd adds
// (a + 128) * w, the same integer for every activation a quantizer makes,
// which never yields -128), the scale product dw * da formed as in dot, a
// fused multiply-add; an odd last block goes to lanes 0-7 only; then
// acc0 + acc1 and dot's reduction.
// The two 8-float halves of a 512-bit register through the 64-bit-lane forms
// (AVX512F, which the emulated build has; the 32x8 forms are AVX512DQ).
DS4_AVX512VNNI inline __m512 f32x8_pair(__m256 lo, __m256 hi) {
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
}
DS4_AVX512VNNI inline __m256 f32x8_high(__m512 v) {
  return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}
// [d0 x 8, d1 x 8]: both f16 scales converted in one instruction, then spread.
DS4_AVX512VNNI inline __m512 q8_0_scale_pair(const BlockQ8_0& b0, const BlockQ8_0& b1) {
  const __m128 d = _mm_cvtph_ps(_mm_insert_epi16(_mm_cvtsi32_si128(b0.d), static_cast<short>(b1.d), 1));
  return _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                               _mm512_castps128_ps512(d));
}
DS4_AVX512VNNI inline __m512i q8_0_quants_pair(const BlockQ8_0& b0, const BlockQ8_0& b1) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0.qs))),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b1.qs)), 1);
}
template <int NW, int NA>
DS4_AVX512VNNI void dotnm_q8_0_tile(int64_t n, const uint8_t* w, size_t w_stride, const uint8_t* a, size_t act_stride,
                                    float* out, int out_stride) {
  const BlockQ8_0* x[NW];
  const BlockQ8_0* y[NA];
  for (int r = 0; r < NW; ++r) x[r] = reinterpret_cast<const BlockQ8_0*>(w + w_stride * r);
  for (int j = 0; j < NA; ++j) y[j] = reinterpret_cast<const BlockQ8_0*>(a + act_stride * j);
  __m512 acc[NW][NA];
  for (int r = 0; r < NW; ++r)
    for (int j = 0; j < NA; ++j) acc[r][j] = _mm512_setzero_ps();
  const int64_t nb = n / QK;
  const __m512i k80 = _mm512_set1_epi8(static_cast<char>(0x80));
  int64_t i = 0;
  for (; i + 2 <= nb; i += 2) {
    __m512i uy[NA];  // the activation plus 128, as unsigned bytes
    __m512 dy[NA];
    for (int j = 0; j < NA; ++j) {
      uy[j] = _mm512_xor_si512(q8_0_quants_pair(y[j][i], y[j][i + 1]), k80);
      dy[j] = q8_0_scale_pair(y[j][i], y[j][i + 1]);
    }
    for (int r = 0; r < NW; ++r) {
      prefetch_weights(&x[r][i]);
      const __m512i qx = q8_0_quants_pair(x[r][i], x[r][i + 1]);
      // -128 * (sum of each lane's 4 weights): starting each lane there,
      // dpbusd over (y + 128) * w leaves exactly the lane's sum of y * w.
      const __m512i base = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), k80, qx));
      const __m512 dx = q8_0_scale_pair(x[r][i], x[r][i + 1]);
      for (int j = 0; j < NA; ++j) {
        const __m512i p = _mm512_dpbusd_epi32(base, uy[j], qx);
        acc[r][j] = _mm512_fmadd_ps(_mm512_mul_ps(dx, dy[j]), _mm512_cvtepi32_ps(p), acc[r][j]);
      }
    }
  }
  if (i < nb) {  // the odd last block: lanes 0-7 (acc0) only
    for (int r = 0; r < NW; ++r) {
      const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r][i].qs));
      const __m256i ax = _mm256_sign_epi8(qx, qx);
      const __m128 dx = _mm_cvtph_ps(_mm_loadu_si32(&x[r][i].d));
      for (int j = 0; j < NA; ++j) {
        const __m256i qyj = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[j][i].qs));
        const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), ax, _mm256_sign_epi8(qyj, qx));
        const __m128 d = _mm_mul_ss(dx, _mm_cvtph_ps(_mm_loadu_si32(&y[j][i].d)));
        const __m256 lo = _mm256_fmadd_ps(_mm256_broadcastss_ps(d), _mm256_cvtepi32_ps(p), _mm512_castps512_ps256(acc[r][j]));
        acc[r][j] = f32x8_pair(lo, f32x8_high(acc[r][j]));
      }
    }
  }
  for (int r = 0; r < NW; ++r)
    for (int j = 0; j < NA; ++j) {
      const __m256 s = _mm256_add_ps(_mm512_castps512_ps256(acc[r][j]), f32x8_high(acc[r][j]));
      __m128 q = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
      q = _mm_add_ps(q, _mm_movehl_ps(q, q));
      out[r * out_stride + j] = _mm_cvtss_f32(_mm_add_ss(q, _mm_movehdup_ps(q)));
    }
}
template <int NW>
DS4_AVX512VNNI void dotnm_q8_0_rows(int64_t n, const uint8_t* w, size_t w_stride, const uint8_t* a, size_t act_stride,
                                    int nact, float* out) {
  int j = 0;
  for (; j + 4 <= nact; j += 4) dotnm_q8_0_tile<NW, 4>(n, w, w_stride, a + act_stride * j, act_stride, out + j, nact);
  const uint8_t* aj = a + act_stride * j;
  switch (nact - j) {
    case 3: dotnm_q8_0_tile<NW, 3>(n, w, w_stride, aj, act_stride, out + j, nact); break;
    case 2: dotnm_q8_0_tile<NW, 2>(n, w, w_stride, aj, act_stride, out + j, nact); break;
    case 1: dotnm_q8_0_tile<NW, 1>(n, w, w_stride, aj, act_stride, out + j, nact); break;
    default: break;
  }
}
DS4_AVX512VNNI void dotnm_q8_0_vnni(int64_t n, const void* w, size_t w_stride, int nw, const void* a, size_t act_stride,
                                    int nact, float* out) {
  const auto* wb = static_cast<const uint8_t*>(w);
  const auto* ab = static_cast<const uint8_t*>(a);
  switch (nw) {
    case 4: return dotnm_q8_0_rows<4>(n, wb, w_stride, ab, act_stride, nact, out);
    case 3: return dotnm_q8_0_rows<3>(n, wb, w_stride, ab, act_stride, nact, out);
    case 2: return dotnm_q8_0_rows<2>(n, wb, w_stride, ab, act_stride, nact, out);
    case 1: return dotnm_q8_0_rows<1>(n, wb, w_stride, ab, act_stride, nact, out);
    default: return;
  }
}
template <int NA>
DS4_AVX512VNNI void dotn_mxfp4_vnni256(int64_t n, const void* w, const void* a, size_t act_stride, float* out) {
  dotn_int8_vnni256<Mxfp4Vnni256, NA>(n, w, a, act_stride, out);
}

// IQ2_XXS without per-group loads or per-chunk scale shuffles.
// - Grid: entry e is 8 values from the three levels 8, 25, 43. With codes 0, 1,
//   2 for them (bits b0, b1), a level's bits are: bit 0 = b0 ^ b1, bit 1 = b1,
//   bit 3 = 1, bit 4 = b0, bit 5 = b1. So an entry is two bit planes of 8 bits
//   (plane A: b0 ^ b1 of each value, plane B: b1), kept as two byte tables of
//   256 entries (4 registers each) that vpermt2b looks up for the 32 groups of
//   a block; plane C = b0 is A ^ B.
// - Levels: a GF(2) affine map whose matrix is the data. Output bit i of byte j
//   is the parity of (matrix byte 7 - i) & (constant byte 1 << j), that is bit
//   j of plane byte 7 - i; with planes A, B, C, B in matrix bytes 7, 6, 3, 2
//   (one vpermt2b places them for the 8 groups of a chunk, zeroing the rest)
//   and the constant 8, one instruction turns a group into its 8 levels.
// - Order: a chunk of 64 values holds group c of each of the 8 sub-blocks
//   (64-bit lane k = sub-block k), so that one vpdpbusd accumulator sums every
//   sub-block in its own 64-bit lane across the 4 chunks and the sub-block
//   scales are applied once per block, in float. The activation is stored in
//   that order (act_order_iq2_xxs, run once per matvec when it is quantized).
// - Signs (7 bits at 32 + 7l of each sub-block's 64 bits) are cut out with
//   vpmultishiftqb, get their parity bit from a GF(2) affine map and become the
//   negate masks of the activation bytes.
// Per block that is ~39 vector instructions where the previous form (16-bit
// codes spread by vpmultishiftqb, scales by vpdpwssd per chunk) took ~50. On
// the Emerald Rapids test VM, dotn (4 rows) went from 8.6-10.2 to 10.6-11.5
// GB/s per row; one row (dot) stayed at 3.8-5.0 GB/s, within that host's noise.
// Tried and no faster there: two vpdpbusd accumulators per row, and decoding
// one block ahead of the dots; before this form, the grid read with
// vpgatherqq, single-source vpermb lookups, and masks and scales computed 16
// blocks ahead.
struct Iq2Planes {
  alignas(64) uint8_t a[256];  // bit j: b0 ^ b1 of value j (level bit 0)
  alignas(64) uint8_t b[256];  // bit j: b1 of value j (level bits 1 and 5)
};
const Iq2Planes& iq2_planes() {
  static const Iq2Planes t = [] {
    Iq2Planes p{};
    for (int e = 0; e < 256; ++e)
      for (int j = 0; j < 8; ++j) {
        const uint8_t v = iq2xxs_grid[e][j];  // 8, 25 or 43 (a test checks the table)
        const int b0 = v == 25, b1 = v == 43;
        p.a[e] = static_cast<uint8_t>(p.a[e] | (b0 ^ b1) << j);
        p.b[e] = static_cast<uint8_t>(p.b[e] | b1 << j);
      }
    return p;
  }();
  return t;
}
// Group G = 4 ib + l of a block: its grid index is qs byte 8 ib + l (lanes
// 0-31; 32-63 repeat them).
alignas(64) constexpr auto kIq2Idx = bytes64([](int b) { return 8 * ((b % 32) / 4) + b % 4; });
// Per sub-block (64 bits): the 4 sign fields at bits 32 + 7l, into bytes 0-3.
alignas(64) constexpr auto kIq2SignCut = bytes64([](int b) { return 32 + 7 * (b % 4); });
// Negate mask of chunk c, byte k (sub-block k, group c): sign byte 8k + c.
alignas(64) constexpr auto kIq2SignPack = bytes64([](int b) { return 8 * (b % 8) + b / 8; });
// Matrix of chunk c, 64-bit lane k (group G = 4k + c): byte 7 = A (first
// source, lane G), bytes 6 and 2 = B (second source, lane G), byte 3 = C
// (first source, lane 32 + G); the other bytes are zeroed (kIq2PlaceKeep).
constexpr std::array<uint8_t, 64> iq2_place(int c) {
  return bytes64([c](int b) {
    const int g = 4 * (b / 8) + c, p = b % 8;
    return p == 7 ? g : p == 3 ? 32 + g : p == 6 || p == 2 ? 64 + g : 0;
  });
}
alignas(64) constexpr std::array<uint8_t, 64> kIq2Place[4] = {iq2_place(0), iq2_place(1), iq2_place(2), iq2_place(3)};
constexpr __mmask64 kIq2PlaceKeep = 0xCCCCCCCCCCCCCCCCull;  // bytes 2, 3, 6, 7 of each lane
// Byte j of each 64-bit lane selects bit j of the plane bytes.
alignas(64) constexpr auto kIq2Select = bytes64([](int b) { return 1 << (b % 8); });
constexpr int kIq2LevelBase = 8;  // level bit 3, set for every level
// GF(2) affine map of a byte: bits 0-6 kept, bit 7 = parity of bits 0-6 (so
// that the count of minus signs is even). Byte 7 - i of the matrix selects the
// input bits whose parity is output bit i.
constexpr long long kIq2ParityMatrix = 0x010204081020407FLL;

// Byte idx & 127 of the 128-byte table at t (bit 6 picks its second half).
DS4_AVX512ICL inline __m512i lookup128(const uint8_t* t, __m512i idx) {
  return _mm512_permutex2var_epi8(_mm512_load_si512(t), idx, _mm512_load_si512(t + 64));
}

// Against NA activation rows at once (dot is NA = 1): planes, signs and scales
// unpacked once per block for all of them.
template <int NA>
DS4_AVX512ICL void dotn_iq2_xxs_icl(int64_t n, const void* w, const void* a, size_t act_stride, float* out) {
  const auto* x = static_cast<const BlockIQ2_XXS*>(w);
  const BlockQ8_K* y[NA];
  for (int j = 0; j < NA; ++j) y[j] = reinterpret_cast<const BlockQ8_K*>(static_cast<const uint8_t*>(a) + act_stride * j);
  const Iq2Planes* planes = &iq2_planes();
  const std::array<uint8_t, 64>* place = kIq2Place;
  const __m512i gidx = load64(kIq2Idx), scut = load64(kIq2SignCut), spack = load64(kIq2SignPack);
  const __m512i select = load64(kIq2Select), parity = _mm512_set1_epi64(kIq2ParityMatrix);
  const __m512i scut59 = _mm512_set1_epi8(59), low5 = _mm512_set1_epi32(31), one32 = _mm512_set1_epi32(1);
  const __m512i zero = _mm512_setzero_si512();
  // Per block, stored and read back (DS4_SPILL): the negate masks of the 4
  // chunks and each row's float factor.
  struct alignas(64) Spill {
    __mmask64 neg[8];
    float f[NA];
  } sp;
  __m512 acc[NA];
  for (int j = 0; j < NA; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    prefetch_weights(&x[i]);
    DS4_RELOAD(planes);
    DS4_RELOAD(place);
    const __m512i q = _mm512_loadu_si512(x[i].qs);
    const __m512i idx = _mm512_permutexvar_epi8(gidx, q);
    const __mmask64 upper = _mm512_movepi8_mask(idx);  // index >= 128
    const __m512i pa = _mm512_mask_blend_epi8(upper, lookup128(planes->a, idx), lookup128(planes->a + 128, idx));
    const __m512i pb = _mm512_mask_blend_epi8(upper, lookup128(planes->b, idx), lookup128(planes->b + 128, idx));
    const __m512i pac = _mm512_mask_xor_epi32(pa, 0xFF00, pa, pb);  // lanes 32-63: plane C
    const __m512i signs = _mm512_gf2p8affine_epi64_epi8(_mm512_multishift_epi64_epi8(scut, q), parity, 0);
    _mm512_store_si512(sp.neg, _mm512_permutexvar_epi8(spack, signs));
    // Sub-block scales 2l + 1 (l = top 4 bits), in both 32-bit halves of the
    // sub-block's lane: bits 59-63 (l and a sign bit below it) rotated into
    // bytes 0 and 4, the rest cleared and the sign bit overwritten by (x & 31) | 1.
    const __m512 scale = _mm512_cvtepi32_ps(_mm512_ternarylogic_epi32(_mm512_multishift_epi64_epi8(scut59, q), low5, one32, 0xEA));
    const __m128 d = _mm_cvtph_ps(_mm_loadu_si32(&x[i].d));
    for (int j = 0; j < NA; ++j) _mm_store_ss(&sp.f[j], _mm_mul_ss(_mm_mul_ss(d, _mm_load_ss(&y[j][i].d)), _mm_set_ss(0.125f)));
    DS4_SPILL(&sp);
    __m512i isum[NA];
    for (int j = 0; j < NA; ++j) isum[j] = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      const __m512i m = _mm512_maskz_permutex2var_epi8(kIq2PlaceKeep, pac, _mm512_load_si512(place[c].data()), pb);
      const __m512i g = _mm512_gf2p8affine_epi64_epi8(select, m, kIq2LevelBase);
      const __mmask64 neg = _load_mask64(&sp.neg[c]);
      for (int j = 0; j < NA; ++j) {
        const __m512i yv = _mm512_loadu_si512(y[j][i].qs + 64 * c);
        isum[j] = _mm512_dpbusd_epi32(isum[j], g, _mm512_mask_sub_epi8(yv, neg, zero, yv));
      }
    }
    for (int j = 0; j < NA; ++j)
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[j]), _mm512_mul_ps(scale, _mm512_set1_ps(sp.f[j])), acc[j]);
  }
  for (int j = 0; j < NA; ++j) out[j] = _mm512_reduce_add_ps(acc[j]);
}

// The activation order dotn_iq2_xxs_icl reads (see there): within each block
// of 256, chunk c (64 bytes) holds values 32 k + 8 c + 0..7 at 8 k + 0..7.
// Only the quants move; d and the sums of 16 stay as they are.
void act_order_iq2_xxs(void* act, int64_t n) {
  auto* b = static_cast<BlockQ8_K*>(act);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int8_t t[QK_K];
    std::memcpy(t, b[i].qs, sizeof t);
    for (int c = 0; c < 4; ++c)
      for (int k = 0; k < 8; ++k) std::memcpy(b[i].qs + 64 * c + 8 * k, t + 32 * k + 8 * c, 8);
  }
}

template <GgmlType T>
using FloatRows = RowKernels<dotn_float<T, 1>, dotn_float<T, 2>, dotn_float<T, 3>, dotn_float<T, 4>>;
using Q80Vnni = RowKernels<dotn_q8_0_vnni256<1>, dotn_q8_0_vnni256<2>, dotn_q8_0_vnni256<3>, dotn_q8_0_vnni256<4>>;
using Mxfp4Vnni = RowKernels<dotn_mxfp4_vnni256<1>, dotn_mxfp4_vnni256<2>, dotn_mxfp4_vnni256<3>, dotn_mxfp4_vnni256<4>>;
using Q4KVnni = RowKernels<dotn_q4_k_vnni<1>, dotn_q4_k_vnni<2>, dotn_q4_k_vnni<3>, dotn_q4_k_vnni<4>>;
using Q2KIcl = RowKernels<dotn_q2_k_icl<1>, dotn_q2_k_icl<2>, dotn_q2_k_icl<3>, dotn_q2_k_icl<4>>;
using IQ2XXSIcl = RowKernels<dotn_iq2_xxs_icl<1>, dotn_iq2_xxs_icl<2>, dotn_iq2_xxs_icl<3>, dotn_iq2_xxs_icl<4>>;
// Eight activation rows per pass over the weight row where there are that
// many (prefill's experts see about a dozen tokens each): the unpacking of a
// block is shared by twice the rows; each row's sum is the same either way.
void dotn_iq2_xxs_rows(int64_t n, const void* w, const void* a, size_t stride, int nact, float* out) {
  const auto* act = static_cast<const uint8_t*>(a);
  for (; nact >= 8; nact -= 8, act += 8 * stride, out += 8) dotn_iq2_xxs_icl<8>(n, w, act, stride, out);
  IQ2XXSIcl::dotn(n, w, act, stride, nact, out);
}

// --- activation quantizers: the reference's operations lane by lane ---

// nearest_int's float trick on 16 lanes (the same operations, so every input,
// NaN included, gives the same integer as the scalar code).
DS4_AVX512 inline __m512i nearest_int16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(_mm512_add_ps(v, _mm512_set1_ps(12582912.0f)));
  return _mm512_sub_epi32(_mm512_and_si512(bits, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x00400000));
}
// Running max of |x| as std::max(amax, fabs(x)) computes it: a NaN x leaves
// amax unchanged. vmaxps returns its second operand when either is NaN.
DS4_AVX512 inline __m512 max_abs(__m512 m, __m512 x) {
  return _mm512_max_ps(_mm512_and_ps(x, _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff))), m);
}

DS4_AVX512 void quant_q8_k(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    __m512 m = _mm512_setzero_ps();
    for (int j = 0; j < 16; ++j) m = max_abs(m, _mm512_loadu_ps(x + 16 * j));
    const float amax = _mm512_reduce_max_ps(m);  // m holds no NaN
    if (amax == 0) {
      std::memset(&b[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    const float iscale = 127.0f / amax;
    const __m512 vs = _mm512_set1_ps(iscale);
    for (int j = 0; j < 16; ++j) {  // 16 values = one sum of 16
      __m512i q = nearest_int16(_mm512_mul_ps(vs, _mm512_loadu_ps(x + 16 * j)));
      q = _mm512_min_epi32(_mm512_max_epi32(q, _mm512_set1_epi32(-127)), _mm512_set1_epi32(127));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(b[i].qs + 16 * j), _mm512_cvtepi32_epi8(q));
      b[i].bsums[j] = static_cast<int16_t>(_mm512_reduce_add_epi32(q));
    }
    b[i].d = 1 / iscale;
  }
}

// std::round (half away from zero) exactly: truncate, then step away from zero
// where the dropped fraction is at least one half (v - trunc(v) is exact).
DS4_AVX512 inline __m512 round_away(__m512 v) {
  const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 frac = _mm512_and_ps(_mm512_sub_ps(v, t), _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff)));
  const __m512 one = _mm512_or_ps(_mm512_and_ps(v, _mm512_castsi512_ps(_mm512_set1_epi32(INT32_MIN))), _mm512_set1_ps(1.0f));
  return _mm512_mask_add_ps(t, _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ), t, one);
}

DS4_AVX512 void quant_q8_0(const float* x, void* dst, int64_t n) {
  auto* d8 = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / QK; ++b, d8 += sizeof(BlockQ8_0), x += QK) {
    const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(max_abs(max_abs(_mm512_setzero_ps(), x0), x1));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t h = f32_to_f16(d);
    std::memcpy(d8, &h, 2);
    // (int8_t) of the float: the truncating conversion's low byte, as the
    // scalar cast compiles (cvttss2si).
    const __m512 vid = _mm512_set1_ps(id);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d8 + 2), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(round_away(_mm512_mul_ps(x0, vid)))));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d8 + 18), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(round_away(_mm512_mul_ps(x1, vid)))));
  }
}

// Per type: the kernel of each AVX-512 level (base, + VNNI, + VBMI/VNNI/GFNI).
struct Entry {
  GgmlType t;
  DotKernel k, vnni, icl;
};
const Entry kAvx512[] = {
    {GgmlType::F32,
     {GgmlType::F32, FloatRows<GgmlType::F32>::dot, FloatRows<GgmlType::F32>::dotn},
     {GgmlType::F32, FloatRows<GgmlType::F32>::dot, FloatRows<GgmlType::F32>::dotn},
     {GgmlType::F32, FloatRows<GgmlType::F32>::dot, FloatRows<GgmlType::F32>::dotn}},
    {GgmlType::F16,
     {GgmlType::F32, FloatRows<GgmlType::F16>::dot, FloatRows<GgmlType::F16>::dotn},
     {GgmlType::F32, FloatRows<GgmlType::F16>::dot, FloatRows<GgmlType::F16>::dotn},
     {GgmlType::F32, FloatRows<GgmlType::F16>::dot, FloatRows<GgmlType::F16>::dotn}},
    {GgmlType::BF16,
     {GgmlType::F32, FloatRows<GgmlType::BF16>::dot, FloatRows<GgmlType::BF16>::dotn},
     {GgmlType::F32, FloatRows<GgmlType::BF16>::dot, FloatRows<GgmlType::BF16>::dotn},
     {GgmlType::F32, FloatRows<GgmlType::BF16>::dot, FloatRows<GgmlType::BF16>::dotn}},
    {GgmlType::Q8_0,
     {GgmlType::Q8_0, dot_q8_0},
     {GgmlType::Q8_0, Q80Vnni::dot, Q80Vnni::dotn, nullptr, dotnm_q8_0_vnni},
     {GgmlType::Q8_0, Q80Vnni::dot, Q80Vnni::dotn, nullptr, dotnm_q8_0_vnni}},
    {GgmlType::MXFP4,
     {GgmlType::Q8_0, dot_mxfp4},
     {GgmlType::Q8_0, Mxfp4Vnni::dot, Mxfp4Vnni::dotn},
     {GgmlType::Q8_0, Mxfp4Vnni::dot, Mxfp4Vnni::dotn}},
    {GgmlType::Q2_K, {GgmlType::Q8_K, dot_q2_k}, {GgmlType::Q8_K, dot_q2_k}, {GgmlType::Q8_K, Q2KIcl::dot, Q2KIcl::dotn}},
    {GgmlType::Q4_K,
     {GgmlType::Q8_K, dot_q4_k},
     {GgmlType::Q8_K, Q4KVnni::dot, Q4KVnni::dotn},
     {GgmlType::Q8_K, Q4KVnni::dot, Q4KVnni::dotn}},
    {GgmlType::IQ2_XXS,
     {GgmlType::Q8_K, dot_iq2_xxs},
     {GgmlType::Q8_K, dot_iq2_xxs},
     {GgmlType::Q8_K, IQ2XXSIcl::dot, dotn_iq2_xxs_rows, act_order_iq2_xxs}},
};

// 0 = base, 1 = VNNI, 2 = Ice Lake level. DS4_QUANT_NO_VNNI=1 forces the base
// kernels and DS4_QUANT_NO_VBMI=1 stops at VNNI, so that tests can cover each
// level on a CPU that has them all.
int avx512_level() {
  static const int level = [] {
#if defined(DS4_EMULATE_AVX512)
    const bool has_vnni = true, has_icl = true;  // every instruction is emulated
#else
    const bool has_vnni = __builtin_cpu_supports("avx512vnni");
    const bool has_icl = __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("gfni");
#endif
    const bool vnni = has_vnni && !std::getenv("DS4_QUANT_NO_VNNI");
    const bool icl = vnni && has_icl && !std::getenv("DS4_QUANT_NO_VBMI");
    return icl ? 2 : vnni ? 1 : 0;
  }();
  return level;
}

}  // namespace

const DotKernel* avx512_kernel(GgmlType t) {
  for (const auto& e : kAvx512)
    if (e.t == t) return avx512_level() == 2 ? &e.icl : avx512_level() == 1 ? &e.vnni : &e.k;
  return nullptr;
}

ActQuantFn avx512_act_quant(GgmlType act) {
  if (act == GgmlType::Q8_K) return quant_q8_k;
  if (act == GgmlType::Q8_0) return quant_q8_0;
  return nullptr;
}

}  // namespace ds4::quant
#endif
