// AVX2 (+FMA, F16C) dot kernels. Compiled with per-function target attributes
// so the library runs on any x86-64; matvec picks them only where the CPU has
// AVX2 (cpu_has). Each must equal its scalar reference in kernels_scalar.cpp up
// to float summation order: integer parts are exact, as in the reference.
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/blocks.h"
#include "quant/iq_tables.h"
#include "quant/kernel_rows.h"
#include "quant/kernels.h"
#include "util/float16.h"

#define DS4_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace ds4::quant {
namespace {

// Scale fields via the F16C instruction (the portable f16_to_f32 branches).
DS4_AVX2 inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

DS4_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
DS4_AVX2 inline int hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}
// Sum of int8 products in pairs as 16 int16: x signed, y signed. maddubs needs
// an unsigned first operand, so move x's sign onto y.
DS4_AVX2 inline __m256i mul_i8_pairs(__m256i x, __m256i y) {
  return _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x));
}
// Sum of int8 products as 8 int32 lanes.
DS4_AVX2 inline __m256i dot_i8(__m256i x, __m256i y) {
  return _mm256_madd_epi16(mul_i8_pairs(x, y), _mm256_set1_epi16(1));
}
// 32 nibbles of 16 bytes: low nibbles in bytes 0..15, high in 16..31.
DS4_AVX2 inline __m256i unpack_nibbles(const uint8_t* p) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

DS4_AVX2 inline __m256 load_bf16(const uint16_t* p) {
  const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

// Float weights (T: F32, F16 or BF16) against NA f32 activation rows: each
// 16 weights are loaded and widened once for all rows, and each row is summed
// as dot sums it (two accumulators over 16-value steps, added and reduced,
// then the tail in order), so dotn equals dot bit for bit; dot is NA = 1.
template <GgmlType T>
DS4_AVX2 inline __m256 float_w8(const void* w, int64_t i) {
  if constexpr (T == GgmlType::F32) return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  else if constexpr (T == GgmlType::F16)
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i)));
  else return load_bf16(static_cast<const uint16_t*>(w) + i);
}
template <GgmlType T, int NA>
DS4_AVX2 void dotn_float(int64_t n, const void* w, const void* a, size_t stride, float* out) {
  const float* y[NA];
  for (int j = 0; j < NA; ++j) y[j] = reinterpret_cast<const float*>(static_cast<const uint8_t*>(a) + stride * j);
  __m256 s0[NA], s1[NA];
  for (int j = 0; j < NA; ++j) s0[j] = s1[j] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 w0 = float_w8<T>(w, i), w1 = float_w8<T>(w, i + 8);
    for (int j = 0; j < NA; ++j) {
      s0[j] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(y[j] + i), s0[j]);
      s1[j] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(y[j] + i + 8), s1[j]);
    }
  }
  for (int j = 0; j < NA; ++j) {
    float s = hsum(_mm256_add_ps(s0[j], s1[j]));
    for (int64_t k = i; k < n; ++k) s += float_weight<T>(w, k) * y[j][k];
    out[j] = s;
  }
}
template <GgmlType T>
using FloatRows = RowKernels<dotn_float<T, 1>, dotn_float<T, 2>, dotn_float<T, 3>, dotn_float<T, 4>>;

// Weights of 32 int8 values per block against Q8_0 activations, NA activation
// rows at once: W unpacks a block into its values and scale once, then every
// row takes dot_i8's steps with |w| shared. Bit-identical to NA = 1.
struct Q8_0Weights {
  using Block = BlockQ8_0;
  DS4_AVX2 __m256i values(const Block& b) const { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)); }
  DS4_AVX2 float scale(const Block& b) const { return h2f(b.d); }
};
struct Mxfp4Weights {
  using Block = BlockMXFP4;
  __m256i table;
  DS4_AVX2 Mxfp4Weights() {
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(kvalues_mxfp4));
    table = _mm256_set_m128i(t, t);
  }
  DS4_AVX2 __m256i values(const Block& b) const { return _mm256_shuffle_epi8(table, unpack_nibbles(b.qs)); }
  DS4_AVX2 float scale(const Block& b) const { return e8m0_to_f32_half(b.e); }
};

template <class W, int NA>
DS4_AVX2 void dotn_int8_blocks(int64_t n, const void* w, const void* a, size_t act_stride, float* out) {
  const W wt;
  const auto* x = static_cast<const typename W::Block*>(w);
  const BlockQ8_0* y[NA];
  for (int j = 0; j < NA; ++j) y[j] = reinterpret_cast<const BlockQ8_0*>(static_cast<const uint8_t*>(a) + act_stride * j);
  __m256 acc[NA];
  for (int j = 0; j < NA; ++j) acc[j] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK; ++i) {
    const __m256i qx = wt.values(x[i]);
    const __m256i ax = _mm256_sign_epi8(qx, qx);
    const float dx = wt.scale(x[i]);
    for (int j = 0; j < NA; ++j) {
      const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[j][i].qs));
      const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(qy, qx)), _mm256_set1_epi16(1));
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(dx * h2f(y[j][i].d)), _mm256_cvtepi32_ps(p), acc[j]);
    }
  }
  for (int j = 0; j < NA; ++j) out[j] = hsum(acc[j]);
}
template <int NA>
DS4_AVX2 void dotn_q8_0(int64_t n, const void* w, const void* a, size_t act_stride, float* out) {
  dotn_int8_blocks<Q8_0Weights, NA>(n, w, a, act_stride, out);
}
template <int NA>
DS4_AVX2 void dotn_mxfp4(int64_t n, const void* w, const void* a, size_t act_stride, float* out) {
  dotn_int8_blocks<Mxfp4Weights, NA>(n, w, a, act_stride, out);
}

// Q2_K against NA activation rows (act_stride bytes apart) at once: each
// weight block is unpacked once and multiplied with every row. Each row's sums
// are formed in the same order as with NA = 1, so results are bit-identical to
// the 1-row instance (dot).
template <int NA>
DS4_AVX2 void dotn_q2_k(int64_t n, const void* w, const void* a, size_t act_stride, float* out) {
  const auto* x = static_cast<const BlockQ2_K*>(w);
  const BlockQ8_K* y[NA];
  for (int j = 0; j < NA; ++j) y[j] = reinterpret_cast<const BlockQ8_K*>(static_cast<const uint8_t*>(a) + act_stride * j);
  const __m256i m3 = _mm256_set1_epi8(3);
  const __m128i m4 = _mm_set1_epi8(0x0F);
  // For shift s, the 16 values 0..15 (low 128-bit lane of the int16 products)
  // use the scale 2s of their half, values 16..31 (high lane) scale 2s + 1:
  // byte-shuffle masks picking int16 element 2s / 2s + 1 of 8 broadcast scales.
  __m256i pick[4];
  for (int s = 0; s < 4; ++s) {
    const char lo = static_cast<char>(4 * s), hi = static_cast<char>(4 * s + 2);
    pick[s] = _mm256_setr_epi8(lo, static_cast<char>(lo + 1), lo, static_cast<char>(lo + 1), lo, static_cast<char>(lo + 1), lo,
                               static_cast<char>(lo + 1), lo, static_cast<char>(lo + 1), lo, static_cast<char>(lo + 1), lo,
                               static_cast<char>(lo + 1), lo, static_cast<char>(lo + 1), hi, static_cast<char>(hi + 1), hi,
                               static_cast<char>(hi + 1), hi, static_cast<char>(hi + 1), hi, static_cast<char>(hi + 1), hi,
                               static_cast<char>(hi + 1), hi, static_cast<char>(hi + 1), hi, static_cast<char>(hi + 1), hi,
                               static_cast<char>(hi + 1));
  }
  __m256 acc[NA], accm[NA];
  for (int j = 0; j < NA; ++j) acc[j] = accm[j] = _mm256_setzero_ps();
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(x[i].scales));
    // Mins (high nibbles) times the activation's sums of 16, kept as a vector.
    const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sc8, 4), m4));
    const float dmin = h2f(x[i].dmin), d = h2f(x[i].d);
    for (int j = 0; j < NA; ++j) {
      const __m256i bs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[j][i].bsums));
      accm[j] = _mm256_fmadd_ps(_mm256_set1_ps(y[j][i].d * dmin), _mm256_cvtepi32_ps(_mm256_madd_epi16(mins, bs)), accm[j]);
    }
    const __m128i scl = _mm_and_si128(sc8, m4);
    const __m256i sc_h[2] = {_mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scl)),
                             _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_srli_si128(scl, 8)))};
    __m256i isum[NA];
    for (int j = 0; j < NA; ++j) isum[j] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + 32 * h));
      for (int s = 0; s < 4; ++s) {
        const __m256i q2 = _mm256_and_si256(_mm256_srli_epi16(q, 2 * s), m3);
        const __m256i scv = _mm256_shuffle_epi8(sc_h[h], pick[s]);
        for (int j = 0; j < NA; ++j) {
          const __m256i qy = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[j][i].qs + 128 * h + 32 * s));
          isum[j] = _mm256_add_epi32(isum[j], _mm256_madd_epi16(_mm256_maddubs_epi16(q2, qy), scv));
        }
      }
    }
    for (int j = 0; j < NA; ++j)
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(y[j][i].d * d), _mm256_cvtepi32_ps(isum[j]), acc[j]);
  }
  for (int j = 0; j < NA; ++j) out[j] = hsum(_mm256_sub_ps(acc[j], accm[j]));
}

// Q4_K against NA activation rows at once (as dotn_q2_k): scales, mins and
// nibbles are unpacked once per block; bit-identical to NA = 1.
template <int NA>
DS4_AVX2 void dotn_q4_k(int64_t n, const void* w, const void* a, size_t act_stride, float* out) {
  const auto* x = static_cast<const BlockQ4_K*>(w);
  const BlockQ8_K* y[NA];
  for (int j = 0; j < NA; ++j) y[j] = reinterpret_cast<const BlockQ8_K*>(static_cast<const uint8_t*>(a) + act_stride * j);
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  __m256 acc[NA];
  float mins_acc[NA];
  for (int j = 0; j < NA; ++j) {
    acc[j] = _mm256_setzero_ps();
    mins_acc[j] = 0;
  }
  for (int64_t i = 0; i < n / QK_K; ++i) {
    uint8_t sc[8], m[8];
    for (int k = 0; k < 8; ++k) get_scale_min_k4(k, x[i].scales, sc[k], m[k]);
    int summ[NA];
    for (int j = 0; j < NA; ++j) {
      summ[j] = 0;
      for (int k = 0; k < 8; ++k) summ[j] += m[k] * (y[j][i].bsums[2 * k] + y[j][i].bsums[2 * k + 1]);
    }
    __m256i isum[NA];
    for (int j = 0; j < NA; ++j) isum[j] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[i].qs + 32 * c));
      const __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
      const __m256i s0 = _mm256_set1_epi16(sc[2 * c]), s1 = _mm256_set1_epi16(sc[2 * c + 1]);
      for (int j = 0; j < NA; ++j) {
        const __m256i y0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[j][i].qs + 64 * c));
        const __m256i y1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[j][i].qs + 64 * c + 32));
        const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), s0);
        const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), s1);
        isum[j] = _mm256_add_epi32(isum[j], _mm256_add_epi32(p0, p1));
      }
    }
    const float d = h2f(x[i].d), dmin = h2f(x[i].dmin);
    for (int j = 0; j < NA; ++j) {
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(y[j][i].d * d), _mm256_cvtepi32_ps(isum[j]), acc[j]);
      mins_acc[j] += y[j][i].d * dmin * static_cast<float>(summ[j]);
    }
  }
  for (int j = 0; j < NA; ++j) out[j] = hsum(acc[j]) - mins_acc[j];
}

// One block's 8 sign/scale words (the odd dwords of qs) in sub-block order.
DS4_AVX2 inline __m256i iq2xxs_sign_words(const uint16_t* qs) {
  const __m256 a = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs)));
  const __m256 b = _mm256_castsi256_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 16)));
  // Per lane: a1 a3 b1 b3 -> words 0 1 4 5 | 2 3 6 7; vpermq puts them in order.
  const __m256i w = _mm256_castps_si256(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm256_permute4x64_epi64(w, _MM_SHUFFLE(3, 1, 2, 0));
}

// iq2_sign_bytes on 8 words at once: byte 4k+j = sign byte of group j of
// sub-block k, bit 7 the parity bit.
DS4_AVX2 inline __m256i iq2xxs_sign_bytes(__m256i v) {
  const __m256i s = _mm256_or_si256(
      _mm256_or_si256(_mm256_and_si256(v, _mm256_set1_epi32(0x7F)),
                      _mm256_and_si256(_mm256_slli_epi32(v, 1), _mm256_set1_epi32(0x7F00))),
      _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(v, 2), _mm256_set1_epi32(0x7F0000)),
                      _mm256_and_si256(_mm256_slli_epi32(v, 3), _mm256_set1_epi32(0x7F000000))));
  __m256i p = _mm256_xor_si256(s, _mm256_srli_epi32(s, 4));
  p = _mm256_xor_si256(p, _mm256_srli_epi32(p, 2));
  p = _mm256_xor_si256(p, _mm256_srli_epi32(p, 1));
  return _mm256_or_si256(s, _mm256_slli_epi32(_mm256_and_si256(p, _mm256_set1_epi32(0x01010101)), 7));
}

// 4 grid rows as one vector: two halves from a low and a high 8-byte load
// each (vmovq, vmovhps), joined by one insert; five instructions, where
// _mm256_set_epi64x takes three inserts more.
DS4_AVX2 inline __m256i iq2xxs_grid4(const uint8_t* idx) {
  const auto row = [](uint8_t i) { return reinterpret_cast<const __m64*>(iq2xxs_grid[i]); };
  const __m128 lo = _mm_loadh_pi(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row(idx[0])))), row(idx[1]));
  const __m128 hi = _mm_loadh_pi(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row(idx[2])))), row(idx[3]));
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_castps_si128(lo)), _mm_castps_si128(hi), 1);
}

// IQ2_XXS against NA activation rows at once, as dotn_q2_k: grid rows, signs
// and scales are unpacked once per block for all rows; bit-identical to NA = 1.
template <int NA>
DS4_AVX2 void dotn_iq2_xxs(int64_t n, const void* w, const void* a, size_t act_stride, float* out) {
  const auto* x = static_cast<const BlockIQ2_XXS*>(w);
  const BlockQ8_K* y[NA];
  for (int j = 0; j < NA; ++j) y[j] = reinterpret_cast<const BlockQ8_K*>(static_cast<const uint8_t*>(a) + act_stride * j);
  // Sub-block k's 4 sign bytes (4k'..4k'+3 of its lane, k' = k % 4) spread so
  // that byte 8j+b of the result holds group j's sign byte.
  alignas(32) static const int8_t kRepl[4][32] = {
      {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3},
      {4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7},
      {8, 8, 8, 8, 8, 8, 8, 8, 9, 9, 9, 9, 9, 9, 9, 9, 10, 10, 10, 10, 10, 10, 10, 10, 11, 11, 11, 11, 11, 11, 11, 11},
      {12, 12, 12, 12, 12, 12, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13, 14, 14, 14, 14, 14, 14, 14, 14, 15, 15, 15, 15,
       15, 15, 15, 15}};
  const __m256i bits = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ull));
  const __m256i k127 = _mm256_set1_epi8(127);
  __m256 acc[NA];
  for (int j = 0; j < NA; ++j) acc[j] = _mm256_setzero_ps();
  const int64_t nb = n / QK_K;
  // Each block's sign words are loaded one block ahead: the chain from them to
  // the first product is ~20 operations long, and starting it early overlaps
  // it with the previous block's products.
  __m256i next_words = nb > 0 ? iq2xxs_sign_words(x[0].qs) : _mm256_setzero_si256();
  for (int64_t i = 0; i < nb; ++i) {
    const auto* q = reinterpret_cast<const uint8_t*>(x[i].qs);
    const __m256i words = next_words;
    if (i + 1 < nb) next_words = iq2xxs_sign_words(x[i + 1].qs);
    const __m256i sb = iq2xxs_sign_bytes(words);
    // Scales 2l+1 as int16, sub-blocks 0..7 in both lanes: [s0 .. s7 | s0 .. s7].
    const __m256i sc32 = _mm256_or_si256(_mm256_slli_epi32(_mm256_srli_epi32(words, 28), 1), _mm256_set1_epi32(1));
    const __m128i sc16 = _mm_packs_epi32(_mm256_castsi256_si128(sc32), _mm256_extracti128_si256(sc32, 1));
    const __m256i sc = _mm256_broadcastsi128_si256(sc16);
    const __m256i sb_lo = _mm256_permute2x128_si256(sb, sb, 0x00), sb_hi = _mm256_permute2x128_si256(sb, sb, 0x11);
    // One row alone: two sums (odd and even sub-blocks) to halve the add chain.
    constexpr int kSplit = NA == 1 ? 2 : 1;
    __m256i isum[NA][kSplit];
    for (int j = 0; j < NA; ++j)
      for (int h = 0; h < kSplit; ++h) isum[j][h] = _mm256_setzero_si256();
    for (int ib = 0; ib < 8; ++ib) {
      const __m256i g = iq2xxs_grid4(q + 8 * ib);
      const __m256i s = _mm256_shuffle_epi8(ib < 4 ? sb_lo : sb_hi,
                                            _mm256_load_si256(reinterpret_cast<const __m256i*>(kRepl[ib & 3])));
      // (s & bit) + 127 is 127 (positive) for a clear bit and 128..255
      // (negative as int8) for a set one: what _mm256_sign_epi8 reads.
      const __m256i sgn = _mm256_add_epi8(_mm256_and_si256(s, bits), k127);
      const __m256i scv = _mm256_shuffle_epi8(sc, _mm256_set1_epi16(static_cast<short>(0x0100 + 0x0202 * ib)));
      for (int j = 0; j < NA; ++j) {
        const __m256i qy = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[j][i].qs + 32 * ib)), sgn);
        __m256i& s_ = isum[j][ib % kSplit];
        s_ = _mm256_add_epi32(s_, _mm256_madd_epi16(_mm256_maddubs_epi16(g, qy), scv));
      }
    }
    const float d = h2f(x[i].d);
    for (int j = 0; j < NA; ++j) {
      const __m256i t = kSplit == 2 ? _mm256_add_epi32(isum[j][0], isum[j][kSplit - 1]) : isum[j][0];
      acc[j] = _mm256_fmadd_ps(_mm256_set1_ps(d * y[j][i].d * 0.125f), _mm256_cvtepi32_ps(t), acc[j]);
    }
  }
  for (int j = 0; j < NA; ++j) out[j] = hsum(acc[j]);
}

using Q80 = RowKernels<dotn_q8_0<1>, dotn_q8_0<2>, dotn_q8_0<3>, dotn_q8_0<4>>;
using MXFP4 = RowKernels<dotn_mxfp4<1>, dotn_mxfp4<2>, dotn_mxfp4<3>, dotn_mxfp4<4>>;
using Q2K = RowKernels<dotn_q2_k<1>, dotn_q2_k<2>, dotn_q2_k<3>, dotn_q2_k<4>>;
using Q4K = RowKernels<dotn_q4_k<1>, dotn_q4_k<2>, dotn_q4_k<3>, dotn_q4_k<4>>;
using IQ2XXS = RowKernels<dotn_iq2_xxs<1>, dotn_iq2_xxs<2>, dotn_iq2_xxs<3>, dotn_iq2_xxs<4>>;

// --- activation quantizers: the reference's operations lane by lane ---

DS4_AVX2 inline __m256i nearest_int8(__m256 v) {  // nearest_int's float trick
  const __m256i bits = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.0f)));
  return _mm256_sub_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x00400000));
}
// std::max(amax, fabs(x)) leaves amax unchanged for a NaN x; vmaxps returns
// its second operand when either is NaN.
DS4_AVX2 inline __m256 max_abs(__m256 m, __m256 x) {
  return _mm256_max_ps(_mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff))), m);
}
DS4_AVX2 inline float hmax(__m256 v) {  // v holds no NaN
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
// Low bytes of 4 x 8 int32 in order (truncation, like a cast to int8_t): the
// unsigned packs cannot saturate once each lane is masked to 0..255.
DS4_AVX2 inline __m256i low_bytes(__m256i a, __m256i b, __m256i c, __m256i d) {
  const __m256i m = _mm256_set1_epi32(0xFF);
  const __m256i ab = _mm256_packus_epi32(_mm256_and_si256(a, m), _mm256_and_si256(b, m));
  const __m256i cd = _mm256_packus_epi32(_mm256_and_si256(c, m), _mm256_and_si256(d, m));
  // In-lane packs leave dwords as a0-3 b0-3 c0-3 d0-3 a4-7 b4-7 c4-7 d4-7.
  return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

DS4_AVX2 void quant_q8_k(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_K*>(dst);
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    __m256 m = _mm256_setzero_ps();
    for (int j = 0; j < 32; ++j) m = max_abs(m, _mm256_loadu_ps(x + 8 * j));
    const float amax = hmax(m);
    if (amax == 0) {
      std::memset(&b[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    const float iscale = 127.0f / amax;
    const __m256 vs = _mm256_set1_ps(iscale);
    for (int j = 0; j < 8; ++j) {  // 32 values = two sums of 16
      __m256i q[4];
      for (int k = 0; k < 4; ++k) {
        const __m256i v = nearest_int8(_mm256_mul_ps(vs, _mm256_loadu_ps(x + 32 * j + 8 * k)));
        q[k] = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(b[i].qs + 32 * j), low_bytes(q[0], q[1], q[2], q[3]));
      b[i].bsums[2 * j] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(q[0], q[1])));
      b[i].bsums[2 * j + 1] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(q[2], q[3])));
    }
    b[i].d = 1 / iscale;
  }
}

// std::round (half away from zero) exactly: truncate, then step away from zero
// where the dropped fraction is at least one half (v - trunc(v) is exact).
DS4_AVX2 inline __m256 round_away(__m256 v) {
  const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m256 frac = _mm256_and_ps(_mm256_sub_ps(v, t), _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  const __m256 one = _mm256_or_ps(_mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(INT32_MIN))), _mm256_set1_ps(1.0f));
  return _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ), one));
}

DS4_AVX2 void quant_q8_0(const float* x, void* dst, int64_t n) {
  auto* d8 = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / QK; ++b, d8 += sizeof(BlockQ8_0), x += QK) {
    __m256 xv[4], m = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) m = max_abs(m, xv[k] = _mm256_loadu_ps(x + 8 * k));
    const float d = hmax(m) / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const uint16_t h = f32_to_f16(d);
    std::memcpy(d8, &h, 2);
    const __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];  // (int8_t) of the float: the truncating conversion's low byte
    for (int k = 0; k < 4; ++k) q[k] = _mm256_cvttps_epi32(round_away(_mm256_mul_ps(xv[k], vid)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d8 + 2), low_bytes(q[0], q[1], q[2], q[3]));
  }
}

struct Entry {
  GgmlType t;
  DotKernel k;
};
const Entry kAvx2[] = {
    {GgmlType::F32, {GgmlType::F32, FloatRows<GgmlType::F32>::dot, FloatRows<GgmlType::F32>::dotn}},
    {GgmlType::F16, {GgmlType::F32, FloatRows<GgmlType::F16>::dot, FloatRows<GgmlType::F16>::dotn}},
    {GgmlType::BF16, {GgmlType::F32, FloatRows<GgmlType::BF16>::dot, FloatRows<GgmlType::BF16>::dotn}},
    {GgmlType::Q8_0, {GgmlType::Q8_0, Q80::dot, Q80::dotn}},
    {GgmlType::MXFP4, {GgmlType::Q8_0, MXFP4::dot, MXFP4::dotn}},
    {GgmlType::Q2_K, {GgmlType::Q8_K, Q2K::dot, Q2K::dotn}},
    {GgmlType::Q4_K, {GgmlType::Q8_K, Q4K::dot, Q4K::dotn}},
    {GgmlType::IQ2_XXS, {GgmlType::Q8_K, IQ2XXS::dot, IQ2XXS::dotn}},
};

}  // namespace

const DotKernel* avx2_kernel(GgmlType t) {
  for (const auto& e : kAvx2)
    if (e.t == t) return &e.k;
  return nullptr;
}

ActQuantFn avx2_act_quant(GgmlType act) {
  if (act == GgmlType::Q8_K) return quant_q8_k;
  if (act == GgmlType::Q8_0) return quant_q8_0;
  return nullptr;
}

}  // namespace ds4::quant
#endif
