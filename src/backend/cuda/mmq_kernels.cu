// Tensor-core products of quantized weights with many quantized activations:
// the projections and experts of a prefill chunk or a wide batch
// (docs/cuda-backend.md, "Prefill products").
//
// The integers are the matvec kernels' (q8_kernels.cu): the activation is
// quantized as the CPU quantizes it (Q8_0 for Q8_0 weights, Q8_K for the K and
// IQ types) and each weight block is expanded to the int8 values the CPU's
// integer dot multiplies. What changes is who multiplies: int8 MMA
// (mma.sync m16n8k32, sm_80 and later) forms 16 weight rows x 8 tokens x 32
// values per instruction, where __dp4a forms 4 products per thread.
//
// Block: 4 warps, 64 weight rows (16 per warp) by BN tokens (8 to 64). One
// k step is 256 values: one block of the K/IQ types, eight of Q8_0. Per step
// the block expands its 64 weight rows into shared int8 (with the per-32
// integer scales and the block's float scales beside them), copies its
// tokens' activation bytes and scales, and each warp runs 8 slices of 32
// values through the MMA. The float terms follow the CPU's forms:
//   Q8_0     per 32 values: f16(dw) * da * float(isum)
//   IQ2_XXS  per 256: f16(d) * da * 0.125 * float(sum of (2 ls + 1) * isum_32)
//   Q2_K     per 256: da * f16(d) * float(isum) - da * f16(dmin) * float(summ),
//            with the 4-bit scale folded into the 2-bit values (at most 45)
//   Q4_K     the same, with the 6-bit scales applied per 32 after the MMA.
// Integer sums are exact; K/IQ blocks sum their integers over the whole
// 256 values before the one float term, so a result differs from the
// matvec's (which forms a float term per unit) by rounding only.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_fail.h"
#include "backend/cuda/cuda_quant.h"
#include "backend/cuda/kernel_common.cuh"
#include "backend/cuda/launch.cuh"
#include "quant/iq_tables.h"

namespace ds4::cuda {

namespace {

using kc::f16f;
using kc::ld_u128;
using kc::ld_u16;
using kc::ld_u32;

constexpr int kThreads = 128;
constexpr int kBM = 64;           // weight rows per block: 4 warps x 16
constexpr int kBK = 256;          // values per k step
constexpr int kPitch = kBK + 16;  // shared row pitch in bytes: fragment loads hit 32 distinct banks
constexpr int kMaxExperts = 4096;

__host__ __device__ inline size_t align16(size_t n) { return (n + 15) / 16 * 16; }
size_t align256(size_t n) { return (n + 255) / 256 * 256; }

__device__ uint64_t g_grid[256];  // IQ2_XXS grid, 8 magnitudes per entry
__device__ uint64_t g_sign[128];  // 0xff in each byte whose value is negative

template <int BN>
struct Smem {
  int8_t w[kBM][kPitch];  // weight rows, expanded to int8
  int8_t a[BN][kPitch];   // activation quants
  float wf[kBM][8];       // Q8_0: scale of each block; K/IQ: [0] d, [1] dmin
  int8_t wi[kBM][16];     // K/IQ integer scales (IQ2_XXS, Q4_K) and mins (Q2_K, Q4_K)
  float ad[BN][8];        // activation scale per 32 (Q8_0) or per 256 ([0], Q8_K)
  int32_t as[BN][16];     // Q8_K sums of each 16 activation quants
  const uint8_t* act[BN]; // each token's activation
  float* y[BN];           // each token's output (null: a padding token)
};

__device__ __forceinline__ uint32_t lds32(const int8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }
__device__ __forceinline__ void sts32(int8_t* p, uint32_t v) { *reinterpret_cast<uint32_t*>(p) = v; }

// d += a (16 x 32, rows) * b (32 x 8, columns), int8 in, int32 accumulate.
// Thread (g = lane / 4, q = lane % 4) holds a: rows g, g+8 at k 4q and 16+4q;
// b: column g at k 4q and 16+4q; d: rows g, g+8 at columns 2q, 2q+1.
__device__ __forceinline__ void mma_s8(int (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// ---- weight types: expand slice s (32 values) of k step kb of one row ------------
// kind: how a slice's integer sum becomes float (see the file comment).
enum class Kind { per32, scaled, folded };

struct NoCtx {};

struct MQ8_0 {
  static constexpr int QK = 32, BYTES = 34, AQK = 32, ALIGN = 2;
  static constexpr Kind kind = Kind::per32;
  using Ctx = NoCtx;
  __device__ static Ctx init() { return {}; }
  __device__ static void unpack(Ctx, const uint8_t* row, int64_t kb, int s, int8_t* dst, float* wf, int8_t*) {
    // Blocks are 2-byte aligned: read the aligned words that cover the block.
    const uint8_t* blk = row + (kb * 8 + s) * BYTES;
    const uintptr_t addr = reinterpret_cast<uintptr_t>(blk);
    const auto* w = reinterpret_cast<const uint8_t*>(addr & ~uintptr_t{3});
    const bool odd = (addr & 3) != 0;
    uint32_t v[9];
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = ld_u32(w + 4 * k);
    v[8] = ld_u16(w + 32) | (odd ? ld_u16(w + 34) << 16 : 0u);
    wf[s] = f16f(odd ? v[0] >> 16 : v[0] & 0xffffu);
#pragma unroll
    for (int k = 0; k < 8; ++k) sts32(dst + 4 * k, odd ? v[k + 1] : __funnelshift_r(v[k], v[k + 1], 16));
  }
};

struct MIQ2_XXS {
  static constexpr int QK = 256, BYTES = 66, AQK = 256, ALIGN = 2;
  static constexpr Kind kind = Kind::scaled;
  struct Ctx {
    const uint64_t* grid;
    const uint64_t* sign;
  };
  __device__ static Ctx init() {
    __shared__ uint64_t grid[256];
    __shared__ uint64_t sign[128];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) grid[i] = g_grid[i];
    for (int i = threadIdx.x; i < 128; i += blockDim.x) sign[i] = g_sign[i];
    __syncthreads();
    return {grid, sign};
  }
  // A masked grid byte g becomes -g as (g ^ 0xff) + 1: no carry crosses bytes
  // since grid bytes are at most 0x2b.
  __device__ static uint32_t signed_word(uint32_t g, uint32_t m) { return (g ^ m) + (m & 0x01010101u); }
  __device__ static void unpack(Ctx c, const uint8_t* row, int64_t kb, int s, int8_t* dst, float* wf, int8_t* wi) {
    const uint8_t* blk = row + kb * BYTES;
    const uint8_t* q = blk + 2 + 8 * s;
    const uint32_t aux0 = ld_u16(q) | (ld_u16(q + 2) << 16), aux1 = ld_u16(q + 4) | (ld_u16(q + 6) << 16);
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const uint64_t g = c.grid[(aux0 >> (8 * l)) & 0xffu];
      const uint64_t m = c.sign[(aux1 >> (7 * l)) & 127u];
      sts32(dst + 8 * l, signed_word(static_cast<uint32_t>(g), static_cast<uint32_t>(m)));
      sts32(dst + 8 * l + 4, signed_word(static_cast<uint32_t>(g >> 32), static_cast<uint32_t>(m >> 32)));
    }
    wi[s] = static_cast<int8_t>(2 * (aux1 >> 28) + 1);
    if (s == 0) wf[0] = f16f(ld_u16(blk));
  }
};

// Q2_K (84 bytes / 256): scales[16] (low nibble scale, high nibble min of
// each 16 values), qs[64], d, dmin. Value v = 128n + 32j + l is bits 2j of
// qs[32n + l]; slice s covers n = s / 4, j = s % 4, scale groups 2s, 2s + 1.
struct MQ2_K {
  static constexpr int QK = 256, BYTES = 84, AQK = 256, ALIGN = 4;
  static constexpr Kind kind = Kind::folded;
  using Ctx = NoCtx;
  __device__ static Ctx init() { return {}; }
  __device__ static void unpack(Ctx, const uint8_t* row, int64_t kb, int s, int8_t* dst, float* wf, int8_t* wi) {
    const uint8_t* blk = row + kb * BYTES;
    const int n = s >> 2, j = s & 3;
    const uint32_t sc01 = ld_u16(blk + 2 * s);  // scale bytes 2s and 2s + 1
    const uint32_t sc0 = sc01 & 15u, sc1 = (sc01 >> 8) & 15u;
    const uint8_t* qs = blk + 16 + 32 * n;
    // Each byte is q * sc <= 45: the word product never carries across bytes.
#pragma unroll
    for (int k = 0; k < 8; ++k) sts32(dst + 4 * k, ((ld_u32(qs + 4 * k) >> (2 * j)) & 0x03030303u) * (k < 4 ? sc0 : sc1));
    wi[2 * s] = static_cast<int8_t>((sc01 >> 4) & 15u);
    wi[2 * s + 1] = static_cast<int8_t>(sc01 >> 12);
    if (s == 0) {
      const uint32_t dd = ld_u32(blk + 80);
      wf[0] = f16f(dd & 0xffffu);
      wf[1] = f16f(dd >> 16);
    }
  }
};

// Q4_K (144 bytes / 256): d, dmin, scales[12], qs[128]. Value v = 64g + 32h + l
// is nibble h of qs[32g + l], with scale pair 2g + h; slice s is g = s / 2,
// h = s % 2.
struct MQ4_K {
  static constexpr int QK = 256, BYTES = 144, AQK = 256, ALIGN = 16;
  static constexpr Kind kind = Kind::scaled;
  using Ctx = NoCtx;
  __device__ static Ctx init() { return {}; }
  __device__ static void unpack(Ctx, const uint8_t* row, int64_t kb, int s, int8_t* dst, float* wf, int8_t* wi) {
    const uint8_t* blk = row + kb * BYTES;
    const uint4 head = ld_u128(blk);
    const uint8_t* qs = blk + 16 + 32 * (s >> 1);
    const int sh = 4 * (s & 1);
#pragma unroll
    for (int k = 0; k < 8; ++k) sts32(dst + 4 * k, (ld_u32(qs + 4 * k) >> sh) & 0x0f0f0f0fu);
    // ggml's get_scale_min_k4 for pair s.
    const int bs = 8 * (s & 3);
    const uint32_t a = (head.y >> bs) & 0xffu, b = (head.z >> bs) & 0xffu;
    uint32_t sc, m;
    if (s < 4) {
      sc = a & 63u;
      m = b & 63u;
    } else {
      const uint32_t c = (head.w >> bs) & 0xffu;
      sc = (c & 15u) | ((a >> 6) << 4);
      m = (c >> 4) | ((b >> 6) << 4);
    }
    wi[s] = static_cast<int8_t>(sc);
    wi[8 + s] = static_cast<int8_t>(m);
    if (s == 0) {
      wf[0] = f16f(head.x & 0xffffu);
      wf[1] = f16f(head.x >> 16);
    }
  }
};

// The float term of a K/IQ block from its integer sum (row r, token t).
template <class T, int BN>
__device__ __forceinline__ float block_term(const Smem<BN>& sm, int r, int t, int isum) {
  const float da = sm.ad[t][0];
  if constexpr (std::is_same_v<T, MIQ2_XXS>) {
    return __fmul_rn(__fmul_rn(__fmul_rn(sm.wf[r][0], da), 0.125f), static_cast<float>(isum));
  } else {
    int summ = 0;
    if constexpr (std::is_same_v<T, MQ2_K>) {
#pragma unroll
      for (int g = 0; g < 16; ++g) summ += sm.wi[r][g] * sm.as[t][g];
    } else {
#pragma unroll
      for (int u = 0; u < 8; ++u) summ += sm.wi[r][8 + u] * (sm.as[t][2 * u] + sm.as[t][2 * u + 1]);
    }
    return __fsub_rn(__fmul_rn(__fmul_rn(da, sm.wf[r][0]), static_cast<float>(isum)),
                     __fmul_rn(__fmul_rn(da, sm.wf[r][1]), static_cast<float>(summ)));
  }
}

// Where a launch's tokens are. Dense (tiles null): token i of the grid's
// column blockIdx.y * BN + i < nact, activation act + i * act_row_stride,
// output y + i * y_stride, all of matrix w. Grouped: column tile blockIdx.y
// is tiles[...] = {expert, first, count} over the slots sorted by expert;
// slot j is choice j % K of row j / K, activation act + (j / K) *
// act_row_stride + (j % K) * act_k_stride, output y + j * y_stride.
struct Args {
  const uint8_t* w;
  int64_t mat_stride, row_bytes, rows, cols;
  const uint8_t* act;
  size_t act_row_stride, act_k_stride;
  int64_t nact;
  int K;
  float* y;
  int64_t y_stride;
  const int4* tiles;
  const int* ntiles;
  const int32_t* sorted;
};

template <class T, int BN>
__global__ void __launch_bounds__(kThreads) mmq_kernel(Args p) {
  pdl_enter();
  __shared__ Smem<BN> sm;
  const int tid = threadIdx.x;
  const uint8_t* w = p.w;
  int nt = 0;
  if (p.tiles) {
    if (static_cast<int>(blockIdx.y) >= *p.ntiles) return;  // the whole block: before any barrier
    const int4 tl = p.tiles[blockIdx.y];
    w += static_cast<int64_t>(tl.x) * p.mat_stride;
    nt = tl.z;
    for (int t = tid; t < BN; t += kThreads) {
      const int j = __ldg(p.sorted + tl.y + (t < nt ? t : 0));
      sm.act[t] = p.act + static_cast<size_t>(j / p.K) * p.act_row_stride + static_cast<size_t>(j % p.K) * p.act_k_stride;
      sm.y[t] = t < nt ? p.y + static_cast<int64_t>(j) * p.y_stride : nullptr;
    }
  } else {
    const int64_t i0 = static_cast<int64_t>(blockIdx.y) * BN;
    nt = static_cast<int>(p.nact - i0 < BN ? p.nact - i0 : BN);
    for (int t = tid; t < BN; t += kThreads) {
      const int64_t i = i0 + (t < nt ? t : 0);
      sm.act[t] = p.act + static_cast<size_t>(i) * p.act_row_stride;
      sm.y[t] = t < nt ? p.y + i * p.y_stride : nullptr;
    }
  }
  const typename T::Ctx ctx = T::init();
  __syncthreads();

  const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBM;
  const int r_lo = warp * 16 + g, r_hi = r_lo + 8;
  const size_t d_off = align16(static_cast<size_t>(p.cols));
  const size_t s_off = d_off + align16(4 * static_cast<size_t>(p.cols / T::AQK));
  constexpr int NJ = BN / 8;
  float acc[NJ][4];
#pragma unroll
  for (int j = 0; j < NJ; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[j][i] = 0.0f;

  const int64_t nsteps = (p.cols + kBK - 1) / kBK;
  for (int64_t kb = 0; kb < nsteps; ++kb) {
    const int64_t left = (p.cols - kb * kBK) / 32;
    const int nsl = left < 8 ? static_cast<int>(left) : 8;  // < 8 only for Q8_0's last step
    for (int u = tid; u < kBM * 8; u += kThreads) {
      const int r = u >> 3, s = u & 7;
      if (s >= nsl) continue;
      const int64_t row = min(row0 + r, p.rows - 1);  // rows past the end: computed, dropped
      T::unpack(ctx, w + row * p.row_bytes, kb, s, &sm.w[r][32 * s], sm.wf[r], sm.wi[r]);
    }
    for (int u = tid; u < BN * 16; u += kThreads) {
      const int t = u >> 4, c = u & 15;
      if (c < 2 * nsl) *reinterpret_cast<uint4*>(&sm.a[t][16 * c]) = ld_u128(sm.act[t] + kb * kBK + 16 * c);
    }
    if constexpr (T::AQK == 32) {
      for (int u = tid; u < BN * 8; u += kThreads) {
        const int t = u >> 3, s = u & 7;
        if (s < nsl) sm.ad[t][s] = __ldg(reinterpret_cast<const float*>(sm.act[t] + d_off) + kb * 8 + s);
      }
    } else {
      for (int u = tid; u < BN * 16; u += kThreads) {
        const int t = u >> 4, c = u & 15;
        sm.as[t][c] = __ldg(reinterpret_cast<const int32_t*>(sm.act[t] + s_off) + kb * 16 + c);
        if (c == 0) sm.ad[t][0] = __ldg(reinterpret_cast<const float*>(sm.act[t] + d_off) + kb);
      }
    }
    __syncthreads();

    int isum[NJ][4];
#pragma unroll
    for (int j = 0; j < NJ; ++j)
#pragma unroll
      for (int i = 0; i < 4; ++i) isum[j][i] = 0;
#pragma unroll
    for (int s = 0; s < 8; ++s) {
      if (s >= nsl) break;
      const int k0 = 32 * s + 4 * q4;
      const uint32_t af[4] = {lds32(&sm.w[r_lo][k0]), lds32(&sm.w[r_hi][k0]), lds32(&sm.w[r_lo][k0 + 16]),
                              lds32(&sm.w[r_hi][k0 + 16])};
#pragma unroll
      for (int j = 0; j < NJ; ++j) {
        const int tc = 8 * j + g;
        const uint32_t bf[2] = {lds32(&sm.a[tc][k0]), lds32(&sm.a[tc][k0 + 16])};
        if constexpr (T::kind == Kind::folded) {
          mma_s8(isum[j], af, bf);
        } else {
          int c[4] = {0, 0, 0, 0};
          mma_s8(c, af, bf);
          const int t0 = 8 * j + 2 * q4;
          if constexpr (T::kind == Kind::per32) {
            const float wl = sm.wf[r_lo][s], wh = sm.wf[r_hi][s], a0 = sm.ad[t0][s], a1 = sm.ad[t0 + 1][s];
            acc[j][0] += __fmul_rn(wl, a0) * static_cast<float>(c[0]);
            acc[j][1] += __fmul_rn(wl, a1) * static_cast<float>(c[1]);
            acc[j][2] += __fmul_rn(wh, a0) * static_cast<float>(c[2]);
            acc[j][3] += __fmul_rn(wh, a1) * static_cast<float>(c[3]);
          } else {
            const int sl = sm.wi[r_lo][s], sh = sm.wi[r_hi][s];
            isum[j][0] += sl * c[0];
            isum[j][1] += sl * c[1];
            isum[j][2] += sh * c[2];
            isum[j][3] += sh * c[3];
          }
        }
      }
    }
    if constexpr (T::kind != Kind::per32) {
#pragma unroll
      for (int j = 0; j < NJ; ++j)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          acc[j][i] += block_term<T, BN>(sm, i < 2 ? r_lo : r_hi, 8 * j + 2 * q4 + (i & 1), isum[j][i]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int j = 0; j < NJ; ++j)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t row = row0 + (i < 2 ? r_lo : r_hi);
      float* y = sm.y[8 * j + 2 * q4 + (i & 1)];
      if (y && row < p.rows) y[row] = acc[j][i];
    }
}

// Sorts a step's slots by expert (one block): counts, column tiles of up to
// bn slots per expert in expert order, then each slot's place. The order of
// slots inside an expert is whatever the atomics give; a slot's result does
// not depend on it (each output column is its own sum). Only experts
// [lo, lo + E) take part; a tile names its expert relative to lo (the matrix
// it reads from the launch's base).
__global__ void group_kernel(const int32_t* __restrict__ sel, int nslots, int lo, int E, int bn, int4* tiles,
                             int* ntiles, int32_t* sorted) {
  pdl_enter();
  extern __shared__ int cnt[];  // [E] counts, then [E] next free place
  int* pos = cnt + E;
  for (int e = threadIdx.x; e < E; e += blockDim.x) cnt[e] = 0;
  __syncthreads();
  for (int j = threadIdx.x; j < nslots; j += blockDim.x) {
    const int e = __ldg(sel + j) - lo;
    if (e >= 0 && e < E) atomicAdd(&cnt[e], 1);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int run = 0, nt = 0;
    for (int e = 0; e < E; ++e) {
      pos[e] = run;
      for (int off = 0; off < cnt[e]; off += bn) tiles[nt++] = make_int4(e, run + off, min(bn, cnt[e] - off), 0);
      run += cnt[e];
    }
    *ntiles = nt;
  }
  __syncthreads();
  for (int j = threadIdx.x; j < nslots; j += blockDim.x) {
    const int e = __ldg(sel + j) - lo;
    if (e >= 0 && e < E) sorted[atomicAdd(&pos[e], 1)] = j;
  }
}

struct TablesTag {};

void upload_tables() {
  kc::once_per_device<TablesTag>([] {
    static_assert(sizeof(quant::iq2xxs_grid) == 256 * sizeof(uint64_t));
    DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_grid, quant::iq2xxs_grid, sizeof(quant::iq2xxs_grid)));
    uint64_t masks[128];
    for (int i = 0; i < 128; ++i) {
      uint64_t m = 0;
      for (int k = 0; k < 8; ++k)
        if ((quant::ksigns_iq2xs[i] >> k) & 1) m |= uint64_t{0xff} << (8 * k);
      masks[i] = m;
    }
    DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_sign, masks, sizeof(masks)));
  });
}

// Token columns per block for n tokens (per expert on average when grouped).
int pick_bn(int64_t n) { return n >= 48 ? 64 : n >= 24 ? 32 : n >= 12 ? 16 : 8; }

template <class T>
void check(const char* what, GgmlType t, const void* w, int64_t stride, int64_t cols, const void* act, size_t s1,
           size_t s2) {
  if (cols % T::QK || cols % T::AQK) fail_shape(what, t, cols, T::AQK > T::QK ? T::AQK : T::QK);
  if (!kc::aligned(w, T::ALIGN) || stride % T::ALIGN) fail_align(what, t, w, T::ALIGN);
  if (!kc::aligned(act, 16) || s1 % 16 || s2 % 16) fail_align(what, t, act, 16);
}

template <class T, int BN>
void launch_bn(const Args& a, unsigned gy, cudaStream_t s) {
  const dim3 grid(kc::grid_for(a.rows, kBM), gy);
  ds4::cuda::launch(&mmq_kernel<T, BN>, grid, kThreads, 0, s, a);
  DS4_CUDA_CHECK(cudaGetLastError());
}

template <class T>
void launch(const Args& a, int bn, int64_t columns, cudaStream_t s) {
  const auto gy = static_cast<unsigned>((columns + bn - 1) / bn);
  if (gy == 0) return;
  if (gy > 65535) fail_limit("matmul_q8: token tiles", gy, 65535);
  switch (bn) {
    case 8: return launch_bn<T, 8>(a, gy, s);
    case 16: return launch_bn<T, 16>(a, gy, s);
    case 32: return launch_bn<T, 32>(a, gy, s);
    default: return launch_bn<T, 64>(a, gy, s);
  }
}

template <class F>
void by_type(const char* what, GgmlType t, F&& f) {
  switch (t) {
    case GgmlType::Q8_0: return f(MQ8_0{});
    case GgmlType::Q2_K: return f(MQ2_K{});
    case GgmlType::Q4_K: return f(MQ4_K{});
    case GgmlType::IQ2_XXS:
      upload_tables();
      return f(MIQ2_XXS{});
    default: fail_unsupported(what, t);
  }
}

struct GroupScratch {
  int4* tiles;
  int* ntiles;
  int32_t* sorted;
  size_t bytes;
};

GroupScratch group_scratch(void* base, int64_t n_expert, int64_t nslots) {
  const int64_t max_tiles = nslots + std::min(n_expert, nslots);  // bn >= 1 bound; each expert adds one partial tile
  auto* b = static_cast<uint8_t*>(base);
  GroupScratch g{};
  size_t off = 0;
  g.tiles = reinterpret_cast<int4*>(b + off);
  off += align256(sizeof(int4) * static_cast<size_t>(max_tiles));
  g.ntiles = reinterpret_cast<int*>(b + off);
  off += 256;
  g.sorted = reinterpret_cast<int32_t*>(b + off);
  off += align256(sizeof(int32_t) * static_cast<size_t>(std::max<int64_t>(nslots, 1)));
  g.bytes = off;
  return g;
}

}  // namespace

void matmul_q8(GgmlType t, const void* w, int64_t rows, int64_t cols, const void* act, size_t act_stride, int64_t nact,
               float* y, int64_t y_stride, cudaStream_t s) {
  by_type("matmul_q8", t, [&](auto tag) {
    using T = decltype(tag);
    check<T>("matmul_q8", t, w, 0, cols, act, act_stride, 0);
    if (rows <= 0 || nact <= 0) return;
    Args a{};
    a.w = static_cast<const uint8_t*>(w);
    a.row_bytes = cols / T::QK * T::BYTES;
    a.rows = rows;
    a.cols = cols;
    a.act = static_cast<const uint8_t*>(act);
    a.act_row_stride = act_stride;
    a.nact = nact;
    a.K = 1;
    a.y = y;
    a.y_stride = y_stride;
    launch<T>(a, pick_bn(nact), nact, s);
  });
}

size_t matmul_q8_grouped_scratch(int64_t n_expert, int64_t nslots) {
  return group_scratch(nullptr, n_expert, nslots).bytes;
}

void matmul_q8_grouped(GgmlType t, const void* base, int64_t stride_bytes, int64_t n_expert, const int32_t* d_sel,
                       int64_t nrows, int K, int64_t rows, int64_t cols, const void* act, size_t act_row_stride,
                       size_t act_k_stride, float* y, int64_t y_stride, void* scratch, size_t scratch_bytes,
                       cudaStream_t s, ExpertWindow window) {
  by_type("matmul_q8_grouped", t, [&](auto tag) {
    using T = decltype(tag);
    check<T>("matmul_q8_grouped", t, base, stride_bytes, cols, act, act_row_stride, act_k_stride);
    const int64_t nslots = nrows * K;
    if (rows <= 0 || nslots <= 0) return;
    if (n_expert <= 0 || n_expert > kMaxExperts)
      fail_limit("matmul_q8_grouped: number of experts", n_expert, kMaxExperts);
    const GroupScratch g = group_scratch(scratch, n_expert, nslots);
    if (g.bytes > scratch_bytes)
      fail_scratch("matmul_q8_grouped", scratch_bytes, g.bytes);
    const int64_t lo = window.lo, hi = window.hi < 0 ? n_expert : window.hi;
    if (lo < 0 || hi > n_expert || lo >= hi)
      fail_window("matmul_q8_grouped", lo, hi, n_expert);
    // The tile width follows the whole step's slots per expert, not the
    // window's, so a window's launches have the shapes of the full one.
    const int bn = pick_bn(nslots / std::min(n_expert, nslots));
    ds4::cuda::launch(&group_kernel, 1, 1024, static_cast<size_t>(2 * (hi - lo)) * sizeof(int), s, d_sel,
                      static_cast<int>(nslots), static_cast<int>(lo), static_cast<int>(hi - lo), bn, g.tiles, g.ntiles,
                      g.sorted);
    DS4_CUDA_CHECK(cudaGetLastError());
    Args a{};
    a.w = static_cast<const uint8_t*>(base);
    a.mat_stride = stride_bytes;
    a.row_bytes = cols / T::QK * T::BYTES;
    a.rows = rows;
    a.cols = cols;
    a.act = static_cast<const uint8_t*>(act);
    a.act_row_stride = act_row_stride;
    a.act_k_stride = act_k_stride;
    a.K = K;
    a.y = y;
    a.y_stride = y_stride;
    a.tiles = g.tiles;
    a.ntiles = g.ntiles;
    a.sorted = g.sorted;
    // Columns: at most nslots / bn full tiles plus one partial per expert.
    launch<T>(a, bn, (nslots / bn + std::min(hi - lo, nslots)) * bn, s);
  });
}

}  // namespace ds4::cuda
