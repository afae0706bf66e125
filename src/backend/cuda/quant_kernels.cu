// Fused dequantize-matvec and dequantize kernels for GGML weight types.
//
// Layout of the work: one warp per `R` rows (R = rows per warp, 1/2/4). A block
// of QK elements is split into PARTS "units" of EPU elements; lane l of a warp
// takes units l, l+32, l+64, ... of the row, so the 32 lanes read adjacent
// units, i.e. one contiguous stretch of the row per step (coalesced), and every
// weight byte is loaded exactly once. The x values of a unit are loaded once
// and reused for the R rows. Partial sums are f32, reduced with warp shuffles.
//
// Small integers become floats through the mantissa of 2^23 (byte_f) rather
// than the integer-to-float converter, which runs at a quarter of FMA rate on
// sm_80/sm_90 and would make 2- and 4-bit types compute-bound.
//
// Dequantize kernels reproduce the CPU registry bit for bit: every product and
// difference uses __fmul_rn/__fsub_rn, which nvcc never contracts into FMA, in
// the same order as ggml's reference code.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_fail.h"
#include "backend/cuda/cuda_quant.h"
#include "backend/cuda/kernel_common.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/row_math.cuh"
#include "quant/iq_tables.h"

namespace ds4::cuda {

namespace {

constexpr int kThreads = 128;  // 4 warps per block
constexpr int kUnroll = 4;     // loop steps whose weight loads are issued together

// ---- loads and conversions ---------------------------------------------------

using kc::f16f;
using kc::ld_u128;
using kc::ld_u16;
using kc::ld_u32;
using kc::warp_sum;
// A 32-bit word at an address that is only 2-byte aligned (Q8_0, IQ2_XXS blocks).
__device__ __forceinline__ uint32_t ld_u32_a2(const uint8_t* p) { return ld_u16(p) | (ld_u16(p + 2) << 16); }

__device__ __forceinline__ float bf16f(uint32_t h) { return __uint_as_float(h << 16); }

// Byte k of w as an exact float: the byte becomes the low mantissa bits of
// 2^23 (one PRMT), then 2^23 is subtracted (exact, the result is an integer).
__device__ __forceinline__ float byte_f(uint32_t w, int k) {
  return __uint_as_float(__byte_perm(w, 0x4B000000u, 0x7540u | static_cast<uint32_t>(k))) - 8388608.0f;
}
// A small non-negative integer (< 2^23) as an exact float, same trick.
__device__ __forceinline__ float u_f(uint32_t v) { return __uint_as_float(0x4B000000u | v) - 8388608.0f; }
// Signed byte k of w, where w was XORed with 0x80808080 (so the byte is q+128).
__device__ __forceinline__ float sbyte_f(uint32_t wx, int k) {
  return __uint_as_float(__byte_perm(wx, 0x4B000000u, 0x7540u | static_cast<uint32_t>(k))) - 8388736.0f;
}

template <int N>
__device__ __forceinline__ void load_x(const float* __restrict__ x, float* v) {
  static_assert(N % 4 == 0);
#pragma unroll
  for (int i = 0; i < N / 4; ++i) {
    const float4 t = __ldg(reinterpret_cast<const float4*>(x) + i);
    v[4 * i] = t.x;
    v[4 * i + 1] = t.y;
    v[4 * i + 2] = t.z;
    v[4 * i + 3] = t.w;
  }
}

template <int N>
__device__ __forceinline__ float sum(const float* v) {
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < N; ++i) s += v[i];
  return s;
}

struct NoCtx {};

// ---- type traits ---------------------------------------------------------------
// Each type: QK elements and BYTES bytes per block, PARTS units of EPU elements,
// NG per-group x sums the unit needs (K-quants subtract m * sum(x) per group),
// ALIGN bytes of alignment the loads assume.
//   load_x(xb, p, xv, xs): x of unit p of a block starting at xb (+ group sums)
//   dot(ctx, blk, p, xv, xs): sum of w*x over unit p
//   deq(ctx, blk, p, yb): unit p's values into the block's output yb, exactly

// F32, eight values (two 16-byte loads) per unit; needs cols % 8 == 0.
struct TF32v {
  static constexpr int QK = 8, BYTES = 32, PARTS = 1, EPU = 8, NG = 1, ALIGN = 16;
  using Ctx = NoCtx;
  __device__ static Ctx init() { return {}; }
  __device__ static void lx(const float* xb, int, float* xv, float*) { load_x<8>(xb, xv); }
  struct Raw {
    uint4 a, b;
  };
  __device__ static Raw load(const uint8_t* blk, int) { return {ld_u128(blk), ld_u128(blk + 16)}; }
  __device__ static float dot(Ctx, const Raw& w, int, const float* xv, const float*) {
    const uint4 a = w.a, b = w.b;
    float s = __uint_as_float(a.x) * xv[0];
    s = fmaf(__uint_as_float(a.y), xv[1], s);
    s = fmaf(__uint_as_float(a.z), xv[2], s);
    s = fmaf(__uint_as_float(a.w), xv[3], s);
    s = fmaf(__uint_as_float(b.x), xv[4], s);
    s = fmaf(__uint_as_float(b.y), xv[5], s);
    s = fmaf(__uint_as_float(b.z), xv[6], s);
    return fmaf(__uint_as_float(b.w), xv[7], s);
  }
  __device__ static void deq(Ctx, const uint8_t* blk, int, float* yb) {
    for (int i = 0; i < 8; ++i) yb[i] = __uint_as_float(ld_u32(blk + 4 * i));
  }
};

// One value per unit: F32/F16/BF16 rows whose length is not a multiple of 8.
// Conversions as types (a __device__ function's address cannot be a template
// argument in code that the host side instantiates).
struct ConvF32 {
  __device__ static float f(uint32_t b) { return __uint_as_float(b); }
};
struct ConvF16 {
  __device__ static float f(uint32_t b) { return f16f(b); }
};
struct ConvBF16 {
  __device__ static float f(uint32_t b) { return bf16f(b); }
};

template <int kBytes, class Conv>
struct TScalar {
  static constexpr int QK = 1, BYTES = kBytes, PARTS = 1, EPU = 1, NG = 1, ALIGN = kBytes;
  using Ctx = NoCtx;
  __device__ static Ctx init() { return {}; }
  __device__ static void lx(const float* xb, int, float* xv, float*) { xv[0] = __ldg(xb); }
  using Raw = uint32_t;
  __device__ static Raw load(const uint8_t* blk, int) { return kBytes == 4 ? ld_u32(blk) : ld_u16(blk); }
  __device__ static float dot(Ctx, Raw w, int, const float* xv, const float*) { return Conv::f(w) * xv[0]; }
  __device__ static void deq(Ctx, const uint8_t* blk, int, float* yb) { yb[0] = Conv::f(kBytes == 4 ? ld_u32(blk) : ld_u16(blk)); }
};
using TF32s = TScalar<4, ConvF32>;
using TF16s = TScalar<2, ConvF16>;
using TBF16s = TScalar<2, ConvBF16>;

// F16/BF16, eight values (one 16-byte load) per unit; needs cols % 8 == 0.
template <class Conv>
struct THalf8 {
  static constexpr int QK = 8, BYTES = 16, PARTS = 1, EPU = 8, NG = 1, ALIGN = 16;
  using Ctx = NoCtx;
  __device__ static Ctx init() { return {}; }
  __device__ static void lx(const float* xb, int, float* xv, float*) { load_x<8>(xb, xv); }
  using Raw = uint4;
  __device__ static Raw load(const uint8_t* blk, int) { return ld_u128(blk); }
  __device__ static float dot(Ctx, const Raw& a, int, const float* xv, const float*) {
    const uint32_t w[4] = {a.x, a.y, a.z, a.w};
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s = fmaf(Conv::f(w[i] & 0xffffu), xv[2 * i], s);
      s = fmaf(Conv::f(w[i] >> 16), xv[2 * i + 1], s);
    }
    return s;
  }
  __device__ static void deq(Ctx, const uint8_t* blk, int, float* yb) {
    for (int i = 0; i < 8; ++i) yb[i] = Conv::f(ld_u16(blk + 2 * i));
  }
};
using TF16v = THalf8<ConvF16>;
using TBF16v = THalf8<ConvBF16>;

// Q8_0: f16 d, 32 int8 q; x = d * q. One block per unit.
struct TQ8_0 {
  static constexpr int QK = 32, BYTES = 34, PARTS = 1, EPU = 32, NG = 1, ALIGN = 2;
  using Ctx = NoCtx;
  __device__ static Ctx init() { return {}; }
  __device__ static void lx(const float* xb, int, float* xv, float*) { load_x<32>(xb, xv); }
  struct Raw {
    uint32_t d, q[8];
  };
  __device__ static Raw load(const uint8_t* blk, int) {
    Raw r;
    r.d = ld_u16(blk);
#pragma unroll
    for (int w = 0; w < 8; ++w) r.q[w] = ld_u32_a2(blk + 2 + 4 * w);
    return r;
  }
  __device__ static float dot(Ctx, const Raw& raw, int, const float* xv, const float*) {
    const float d = f16f(raw.d);
    float s0 = 0.0f, s1 = 0.0f;  // two chains: shorter FMA dependency
#pragma unroll
    for (int w = 0; w < 8; w += 2) {
      const uint32_t q0 = raw.q[w] ^ 0x80808080u;
      const uint32_t q1 = raw.q[w + 1] ^ 0x80808080u;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        s0 = fmaf(sbyte_f(q0, k), xv[4 * w + k], s0);
        s1 = fmaf(sbyte_f(q1, k), xv[4 * w + 4 + k], s1);
      }
    }
    return d * (s0 + s1);
  }
  __device__ static void deq(Ctx, const uint8_t* blk, int, float* yb) {
    const float d = f16f(ld_u16(blk));
    for (int w = 0; w < 8; ++w) {
      const uint32_t q = ld_u32_a2(blk + 2 + 4 * w) ^ 0x80808080u;
      for (int k = 0; k < 4; ++k) yb[4 * w + k] = __fmul_rn(d, sbyte_f(q, k));
    }
  }
};

// Q2_K (84 bytes / 256 values): scales[16] (low nibble scale, high nibble min),
// qs[64] (2-bit), f16 d, f16 dmin; x = d*(sc&15)*q - dmin*(sc>>4). Value
// n*128 + j*32 + m (m < 32) is bits 2j of qs[n*32 + m], scale n*8 + 2j + m/16.
// Unit p (8 per block): n = p/4, bytes m = (p%4)*8 .. +8, all four shifts j:
// 4 runs of 8 values, each run in one scale group.
struct TQ2_K {
  static constexpr int QK = 256, BYTES = 84, PARTS = 8, EPU = 32, NG = 4, ALIGN = 4;
  using Ctx = NoCtx;
  __device__ static Ctx init() { return {}; }
  __device__ static int base(int p) { return (p >> 2) * 128 + (p & 3) * 8; }
  __device__ static void lx(const float* xb, int p, float* xv, float* xs) {
    const int b = base(p);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      load_x<8>(xb + b + 32 * j, xv + 8 * j);
      xs[j] = sum<8>(xv + 8 * j);
    }
  }
  // Scale byte of run j: bytes n*8 + 2j + h of scales, h = (p%4)/2.
  __device__ static uint32_t scale(uint32_t lo, uint32_t hi, int j, int h) {
    return ((j < 2 ? lo : hi) >> (8 * (2 * (j & 1) + h))) & 0xffu;
  }
  struct Raw {
    uint32_t dd, lo, hi, q0, q1;
  };
  __device__ static Raw load(const uint8_t* blk, int p) {
    const int n = p >> 2;
    return {ld_u32(blk + 80), ld_u32(blk + 8 * n), ld_u32(blk + 8 * n + 4), ld_u32(blk + 16 + 32 * n + 8 * (p & 3)),
            ld_u32(blk + 20 + 32 * n + 8 * (p & 3))};
  }
  __device__ static float dot(Ctx, const Raw& w, int p, const float* xv, const float* xs) {
    const int h = (p & 3) >> 1;
    const float d = f16f(w.dd & 0xffffu), dmin = f16f(w.dd >> 16);
    const uint32_t lo = w.lo, hi = w.hi, q0 = w.q0, q1 = w.q1;
    float r = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t t0 = (q0 >> (2 * j)) & 0x03030303u, t1 = (q1 >> (2 * j)) & 0x03030303u;
      float s = 0.0f;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        s = fmaf(byte_f(t0, k), xv[8 * j + k], s);
        s = fmaf(byte_f(t1, k), xv[8 * j + 4 + k], s);
      }
      const uint32_t sc = scale(lo, hi, j, h);
      r = fmaf(d * u_f(sc & 15u), s, r);
      r = fmaf(-dmin * u_f(sc >> 4), xs[j], r);
    }
    return r;
  }
  __device__ static void deq(Ctx, const uint8_t* blk, int p, float* yb) {
    const int n = p >> 2, h = (p & 3) >> 1, b = base(p);
    const float d = f16f(ld_u16(blk + 80)), dmin = f16f(ld_u16(blk + 82));
    const uint32_t lo = ld_u32(blk + 8 * n), hi = ld_u32(blk + 8 * n + 4);
    const uint32_t q0 = ld_u32(blk + 16 + 32 * n + 8 * (p & 3)), q1 = ld_u32(blk + 20 + 32 * n + 8 * (p & 3));
    for (int j = 0; j < 4; ++j) {
      const uint32_t sc = scale(lo, hi, j, h);
      const float dl = __fmul_rn(d, u_f(sc & 15u)), ml = __fmul_rn(dmin, u_f(sc >> 4));
      const uint32_t t0 = (q0 >> (2 * j)) & 0x03030303u, t1 = (q1 >> (2 * j)) & 0x03030303u;
      for (int k = 0; k < 4; ++k) {
        yb[b + 32 * j + k] = __fsub_rn(__fmul_rn(dl, byte_f(t0, k)), ml);
        yb[b + 32 * j + 4 + k] = __fsub_rn(__fmul_rn(dl, byte_f(t1, k)), ml);
      }
    }
  }
};

// Q4_K (144 bytes / 256 values): f16 d, f16 dmin, scales[12] (eight 6-bit
// scale/min pairs), qs[128] (4-bit). Group g (64 values) uses qs[32g..32g+32]:
// low nibbles are values 64g + l with pair 2g, high nibbles 64g + 32 + l with
// pair 2g+1. Unit p (8 per block) is qs[16p..16p+16]: one aligned 16-byte load.
struct TQ4_K {
  static constexpr int QK = 256, BYTES = 144, PARTS = 8, EPU = 32, NG = 2, ALIGN = 16;
  using Ctx = NoCtx;
  __device__ static Ctx init() { return {}; }
  __device__ static int base(int p) { return (p >> 1) * 64 + (p & 1) * 16; }
  __device__ static void lx(const float* xb, int p, float* xv, float* xs) {
    load_x<16>(xb + base(p), xv);
    load_x<16>(xb + base(p) + 32, xv + 16);
    xs[0] = sum<16>(xv);
    xs[1] = sum<16>(xv + 16);
  }
  // ggml's get_scale_min_k4 for pair j, from the three words of scales[].
  __device__ static void scale_min(const uint8_t* blk, int j, uint32_t& sc, uint32_t& m) {
    scale_min(ld_u32(blk + 4), ld_u32(blk + 8), ld_u32(blk + 12), j, sc, m);
  }
  __device__ static void scale_min(uint32_t s0, uint32_t s1, uint32_t s2, int j, uint32_t& sc, uint32_t& m) {
    const int sh = 8 * (j & 3);
    const uint32_t a = (s0 >> sh) & 0xffu, b = (s1 >> sh) & 0xffu;
    if (j < 4) {
      sc = a & 63u;
      m = b & 63u;
    } else {
      const uint32_t c = (s2 >> sh) & 0xffu;
      sc = (c & 15u) | ((a >> 6) << 4);
      m = (c >> 4) | ((b >> 6) << 4);
    }
  }
  struct Raw {
    uint32_t dd, s0, s1, s2;
    uint4 q;
  };
  __device__ static Raw load(const uint8_t* blk, int p) {
    return {ld_u32(blk), ld_u32(blk + 4), ld_u32(blk + 8), ld_u32(blk + 12), ld_u128(blk + 16 + 16 * p)};
  }
  __device__ static float dot(Ctx, const Raw& raw, int p, const float* xv, const float* xs) {
    const float d = f16f(raw.dd & 0xffffu), dmin = f16f(raw.dd >> 16);
    const uint32_t w[4] = {raw.q.x, raw.q.y, raw.q.z, raw.q.w};
    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t lo = w[i] & 0x0f0f0f0fu, hi = (w[i] >> 4) & 0x0f0f0f0fu;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        s0 = fmaf(byte_f(lo, k), xv[4 * i + k], s0);
        s1 = fmaf(byte_f(hi, k), xv[16 + 4 * i + k], s1);
      }
    }
    uint32_t sc0, m0, sc1, m1;
    scale_min(raw.s0, raw.s1, raw.s2, 2 * (p >> 1), sc0, m0);
    scale_min(raw.s0, raw.s1, raw.s2, 2 * (p >> 1) + 1, sc1, m1);
    float r = d * u_f(sc0) * s0;
    r = fmaf(d * u_f(sc1), s1, r);
    r = fmaf(-dmin * u_f(m0), xs[0], r);
    return fmaf(-dmin * u_f(m1), xs[1], r);
  }
  __device__ static void deq(Ctx, const uint8_t* blk, int p, float* yb) {
    const float d = f16f(ld_u16(blk)), dmin = f16f(ld_u16(blk + 2));
    uint32_t sc0, m0, sc1, m1;
    scale_min(blk, 2 * (p >> 1), sc0, m0);
    scale_min(blk, 2 * (p >> 1) + 1, sc1, m1);
    const float d1 = __fmul_rn(d, u_f(sc0)), mm1 = __fmul_rn(dmin, u_f(m0));
    const float d2 = __fmul_rn(d, u_f(sc1)), mm2 = __fmul_rn(dmin, u_f(m1));
    const int b = base(p);
    for (int i = 0; i < 16; ++i) {
      const uint32_t q = blk[16 + 16 * p + i];
      yb[b + i] = __fsub_rn(__fmul_rn(d1, u_f(q & 15u)), mm1);
      yb[b + 32 + i] = __fsub_rn(__fmul_rn(d2, u_f(q >> 4)), mm2);
    }
  }
};

// IQ2_XXS (66 bytes / 256 values): f16 d, then per 32 values two words: word 0
// holds four indices into a 256-entry grid of 8 magnitudes, word 1 four 7-bit
// sign codes (the 8th sign makes the parity even) and a 4-bit scale s:
// x = d * (0.5 + s) * 0.25 * grid * sign. One unit per 32 values; the grid is
// copied into shared memory per thread block (random lookups; constant memory
// would serialise them).
__device__ uint64_t g_iq2xxs_grid[256];

struct TIQ2_XXS {
  static constexpr int QK = 256, BYTES = 66, PARTS = 8, EPU = 32, NG = 1, ALIGN = 2;
  struct Ctx {
    const uint64_t* grid;
  };
  __device__ static Ctx init() {
    __shared__ uint64_t grid[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) grid[i] = g_iq2xxs_grid[i];
    __syncthreads();
    return {grid};
  }
  __device__ static void lx(const float* xb, int p, float* xv, float*) { load_x<32>(xb + 32 * p, xv); }
  // Sign byte for code c: bit 7 completes even parity (ggml's ksigns_iq2xs).
  __device__ static uint32_t signs(uint32_t c) { return c | ((__popc(c) & 1u) << 7); }
  __device__ static float db(const uint8_t* blk, uint32_t aux1) {
    const float d = f16f(ld_u16(blk));
    return __fmul_rn(__fmul_rn(d, __fadd_rn(0.5f, u_f(aux1 >> 28))), 0.25f);
  }
  struct Raw {
    uint32_t d, aux0, aux1;
  };
  __device__ static Raw load(const uint8_t* blk, int p) {
    return {ld_u16(blk), ld_u32_a2(blk + 2 + 8 * p), ld_u32_a2(blk + 6 + 8 * p)};
  }
  __device__ static float dot(Ctx c, const Raw& w, int, const float* xv, const float*) {
    float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const uint64_t g = c.grid[(w.aux0 >> (8 * l)) & 0xffu];
      // Sign bit k of the code moved to bit 31, where it flips x's sign: exact,
      // one shift + one LOP3 per value instead of a multiply by +-1.
      const uint32_t sg = signs((w.aux1 >> (7 * l)) & 127u) << 24;
      const uint32_t glo = static_cast<uint32_t>(g), ghi = static_cast<uint32_t>(g >> 32);
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float x0 = __uint_as_float(__float_as_uint(xv[8 * l + k]) ^ ((sg << (7 - k)) & 0x80000000u));
        const float x1 = __uint_as_float(__float_as_uint(xv[8 * l + 4 + k]) ^ ((sg << (3 - k)) & 0x80000000u));
        s0 = fmaf(byte_f(glo, k), x0, s0);
        s1 = fmaf(byte_f(ghi, k), x1, s1);
      }
    }
    const float d = f16f(w.d);
    return __fmul_rn(__fmul_rn(d, 0.5f + u_f(w.aux1 >> 28)), 0.25f) * (s0 + s1);
  }
  __device__ static void deq(Ctx c, const uint8_t* blk, int p, float* yb) {
    const uint32_t aux0 = ld_u32_a2(blk + 2 + 8 * p), aux1 = ld_u32_a2(blk + 6 + 8 * p);
    const float dbv = db(blk, aux1);
    for (int l = 0; l < 4; ++l) {
      const uint64_t g = c.grid[(aux0 >> (8 * l)) & 0xffu];
      const uint32_t sg = signs((aux1 >> (7 * l)) & 127u);
      for (int k = 0; k < 8; ++k) {
        const float v = __fmul_rn(dbv, u_f(static_cast<uint32_t>(g >> (8 * k)) & 0xffu));
        yb[32 * p + 8 * l + k] = (sg >> k) & 1u ? -v : v;
      }
    }
  }
};

// ---- kernels -------------------------------------------------------------------

template <class T, int R>
__global__ void __launch_bounds__(kThreads) matvec_kernel(const uint8_t* __restrict__ w, int64_t row_bytes, int64_t rows,
                                                          int64_t nblocks, const float* __restrict__ x,
                                                          float* __restrict__ y, const int32_t* __restrict__ index,
                                                          int64_t index_stride) {
  if (!index) kc::prefetch_warp_rows<R, kThreads>(w, row_bytes, rows);
  const typename T::Ctx ctx = T::init();  // before any return: it may __syncthreads
  pdl_enter();
  // Indexed form (MoE experts): the matrix is chosen by a value in device
  // memory, so routing never goes back to the host.
  if (index) w += static_cast<int64_t>(__ldg(index)) * index_stride;
  kc::warp_rows<T, R, kThreads, kUnroll>(
      w, row_bytes, rows, nblocks * T::PARTS, y,
      [&](const typename T::Raw(&raw)[R], int64_t b, int p, float(&acc)[R]) {
        float xv[T::EPU], xs[T::NG];
        T::lx(x + b * T::QK, p, xv, xs);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] += T::dot(ctx, raw[r], p, xv, xs);
      });
}

// matvec_list: matrix blockIdx.y of the list, one weight row per warp, each
// row summed as matvec_kernel sums it; blocks past a shorter matrix's rows
// return at once.
struct FloatMatList {
  const uint8_t* w[kMatvecListMax];
  int64_t rows[kMatvecListMax];
  float* y[kMatvecListMax];
};

template <class T>
__global__ void __launch_bounds__(kThreads)
    matvec_list_kernel(FloatMatList L, int64_t row_bytes, int64_t nblocks, const float* __restrict__ x) {
  const unsigned m = blockIdx.y;
  kc::prefetch_warp_rows<1, kThreads>(L.w[m], row_bytes, L.rows[m]);
  const typename T::Ctx ctx = T::init();  // before any return: it may __syncthreads
  pdl_enter();
  kc::warp_rows<T, 1, kThreads, kUnroll>(L.w[m], row_bytes, L.rows[m], nblocks * T::PARTS, L.y[m],
                                         [&](const typename T::Raw(&raw)[1], int64_t b, int p, float(&acc)[1]) {
                                           float xv[T::EPU], xs[T::NG];
                                           T::lx(x + b * T::QK, p, xv, xs);
                                           acc[0] += T::dot(ctx, raw[0], p, xv, xs);
                                         });
}

// A whole block per row: for matrices with few, long rows (the HC mixers: a
// few dozen rows of 4 x n_embd), where one warp per row would leave most of
// the GPU idle and each warp latency-bound.
constexpr int kRowBlock = 256;

// Thread tid's share (units tid, tid + kRowBlock, ...) of one weight row
// [wr, wr + nblocks blocks) times x, summed in unit order.
template <class T>
__device__ inline float row_block_units(const typename T::Ctx& ctx, const uint8_t* __restrict__ wr, int64_t nblocks,
                                        const float* __restrict__ x, int tid) {
  const int64_t nunits = nblocks * T::PARTS;
  float acc = 0.0f;
  for (int64_t u0 = tid; u0 < nunits; u0 += kRowBlock * kUnroll) {
    typename T::Raw raw[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t u = u0 + kRowBlock * k;
      if (u < nunits) raw[k] = T::load(wr + u / T::PARTS * T::BYTES, static_cast<int>(u % T::PARTS));
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t u = u0 + kRowBlock * k;
      if (u < nunits) {
        const int64_t b = u / T::PARTS;
        const int p = static_cast<int>(u % T::PARTS);
        float xv[T::EPU], xs[T::NG];
        T::lx(x + b * T::QK, p, xv, xs);
        acc += T::dot(ctx, raw[k], p, xv, xs);
      }
    }
  }
  return acc;
}

// Thread tid < kRowBlock's eighth of weight row wr asked of L2 (each warp a
// contiguous stretch), before pdl_enter.
__device__ __forceinline__ void prefetch_row_block(const uint8_t* wr, int64_t row_bytes, int tid) {
  const int64_t part = row_bytes / (kRowBlock / 32);
  prefetch_l2(wr + (tid >> 5) * part, part, tid & 31);
}

template <class T>
__global__ void __launch_bounds__(kRowBlock) matvec_row_block_kernel(const uint8_t* __restrict__ w, int64_t row_bytes,
                                                                     int64_t nblocks, const float* __restrict__ x,
                                                                     float* __restrict__ y,
                                                                     const int32_t* __restrict__ index,
                                                                     int64_t index_stride) {
  if (!index)
    prefetch_row_block(w + static_cast<int64_t>(blockIdx.x) * row_bytes, row_bytes, static_cast<int>(threadIdx.x));
  const typename T::Ctx ctx = T::init();
  pdl_enter();
  if (index) w += static_cast<int64_t>(__ldg(index)) * index_stride;
  float acc = row_block_units<T>(ctx, w + static_cast<int64_t>(blockIdx.x) * row_bytes, nblocks, x,
                                 static_cast<int>(threadIdx.x));
  __shared__ float part[kRowBlock / 32];
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float v = 0.0f;
    for (int i = 0; i < kRowBlock / 32; ++i) v += part[i];
    y[blockIdx.x] = v;
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) dequant_kernel(const uint8_t* __restrict__ src, float* __restrict__ dst,
                                                           int64_t nunits) {
  pdl_enter();
  const typename T::Ctx ctx = T::init();
  const int64_t u = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (u >= nunits) return;
  const int64_t b = u / T::PARTS;
  T::deq(ctx, src + b * T::BYTES, static_cast<int>(u % T::PARTS), dst + b * T::QK);
}

// ---- host dispatch -------------------------------------------------------------

unsigned grid_for(int64_t threads) { return kc::grid_for(threads, kThreads); }
using kc::aligned;

template <class T>
void mv(int rpw, GgmlType t, const void* w, int64_t rows, int64_t cols, const float* x, float* y, cudaStream_t s,
        const int32_t* index = nullptr, int64_t index_stride = 0) {
  if (cols % T::QK) fail_shape("matvec", t, cols, T::QK);
  if (!aligned(w, T::ALIGN)) fail_align("matvec weights", t, w, T::ALIGN);
  if (!aligned(x, 16)) fail_align("matvec input", t, x, 16);
  if (index && index_stride % T::ALIGN) fail_align("matvec matrix stride", t, reinterpret_cast<const void*>(index_stride), T::ALIGN);
  if (rows <= 0 || cols <= 0) return;
  const auto* wb = static_cast<const uint8_t*>(w);
  const int64_t rb = cols / T::QK * T::BYTES, nb = cols / T::QK;
  switch (rpw) {
    case 1:
      ds4::cuda::launch(&matvec_kernel<T, 1>, grid_for(rows * 32), kThreads, 0, s, wb, rb, rows, nb, x, y, index,
                        index_stride);
      break;
    case 2:
      ds4::cuda::launch(&matvec_kernel<T, 2>, grid_for((rows + 1) / 2 * 32), kThreads, 0, s, wb, rb, rows, nb, x, y,
                        index, index_stride);
      break;
    case 4:
      ds4::cuda::launch(&matvec_kernel<T, 4>, grid_for((rows + 3) / 4 * 32), kThreads, 0, s, wb, rb, rows, nb, x, y,
                        index, index_stride);
      break;
    case detail::kBlockPerRow:
      if (rows > 0x7fffffff) fail_shape("matvec (too many rows)", t, rows, 1);
      ds4::cuda::launch(&matvec_row_block_kernel<T>, static_cast<unsigned>(rows), kRowBlock, 0, s, wb, rb, nb, x, y,
                        index, index_stride);
      break;
    default: fail_rows_per_warp(rpw);
  }
  DS4_CUDA_CHECK_LAUNCH("matvec_kernel");
}

// ---- the HC pre-mix, fused (hc_pre_fused) ------------------------------------
// A decode row's pre-mix reads a few dozen long mixer rows (24 x 16384 on
// Flash) and then runs a serial tail (Sinkhorn, collapse). One block per
// mixer row left most SMs idle and put the norm's sum, the dot and the tail
// in series (22 us a launch). Here the columns are cut into slices of
// kHcSliceCols: block (s, r) forms, over slice s of row r, the sum of
// squares (double) and the dot of every mixer row with the raw values; the
// norm's scale is a common factor of the dot, so it is applied once at the
// end (mix_j = inv * sum_c W_jc x_c). The last block of row r to finish (a
// counter, after a fence) adds the slices' partials in slice order, takes
// the split on one warp and the collapse on all threads. Every sum has a
// fixed order, so a row's result depends on nothing but the row: decode and
// any chunking of narrow passes agree bit for bit. Against the separate
// kernels (norm, then dot of W with the normed row) the dot is summed in
// another order: equal within float rounding.
constexpr int kHcThreads = 256;
constexpr int kHcSliceCols = 256;
constexpr int kHcMaxMix = 64;
constexpr int64_t kHcMaxScratchBytes = 40 * 1024;  // the tail stages a row's partials in shared memory

template <class T>
__global__ void __launch_bounds__(kHcThreads) hc_pre_kernel(const uint8_t* __restrict__ w, int64_t row_bytes,
                                                           int mix_rows, int slices, HcPreArgs a) {
  static_assert(kHcSliceCols % T::QK == 0 && T::PARTS == 1, "a slice holds whole units");
  const int s = static_cast<int>(blockIdx.x), r = static_cast<int>(blockIdx.y), tid = static_cast<int>(threadIdx.x);
  const int warp = tid >> 5, lane = tid & 31, nwarps = kHcThreads / 32;
  const int64_t n = a.hc * a.D, c0 = int64_t{s} * kHcSliceCols;
  const int64_t cols = n - c0 < kHcSliceCols ? n - c0 : kHcSliceCols;
  const int64_t unit0 = c0 / T::QK, units = cols / T::QK;
  const int64_t slice_bytes = units * T::BYTES;
  for (int j = warp; j < mix_rows; j += nwarps) prefetch_l2(w + j * row_bytes + unit0 * T::BYTES, slice_bytes, lane);
  const typename T::Ctx ctx = T::init();
  pdl_enter();
  const float* x = a.X + r * n;
  // partials of row r: [slices][mix_rows + 1] doubles, the dots then the sum of squares
  double* part = a.part + static_cast<int64_t>(r) * slices * (mix_rows + 1);
  double ss = 0;
  for (int64_t c = c0 + tid; c < c0 + cols; c += kHcThreads) ss += static_cast<double>(x[c]) * x[c];
  ss = rm::block_sum(ss);
  if (tid == 0) part[int64_t{s} * (mix_rows + 1) + mix_rows] = ss;
  for (int j = warp; j < mix_rows; j += nwarps) {
    const uint8_t* wr = w + j * row_bytes;
    float acc = 0.0f;
    for (int64_t u = lane; u < units; u += 32) {
      const typename T::Raw raw = T::load(wr + (unit0 + u) * T::BYTES, 0);
      float xv[T::EPU], xs[T::NG];
      T::lx(x + (unit0 + u) * T::QK, 0, xv, xs);
      acc += T::dot(ctx, raw, 0, xv, xs);
    }
    acc = warp_sum(acc);
    if (lane == 0) part[int64_t{s} * (mix_rows + 1) + j] = acc;
  }
  __threadfence();  // each thread's partials are visible before the count says so
  __shared__ bool last;
  __syncthreads();
  if (tid == 0) {
    const unsigned done = atomicAdd(a.counters + r, 1u);
    last = done == gridDim.x - 1;
    if (last) a.counters[r] = 0;  // every block of the row has counted: ready for the next launch
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  // The tail: stage the partials (one load each, all in flight), then each
  // quantity's sum by one warp: lane l adds slices l, l + 32, ... in order,
  // then a fixed shuffle tree.
  extern __shared__ double staged[];  // [slices][mix_rows + 1]
  const int64_t total = int64_t{slices} * (mix_rows + 1);
  for (int64_t i = tid; i < total; i += kHcThreads) staged[i] = __ldcg(part + i);
  __shared__ double sums[kHcMaxMix + 1];
  __syncthreads();
  for (int q = warp; q <= mix_rows; q += nwarps) {
    double v = 0;
    for (int k = lane; k < slices; k += 32) v += staged[int64_t{k} * (mix_rows + 1) + q];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) sums[q] = v;
  }
  __syncthreads();
  __shared__ float m[kHcMaxMix];
  const double inv = 1.0 / sqrt(sums[mix_rows] / static_cast<double>(n) + a.rms_eps);
  if (tid < mix_rows) {
    m[tid] = static_cast<float>(sums[tid] * inv);
    a.mix[static_cast<int64_t>(r) * mix_rows + tid] = m[tid];
  }
  __syncthreads();
  float* pre = a.pre + static_cast<int64_t>(r) * a.hc;
  if (tid < 32)
    rm::hc_split_warp_row(m, a.scale, a.base, a.hc, a.hc_eps, a.iters, pre, a.post + static_cast<int64_t>(r) * a.hc,
                          a.comb + static_cast<int64_t>(r) * a.hc * a.hc, tid);
  __syncthreads();
  for (int64_t d = tid; d < a.D; d += kHcThreads) a.y[r * a.D + d] = rm::hc_collapse_at(x, pre, a.hc, a.D, d);
}

int64_t hc_pre_slices(int64_t hc, int64_t D) { return (hc * D + kHcSliceCols - 1) / kHcSliceCols; }

template <class T>
void hc_pre_launch(GgmlType t, const void* w, int64_t mix_rows, int64_t rows, const HcPreArgs& a, cudaStream_t s) {
  const int64_t cols = a.hc * a.D, slices = hc_pre_slices(a.hc, a.D);
  if (cols % T::QK) fail_shape("hc_pre_fused", t, cols, T::QK);
  if (!aligned(w, T::ALIGN)) fail_align("hc_pre_fused weights", t, w, T::ALIGN);
  if (!aligned(a.X, 16)) fail_align("hc_pre_fused input", t, a.X, 16);
  if (mix_rows > kHcMaxMix || a.part_rows <= 0 || a.part_rows > 65535) fail_shape("hc_pre_fused (mixer rows, scratch rows)", t, mix_rows,
                                                           a.part_rows);
  const int64_t staged = slices * (mix_rows + 1) * static_cast<int64_t>(sizeof(double));
  if (staged > kHcMaxScratchBytes) fail_shape("hc_pre_fused (row too long)", t, cols, mix_rows);
  if (rows <= 0) return;
  // Groups of at most part_rows rows (the scratch and the counters hold that many).
  for (int64_t r0 = 0; r0 < rows; r0 += a.part_rows) {
    const int64_t g = rows - r0 < a.part_rows ? rows - r0 : a.part_rows;
    HcPreArgs b = a;
    b.X += r0 * cols;
    b.mix += r0 * mix_rows;
    b.pre += r0 * a.hc;
    b.post += r0 * a.hc;
    b.comb += r0 * a.hc * a.hc;
    b.y += r0 * a.D;
    ds4::cuda::launch(&hc_pre_kernel<T>, dim3(static_cast<unsigned>(slices), static_cast<unsigned>(g)), kHcThreads,
                      static_cast<size_t>(staged), s, static_cast<const uint8_t*>(w), cols / T::QK * T::BYTES,
                      static_cast<int>(mix_rows), static_cast<int>(slices), b);
    DS4_CUDA_CHECK_LAUNCH("hc_pre_kernel");
  }
}

template <class T>
void mv_list(GgmlType t, const MatvecTarget* targets, int n, int64_t cols, const float* x, cudaStream_t s) {
  if (n < 1 || n > kMatvecListMax) fail_shape("matvec_list targets", t, n, 1);
  if (cols % T::QK) fail_shape("matvec_list", t, cols, T::QK);
  if (!aligned(x, 16)) fail_align("matvec_list input", t, x, 16);
  FloatMatList L{};
  int64_t most = 0;
  for (int i = 0; i < n; ++i) {
    if (!aligned(targets[i].w, T::ALIGN)) fail_align("matvec_list weights", t, targets[i].w, T::ALIGN);
    L.w[i] = static_cast<const uint8_t*>(targets[i].w);
    L.rows[i] = targets[i].rows;
    L.y[i] = targets[i].y;
    most = targets[i].rows > most ? targets[i].rows : most;
  }
  if (most <= 0 || cols <= 0) return;
  ds4::cuda::launch(&matvec_list_kernel<T>, dim3(grid_for(most * 32), static_cast<unsigned>(n)), kThreads, 0, s, L,
                    cols / T::QK * T::BYTES, cols / T::QK, x);
  DS4_CUDA_CHECK_LAUNCH("matvec_list_kernel");
}

template <class T>
void dq(GgmlType t, const void* src, float* dst, int64_t n, cudaStream_t s) {
  if (n % T::QK) fail_shape("dequantize", t, n, T::QK);
  if (!aligned(src, T::ALIGN)) fail_align("dequantize source", t, src, T::ALIGN);
  if (n <= 0) return;
  const int64_t nunits = n / T::QK * T::PARTS;
  ds4::cuda::launch(&dequant_kernel<T>, grid_for(nunits), kThreads, 0, s, static_cast<const uint8_t*>(src), dst,
                    nunits);
  DS4_CUDA_CHECK_LAUNCH("dequant_kernel");
}

struct Iq2TablesTag {};

void upload_iq2_tables() {
  kc::once_per_device<Iq2TablesTag>([] {
    // The quant module's table (generated from gguf-py): grid[i][k] is byte k
    // of entry i, i.e. the little-endian uint64 this kernel indexes.
    static_assert(sizeof(quant::iq2xxs_grid) == 256 * sizeof(uint64_t));
    DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_iq2xxs_grid, quant::iq2xxs_grid, sizeof(quant::iq2xxs_grid)));
  });
}

// Default rows per warp, from bench_cuda_matvec on an H100 (4096x2048,
// 2048x4096, 4096x32768): rows per warp share x loads and integer work, which
// the quantized types need (they are issue-bound, not memory-bound), but fewer
// warps hide less latency, which the float types need more.
int default_rows_per_warp(GgmlType t, int64_t rows, int64_t cols) {
  // Few long rows: a block per row (measured with ncu on the Flash HC mixer,
  // 24 x 16384 F16: 18.7 us with a warp per row).
  if (rows < 128 && cols >= 4096) return detail::kBlockPerRow;
  switch (t) {
    case GgmlType::F32: return 1;
    case GgmlType::F16:
    case GgmlType::BF16: return cols >= 8192 || rows < 2048 ? 1 : 2;
    case GgmlType::Q8_0: return rows >= 1024 ? 4 : 2;
    default: return rows >= 4096 ? 4 : 2;
  }
}

}  // namespace

void prepare_tables() {
  upload_iq2_tables();
  detail::upload_q8_tables();
}

bool quant_supported(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q2_K:
    case GgmlType::Q4_K:
    case GgmlType::IQ2_XXS: return true;
    default: return false;
  }
}

static void mv_any(int rpw, GgmlType t, const void* w, int64_t rows, int64_t cols, const float* x, float* y, cudaStream_t s,
            const int32_t* ix, int64_t ixs) {
  // The 16-byte vector forms need every matrix aligned, so an indexed call
  // also needs its stride to be a multiple of 16.
  const bool v16 = cols % 8 == 0 && aligned(w, 16) && ixs % 16 == 0;
  switch (t) {
    case GgmlType::F32:
      if (v16) return mv<TF32v>(rpw, t, w, rows, cols, x, y, s, ix, ixs);
      return mv<TF32s>(rpw, t, w, rows, cols, x, y, s, ix, ixs);
    case GgmlType::F16:
      if (v16) return mv<TF16v>(rpw, t, w, rows, cols, x, y, s, ix, ixs);
      return mv<TF16s>(rpw, t, w, rows, cols, x, y, s, ix, ixs);
    case GgmlType::BF16:
      if (v16) return mv<TBF16v>(rpw, t, w, rows, cols, x, y, s, ix, ixs);
      return mv<TBF16s>(rpw, t, w, rows, cols, x, y, s, ix, ixs);
    case GgmlType::Q8_0: return mv<TQ8_0>(rpw, t, w, rows, cols, x, y, s, ix, ixs);
    case GgmlType::Q2_K: return mv<TQ2_K>(rpw, t, w, rows, cols, x, y, s, ix, ixs);
    case GgmlType::Q4_K: return mv<TQ4_K>(rpw, t, w, rows, cols, x, y, s, ix, ixs);
    case GgmlType::IQ2_XXS: upload_iq2_tables(); return mv<TIQ2_XXS>(rpw, t, w, rows, cols, x, y, s, ix, ixs);
    default: fail_unsupported("matvec", t);
  }
}

bool matvec_list_ok(GgmlType t, int64_t rows, int64_t cols) {
  return (t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16) &&
         default_rows_per_warp(t, rows, cols) != detail::kBlockPerRow;
}

void matvec_list(GgmlType t, const MatvecTarget* targets, int n, int64_t cols, const float* x, cudaStream_t s) {
  // matvec chooses the 16-byte form per matrix (cols % 8 == 0 and aligned
  // weights); a list whose matrices would not all take the same form goes
  // one matvec each, so every result stays matvec's.
  int al = 0;
  for (int i = 0; i < n; ++i) al += aligned(targets[i].w, 16) ? 1 : 0;
  if (cols % 8 == 0 && al != 0 && al != n) {
    for (int i = 0; i < n; ++i) matvec(t, targets[i].w, targets[i].rows, cols, x, targets[i].y, s);
    return;
  }
  const bool v16 = cols % 8 == 0 && al == n;
  switch (t) {
    case GgmlType::F32: return v16 ? mv_list<TF32v>(t, targets, n, cols, x, s) : mv_list<TF32s>(t, targets, n, cols, x, s);
    case GgmlType::F16: return v16 ? mv_list<TF16v>(t, targets, n, cols, x, s) : mv_list<TF16s>(t, targets, n, cols, x, s);
    case GgmlType::BF16:
      return v16 ? mv_list<TBF16v>(t, targets, n, cols, x, s) : mv_list<TBF16s>(t, targets, n, cols, x, s);
    default: fail_unsupported("matvec_list", t);
  }
}

int64_t hc_pre_scratch_bytes(int64_t hc, int64_t D, int64_t mix_rows, int64_t rows) {
  return rows * hc_pre_slices(hc, D) * (mix_rows + 1) * static_cast<int64_t>(sizeof(double));
}

bool hc_pre_fusable(GgmlType t, int hc) {
  return hc * hc <= 32 && (2 + hc) * hc <= kHcMaxMix &&
         (t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16);
}

void hc_pre_fused(GgmlType t, const void* w, int64_t mix_rows, int64_t rows, const HcPreArgs& a, cudaStream_t s) {
  if (!hc_pre_fusable(t, a.hc)) fail_unsupported("hc_pre_fused", t);
  const bool v16 = (a.hc * a.D) % 8 == 0 && aligned(w, 16);
  switch (t) {
    case GgmlType::F32: return v16 ? hc_pre_launch<TF32v>(t, w, mix_rows, rows, a, s)
                                   : hc_pre_launch<TF32s>(t, w, mix_rows, rows, a, s);
    case GgmlType::F16: return v16 ? hc_pre_launch<TF16v>(t, w, mix_rows, rows, a, s)
                                   : hc_pre_launch<TF16s>(t, w, mix_rows, rows, a, s);
    default: return v16 ? hc_pre_launch<TBF16v>(t, w, mix_rows, rows, a, s)
                        : hc_pre_launch<TBF16s>(t, w, mix_rows, rows, a, s);
  }
}

namespace detail {
void matvec_rows_per_warp(int rpw, GgmlType t, const void* w, int64_t rows, int64_t cols, const float* x, float* y,
                          cudaStream_t s) {
  mv_any(rpw, t, w, rows, cols, x, y, s, nullptr, 0);
}
}  // namespace detail

void matvec_indexed(GgmlType t, const void* base, int64_t stride_bytes, const int32_t* d_index, int64_t rows, int64_t cols,
                    const float* x, float* y, cudaStream_t s) {
  mv_any(default_rows_per_warp(t, rows, cols), t, base, rows, cols, x, y, s, d_index, stride_bytes);
}

void matvec(GgmlType t, const void* w, int64_t rows, int64_t cols, const float* x, float* y, cudaStream_t s) {
  detail::matvec_rows_per_warp(default_rows_per_warp(t, rows, cols), t, w, rows, cols, x, y, s);
}

void dequantize_device(GgmlType t, const void* src, float* dst, int64_t n, cudaStream_t s) {
  switch (t) {
    case GgmlType::F32:
      if (n % 8 == 0 && aligned(src, 16)) return dq<TF32v>(t, src, dst, n, s);
      return dq<TF32s>(t, src, dst, n, s);
    case GgmlType::F16:
      if (n % 8 == 0 && aligned(src, 16)) return dq<TF16v>(t, src, dst, n, s);
      return dq<TF16s>(t, src, dst, n, s);
    case GgmlType::BF16:
      if (n % 8 == 0 && aligned(src, 16)) return dq<TBF16v>(t, src, dst, n, s);
      return dq<TBF16s>(t, src, dst, n, s);
    case GgmlType::Q8_0: return dq<TQ8_0>(t, src, dst, n, s);
    case GgmlType::Q2_K: return dq<TQ2_K>(t, src, dst, n, s);
    case GgmlType::Q4_K: return dq<TQ4_K>(t, src, dst, n, s);
    case GgmlType::IQ2_XXS: upload_iq2_tables(); return dq<TIQ2_XXS>(t, src, dst, n, s);
    default: fail_unsupported("dequantize", t);
  }
}

}  // namespace ds4::cuda
