// Forward-pass kernels (see fwd_kernels.h). First version: correctness first,
// simple launch shapes (one block per row or head, single-thread kernels for
// the tiny sequential pieces such as Sinkhorn and routing), all f32.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cub/block/block_scan.cuh>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/fwd_kernels.h"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/row_math.cuh"

namespace ds4::cuda::fwd {
namespace {

constexpr int kBlock = 256;

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kBlock - 1) / kBlock); }

using rm::block_sum;
using rm::rms_inv;
using rm::sigmoidf;

__global__ void k_rms_norm(const float* x, const float* w, int64_t n, float eps, float* y) {
  pdl_enter();
  const float* xr = x + blockIdx.x * n;
  float* yr = y + blockIdx.x * n;
  const float inv = rms_inv(xr, n, eps);
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) yr[k] = rm::normed(xr, w, k, inv);
}

using rm::rms_threads;

__global__ void k_hc_fill(const float* e, int hc, int64_t D, float* X) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < hc * D) X[i] = e[i % D];
}

// One thread, for hc above 5 (k_hc_split_warp below serves up to 5, V4's 4
// included): the operations of cpu::hc_split_sinkhorn in the same order.
__global__ void k_hc_split(const float* m, const float* scale, const float* base, int hc, float eps, int iters,
                           float* pre, float* post, float* comb, int64_t m_stride) {
  pdl_enter();
  // Row blockIdx.x of a batch.
  m += blockIdx.x * m_stride;
  pre += blockIdx.x * hc;
  post += blockIdx.x * hc;
  comb += blockIdx.x * hc * hc;
  for (int i = 0; i < hc; ++i) {
    pre[i] = sigmoidf(scale[0] * m[i] + base[i]) + eps;
    post[i] = 2.0f * sigmoidf(scale[1] * m[hc + i] + base[hc + i]);
  }
  for (int i = 0; i < hc; ++i) {
    float* row = comb + i * hc;
    float mx = -INFINITY;
    for (int j = 0; j < hc; ++j) {
      row[j] = scale[2] * m[2 * hc + i * hc + j] + base[2 * hc + i * hc + j];
      mx = fmaxf(mx, row[j]);
    }
    float s = 0;
    for (int j = 0; j < hc; ++j) s += (row[j] = expf(row[j] - mx));
    for (int j = 0; j < hc; ++j) row[j] = row[j] / s + eps;
  }
  for (int it = 0; it < iters; ++it) {
    if (it > 0)
      for (int i = 0; i < hc; ++i) {
        float s = 0;
        for (int j = 0; j < hc; ++j) s += comb[i * hc + j];
        for (int j = 0; j < hc; ++j) comb[i * hc + j] /= s + eps;
      }
    for (int j = 0; j < hc; ++j) {
      float s = 0;
      for (int i = 0; i < hc; ++i) s += comb[i * hc + j];
      for (int i = 0; i < hc; ++i) comb[i * hc + j] /= s + eps;
    }
  }
}

// One warp, lane i*hc + j holding comb[i][j] (hc*hc <= 32): each row and
// column sum is gathered with shuffles in the same index order as the serial
// loops above, so the result is the same, in a fraction of the time (the
// serial kernel spends most of it waiting on one dependent divide after another).
__global__ void k_hc_split_warp(const float* m, const float* scale, const float* base, int hc, float eps, int iters,
                                float* pre, float* post, float* comb_out, int64_t m_stride) {
  pdl_enter();
  // Row blockIdx.x of a batch.
  rm::hc_split_warp_row(m + blockIdx.x * m_stride, scale, base, hc, eps, iters, pre + blockIdx.x * hc,
                        post + blockIdx.x * hc, comb_out + blockIdx.x * hc * hc, static_cast<int>(threadIdx.x));
}

__global__ void k_hc_head_pre(const float* m, const float* scale, const float* base, int hc, float eps, float* pre) {
  pdl_enter();
  const int i = threadIdx.x;
  if (i < hc) pre[i] = sigmoidf(m[i] * scale[0] + base[i]) + eps;
}

__global__ void k_hc_collapse(const float* X, const float* pre, int hc, int64_t D, float* y) {
  pdl_enter();
  const int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (d >= D) return;
  X += blockIdx.y * hc * D;  // row blockIdx.y of a batch
  pre += blockIdx.y * hc;
  y += blockIdx.y * D;
  y[d] = rm::hc_collapse_at(X, pre, hc, D, d);
}

constexpr int kMaxHc = 16;

__global__ void k_hc_expand(float* X, const float* out, const float* post, const float* comb, int hc, int64_t D) {
  pdl_enter();
  const int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (d >= D) return;
  X += blockIdx.y * hc * D;  // row blockIdx.y of a batch
  out += blockIdx.y * D;
  post += blockIdx.y * hc;
  comb += blockIdx.y * hc * hc;
  float old[kMaxHc];
  for (int i = 0; i < hc; ++i) old[i] = X[i * D + d];
  for (int j = 0; j < hc; ++j) {
    float s = post[j] * out[d];
    for (int i = 0; i < hc; ++i) s += comb[i * hc + j] * old[i];
    X[j * D + d] = s;
  }
}

// k_moe_sum and k_hc_expand of one element in one kernel: the FFN's output
// value (the routed experts' outputs then the shared expert's, summed as
// k_moe_sum sums them) goes straight into the HC expand, never stored.
__global__ void k_hc_expand_moe(float* X, const float* ye, const float* ys, int K, const float* post,
                                const float* comb, int hc, int64_t D) {
  pdl_enter();
  const int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (d >= D) return;
  const int64_t r = blockIdx.y;  // row of a batch
  float v = 0;
  for (int k = 0; k < K; ++k) v += ye[(r * K + k) * D + d];
  if (ys) v += ys[r * D + d];
  X += r * hc * D;
  post += r * hc;
  comb += r * hc * hc;
  float old[kMaxHc];
  for (int i = 0; i < hc; ++i) old[i] = X[i * D + d];
  for (int j = 0; j < hc; ++j) {
    float s = post[j] * v;
    for (int i = 0; i < hc; ++i) s += comb[i * hc + j] * old[i];
    X[j * D + d] = s;
  }
}

// Same arithmetic as cpu::Rope::apply: f32 angle, double cos/sin and products.
__device__ __forceinline__ void rope_pair(float* x, int64_t i, int64_t stride, int pairs, const float* inv_freq,
                                          int64_t pos, bool inverse);
__global__ void k_rope(float* x, int64_t stride, int heads, const float* inv_freq, int pairs, int64_t pos, bool inverse) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= static_cast<int64_t>(heads) * pairs) return;
  rope_pair(x, i, stride, pairs, inv_freq, pos, inverse);
}

// Row blockIdx.y of a pass, at its own position.
__global__ void k_rope_rows(float* x, int64_t row_stride, int64_t stride, int heads, const float* inv_freq, int pairs,
                            Positions p, bool inverse) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= static_cast<int64_t>(heads) * pairs) return;
  rope_pair(x + blockIdx.y * row_stride, i, stride, pairs, inv_freq, p.pos[blockIdx.y], inverse);
}

__device__ __forceinline__ void rope_pair(float* x, int64_t i, int64_t stride, int pairs, const float* inv_freq,
                                          int64_t pos, bool inverse) {
  const int64_t h = i / pairs, k = i % pairs;
  float* xh = x + h * stride;
  const float theta = static_cast<float>(pos) * inv_freq[k];
  const double cs = cos(static_cast<double>(theta));
  const double sn = inverse ? -sin(static_cast<double>(theta)) : sin(static_cast<double>(theta));
  const double x0 = xh[2 * k], x1 = xh[2 * k + 1];
  xh[2 * k] = static_cast<float>(x0 * cs - x1 * sn);
  xh[2 * k + 1] = static_cast<float>(x0 * sn + x1 * cs);
}

// ---- faithful numerics (cpu/numerics.cpp) --------------------------------------

__device__ float round_minifloat(float x, int mant_bits, int emin, float maxv) {
  if (isnan(x)) return x;
  const float a = fabsf(x);
  if (a >= maxv) return copysignf(maxv, x);
  int e = a > 0 ? ilogbf(a) : emin;
  if (e < emin) e = emin;
  const float step = ldexpf(1.0f, e - mant_bits);
  const float q = a / step;  // exact: power-of-two division
  float v = rintf(q) * step;  // rintf: nearest, ties to even
  if (v > maxv) v = maxv;
  return copysignf(v, x);
}

__device__ void scaled_round(float* x, int64_t n, int64_t block, float maxv, float min_amax, int mant, int emin) {
  for (int64_t b = 0; b < n; b += block) {
    const int64_t e = min(n, b + block);
    float amax = min_amax;
    for (int64_t k = b; k < e; ++k) amax = fmaxf(amax, fabsf(x[k]));
    const float sc = ldexpf(1.0f, static_cast<int>(ceilf(log2f(amax / maxv))));
    for (int64_t k = b; k < e; ++k) x[k] = round_minifloat(fminf(fmaxf(x[k] / sc, -maxv), maxv), mant, emin, maxv) * sc;
  }
}

// One thread per block of 64 of the first nope values; then f16 for all n.
__global__ void k_fp8_blocks(float* x, int64_t nope) {
  pdl_enter();
  const int64_t b = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * 64;
  if (b >= nope) return;
  scaled_round(x + b, nope - b < 64 ? nope - b : 64, 64, 448.0f, 1e-4f, 3, -6);
}

__global__ void k_f16_round(float* x, int64_t n) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = __half2float(__float2half_rn(x[i]));
}

// kv_round's FP8 part of one block of len <= 64 values by one warp: lane l
// takes values l and l + 32, the block's amax is a shuffle reduction (max is
// exact in any order, and fmaxf skips a NaN as the serial loop does), then
// every value goes through scaled_round's own arithmetic. The serial form, one
// thread per block walking it twice, was most of a decode step's KV write.
__device__ __forceinline__ void fp8_block_warp(float* x, int64_t len, int lane) {
  constexpr float maxv = 448.0f;
  const bool h0 = lane < len, h1 = lane + 32 < len;
  const float a0 = h0 ? x[lane] : 0.0f, a1 = h1 ? x[lane + 32] : 0.0f;
  float amax = 1e-4f;
  if (h0) amax = fmaxf(amax, fabsf(a0));
  if (h1) amax = fmaxf(amax, fabsf(a1));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  const float sc = ldexpf(1.0f, static_cast<int>(ceilf(log2f(amax / maxv))));
  if (h0) x[lane] = round_minifloat(fminf(fmaxf(a0 / sc, -maxv), maxv), 3, -6, maxv) * sc;
  if (h1) x[lane + 32] = round_minifloat(fminf(fmaxf(a1 / sc, -maxv), maxv), 3, -6, maxv) * sc;
}

// kv_round of a row in shared memory by a whole block: FP8 blocks of 64 on the
// first nope values, one warp each, then the f16 rounding of all n as the
// row goes to dst (dst may be the row itself).
__device__ __forceinline__ void kv_round_block(float* row, int64_t nope, int64_t n, float* dst) {
  const int warp = static_cast<int>(threadIdx.x >> 5), lane = static_cast<int>(threadIdx.x & 31);
  for (int64_t b = int64_t{warp} * 64; b < nope; b += int64_t{blockDim.x >> 5} * 64)
    fp8_block_warp(row + b, nope - b < 64 ? nope - b : 64, lane);
  __syncthreads();
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) dst[k] = __half2float(__float2half_rn(row[k]));
}

// A pass's raw KV rows into their ring slots (block blockIdx.x: row i): the
// norm, RoPE of the tail and, for faithful rows, the FP8 + f16 rounding, each
// step the same arithmetic as rms_norm_rows / rope / kv_round on one row. The
// row is built in shared memory (hd floats) and stored once.
__global__ void k_kv_rows(const float* src, int64_t hd, const float* w, float eps, int64_t nope, const float* inv_freq,
                          int pairs, KvRows rows) {
  pdl_enter();
  extern __shared__ float row[];
  const int i = static_cast<int>(blockIdx.x);
  const float* x = src + i * hd;
  float* y = rows.dst[i];
  const float inv = rms_inv(x, hd, eps);
  for (int64_t k = threadIdx.x; k < hd; k += blockDim.x) row[k] = w ? x[k] * inv * w[k] : x[k] * inv;
  __syncthreads();
  for (int64_t k = threadIdx.x; k < pairs; k += blockDim.x) rope_pair(row + nope, k, 0, pairs, inv_freq, rows.pos[i], false);
  __syncthreads();
  if (rows.faithful[i]) {
    kv_round_block(row, nope, hd, y);
  } else {
    for (int64_t k = threadIdx.x; k < hd; k += blockDim.x) y[k] = row[k];
  }
}

// One thread per row: the butterflies in the CPU's order, then FP4 per 32.
// For rows too short or too long for the warp form below.
__global__ void k_indexer_qat(float* x, int64_t rows, int64_t d) {
  pdl_enter();
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= rows) return;
  float* v = x + r * d;
  for (int64_t h = 1; h < d; h *= 2)
    for (int64_t i = 0; i < d; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
  const float sc = 1.0f / sqrtf(static_cast<float>(d));
  for (int64_t j = 0; j < d; ++j) v[j] *= sc;
  scaled_round(v, d, 32, 6.0f, 6.0f * ldexpf(1.0f, -126), 1, 0);
}

// One warp per row of d = 32 * V values, in registers: lane l holds values
// l + 32 t. A butterfly of span h < 32 pairs lanes l and l ^ h (a shuffle),
// a wider one pairs a lane's own t and t ^ h / 32. Every value goes through
// the same additions and subtractions as in the serial form (the butterflies
// of one stage are independent, so who computes them does not matter), then
// the same scaling; the FP4 block of 32 is one t across the warp, its amax a
// shuffle reduction (max is exact in any order). The serial form walked the
// row through global memory one dependent access after another, hundreds of
// microseconds a layer for a decode step's 64 heads.
template <int V>
__device__ __forceinline__ void qat_row_warp(float* row, int lane);

template <int V>
__global__ void k_indexer_qat_warp(float* x, int64_t rows) {
  pdl_enter();
  const int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5;
  if (r >= rows) return;
  qat_row_warp<V>(x + r * (32 * V), static_cast<int>(threadIdx.x & 31));
}

// One row of d = 32 * V values by one warp (lane `lane`).
template <int V>
__device__ __forceinline__ void qat_row_warp(float* row, int lane) {
  constexpr int d = 32 * V;
  float v[V];
#pragma unroll
  for (int t = 0; t < V; ++t) v[t] = row[lane + 32 * t];
#pragma unroll
  for (int h = 1; h < 32; h *= 2) {
    const bool upper = (lane & h) != 0;
#pragma unroll
    for (int t = 0; t < V; ++t) {
      const float o = __shfl_xor_sync(0xffffffffu, v[t], h);
      v[t] = upper ? o - v[t] : v[t] + o;
    }
  }
#pragma unroll
  for (int k = 1; k < V; k *= 2) {
#pragma unroll
    for (int t = 0; t < V; ++t)
      if ((t & k) == 0) {
        const float a = v[t], b = v[t + k];
        v[t] = a + b;
        v[t + k] = a - b;
      }
  }
  const float sc = 1.0f / sqrtf(static_cast<float>(d));
#pragma unroll
  for (int t = 0; t < V; ++t) v[t] *= sc;
  constexpr float maxv = 6.0f;
#pragma unroll
  for (int t = 0; t < V; ++t) {
    float amax = fmaxf(6.0f * ldexpf(1.0f, -126), fabsf(v[t]));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float bs = ldexpf(1.0f, static_cast<int>(ceilf(log2f(amax / maxv))));
    row[lane + 32 * t] = round_minifloat(fminf(fmaxf(v[t] / bs, -maxv), maxv), 1, 0, maxv) * bs;
  }
}

__global__ void k_scale(float* x, int64_t n, float a) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] *= a;
}

__global__ void k_add(float* y, const float* x, int64_t n) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] += x[i];
}

// ---- compressor, indexer, attention ---------------------------------------------

// comp_rows, in two launches, as cpu::compressor_step orders each step: the
// frontier write, softmax pooling (overlap: rows [0, r) give their first
// half, rows [r, 2r) their second), the norm (rms_inv, with rms_threads(1, d)
// threads as k_rms_norm uses for a row), rope_pair, and faithful rounding as
// k_fp8_blocks + k_f16_round or the QAT warp round it.
//
// A segment is one session's consecutive positions [p0, p0 + n). The windows
// that close in it are independent of each other: each pools rows that are
// either this pass's inputs (positions >= p0) or the frontier as the segment
// found it. So k_comp_pool gives every closing window its own block, reading
// the frontier untouched, and k_comp_frontier then leaves the frontier as
// the steps in order would have. Every value is the same float operation the
// step-by-step walk performed (a stored score gate + ape is recomputed as
// gate + ape), so the rows are bit for bit what it gave.

// Where candidate i of the window closing at c gets its kv and score: this
// pass's input row or a frontier row. Overlap: i < r is the previous window
// (positions c - 2r + 1 ..), i >= r this one; a position before p0 sits in
// frontier row r + slot when its window was in progress at p0, else (the
// window that closed last before p0, or window -1 at the start) in row slot.
struct CompSrc {
  const float* kv;
  const float* score;  // frontier score row, or null: gate + ape
  const float* gate;
  const float* ape;
};
__device__ __forceinline__ CompSrc comp_src(const CompShape& sh, const CompSeg& sg, int64_t c, int64_t i) {
  const int64_t r = sh.ratio, cw = (sh.overlap ? 2 : 1) * sh.d;
  const int64_t q = (sh.overlap ? c - 2 * r + 1 : c - r + 1) + i, slot = i % r;
  if (q >= sg.p0) {
    const int64_t t = q - sg.p0;
    return {sg.kv + t * sh.in_stride, nullptr, sg.gate + t * sh.in_stride, sh.ape + slot * cw};
  }
  const bool in_progress = !sh.overlap || (q >= 0 && q / r == sg.p0 / r);
  const int64_t fr = sh.overlap && in_progress ? r + slot : slot;
  return {sg.fkv + fr * cw, sg.fscore + fr * cw, nullptr, nullptr};
}
__device__ __forceinline__ float comp_score(const CompSrc& src, int64_t col) {
  return src.score ? src.score[col] : src.gate[col] + src.ape[col];
}

// Windows closing in segment sg: (p0 + n) / r - p0 / r.
__device__ __forceinline__ int64_t comp_closings(const CompSeg& sg, int64_t r) {
  return (sg.p0 + sg.n) / r - sg.p0 / r;
}

// One block per window closing in any segment: its pooled, normed, roped
// (and in faithful numerics rounded) row, at row n_rows + k of the segment's
// rows for its k-th closing.
__global__ void k_comp_pool(CompShape sh, CompRows segs) {
  pdl_enter();
  // Dynamic shared memory: the candidates' sources [cand], then the pooled row [d].
  extern __shared__ __align__(16) unsigned char comp_smem[];
  const int64_t r = sh.ratio, d = sh.d, rd = 2 * int64_t{sh.pairs};
  const int64_t cand = sh.overlap ? 2 * r : r;
  auto* srcs = reinterpret_cast<CompSrc*>(comp_smem);
  float* v = reinterpret_cast<float*>(srcs + cand);
  int64_t k = blockIdx.x;
  int si = 0;
  while (si < segs.n && k >= comp_closings(segs.s[si], r)) k -= comp_closings(segs.s[si++], r);
  if (si >= segs.n) return;
  const CompSeg& sg = segs.s[si];
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  const int64_t c = (sg.p0 / r + k + 1) * r - 1;  // the closing position
  // Where each candidate comes from is the same for every column: found once
  // (its integer divisions cost more than the pooling itself when every
  // column walked them).
  for (int64_t i = tid; i < cand; i += nt) srcs[i] = comp_src(sh, sg, c, i);
  __syncthreads();
  for (int64_t j = tid; j < d; j += nt) {
    float mx = -INFINITY;
    for (int64_t i = 0; i < cand; ++i) mx = fmaxf(mx, comp_score(srcs[i], sh.overlap && i >= r ? d + j : j));
    float den = 0, num = 0;
    for (int64_t i = 0; i < cand; ++i) {
      const int64_t col = sh.overlap && i >= r ? d + j : j;
      const float e = expf(comp_score(srcs[i], col) - mx);
      den += e;
      num += e * srcs[i].kv[col];
    }
    v[j] = num / den;
  }
  __syncthreads();
  // Norm, RoPE and rounding on the row in shared memory (rms_inv's reads all
  // precede its block sum's barrier, so v is normed in place); one store.
  float* dst = sg.rows + (sg.n_rows + k) * d;
  const float inv = rms_inv(v, d, sh.eps);
  for (int64_t m = tid; m < d; m += nt) v[m] = sh.norm ? v[m] * inv * sh.norm[m] : v[m] * inv;
  __syncthreads();
  const int64_t window = (c + 1) / r - 1;
  for (int64_t m = tid; m < sh.pairs; m += nt) rope_pair(v + d - rd, m, 0, sh.pairs, sh.inv_freq, window * r, false);
  __syncthreads();
  if (sg.faithful && !sh.indexer) {
    kv_round_block(v, sh.nope, d, dst);
    return;
  }
  if (sg.faithful && tid < 32) {
    switch (d) {
      case 32: qat_row_warp<1>(v, tid); break;
      case 64: qat_row_warp<2>(v, tid); break;
      case 128: qat_row_warp<4>(v, tid); break;
      case 256: qat_row_warp<8>(v, tid); break;
      default: break;  // comp_rows refuses other lengths
    }
  }
  __syncthreads();
  for (int64_t m = tid; m < d; m += nt) dst[m] = v[m];
}

// Frontier slots segment sg's steps write (the rest keep their values): with
// overlap and a window closed in it, all r of them (rows [0, r) take the last
// closed window); else those of its last min(n, r) positions. Slot of the
// i-th: comp_touched_slot.
__host__ __device__ __forceinline__ int64_t comp_touched(const CompShape& sh, const CompSeg& sg) {
  const int64_t r = sh.ratio;
  if (sh.overlap && (sg.p0 + sg.n) / r != sg.p0 / r) return r;
  return sg.n < r ? sg.n : r;
}
__device__ __forceinline__ int64_t comp_touched_slot(const CompShape& sh, const CompSeg& sg, int64_t i) {
  const int64_t r = sh.ratio, m = comp_touched(sh, sg);
  return m == r ? i : (sg.p0 + sg.n - m + i) % r;
}

// The frontier after segment blockIdx.y's steps, element (slot s, column j)
// per thread over the touched slots: without overlap, slot s holds the
// segment's last position with that slot. With overlap and no window closed
// in the segment, row r + s takes the segment's position with slot s; when
// windows closed, rows [0, r) hold the last closed window and row r + s the
// position with slot s after it, else that window's row again (the walk
// copies [r, 2r) down at each close and overwrites slots as positions come).
__global__ void k_comp_frontier(CompShape sh, CompRows segs) {
  pdl_enter();
  const CompSeg& sg = segs.s[blockIdx.y];
  const int64_t r = sh.ratio, cw = (sh.overlap ? 2 : 1) * sh.d;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= comp_touched(sh, sg) * cw) return;
  const int64_t s = comp_touched_slot(sh, sg, i / cw), j = i % cw, pe = sg.p0 + sg.n - 1;
  auto input = [&](int64_t p, float& kv, float& sc) {
    const int64_t t = p - sg.p0;
    kv = sg.kv[t * sh.in_stride + j];
    sc = sg.gate[t * sh.in_stride + j] + sh.ape[s * cw + j];
  };
  float kv, sc;
  if (!sh.overlap) {
    const int64_t p = pe - ((pe % r - s + r) % r);
    if (p < sg.p0) return;
    input(p, kv, sc);
    sg.fkv[s * cw + j] = kv;
    sg.fscore[s * cw + j] = sc;
    return;
  }
  const int64_t closings = comp_closings(sg, r);
  float* hk = sg.fkv + (r + s) * cw + j;
  float* hs = sg.fscore + (r + s) * cw + j;
  if (closings == 0) {
    const int64_t p = sg.p0 + ((s - sg.p0 % r + r) % r);
    if (p > pe) return;
    input(p, kv, sc);
    *hk = kv;
    *hs = sc;
    return;
  }
  const int64_t cm = ((sg.p0 + sg.n) / r) * r - 1, q = cm - r + 1 + s;
  if (q >= sg.p0) {
    input(q, kv, sc);
  } else {
    kv = *hk;
    sc = *hs;
  }
  sg.fkv[s * cw + j] = kv;
  sg.fscore[s * cw + j] = sc;
  if (cm + 1 + s <= pe) input(cm + 1 + s, kv, sc);
  *hk = kv;
  *hs = sc;
}

constexpr int kMaxIndexerHeads = 128;
constexpr int kScoreTile = 16;  // compressed rows per block
constexpr int kScoreThreads = 256;

// Shared memory of a block scoring kScoreTile rows: the query [heads][d + 1]
// and the tile's rows [kScoreTile][d + 1] (the +1 spreads a warp's heads over
// the banks), then one product per head and row.
size_t score_smem(int64_t d, int heads) {
  return sizeof(float) * (static_cast<size_t>(heads + kScoreTile) * static_cast<size_t>(d + 1) +
                          static_cast<size_t>(kScoreTile) * static_cast<size_t>(heads));
}

// Compressed rows c0 .. c0 + kScoreTile (those below n) against one query:
// thread (row c, head h) forms head h's dot in the CPU's order (j ascending),
// then one thread per row sums w[h] * relu(dot) over the heads in order. The
// query and rows are staged in shared memory once per tile, so each block
// reads the query once for 16 rows and every global load is coalesced.
__device__ __forceinline__ void indexer_score_tile(const float* rows, int64_t n, int64_t c0, int64_t d,
                                                   const float* q, const float* w, int heads, float* score) {
  extern __shared__ float smem[];
  const int64_t ld = d + 1;
  float* qs = smem;
  float* ks = qs + heads * ld;
  float* part = ks + kScoreTile * ld;
  const int tile = static_cast<int>(n - c0 < kScoreTile ? n - c0 : kScoreTile);
  for (int64_t i = threadIdx.x; i < heads * d; i += blockDim.x) qs[(i / d) * ld + i % d] = q[i];
  for (int64_t i = threadIdx.x; i < tile * d; i += blockDim.x) ks[(i / d) * ld + i % d] = rows[c0 * d + i];
  __syncthreads();
  for (int it = threadIdx.x; it < tile * heads; it += blockDim.x) {
    const int c = it / heads, h = it % heads;
    const float* qh = qs + h * ld;
    const float* kc = ks + c * ld;
    float dot = 0;
    for (int64_t j = 0; j < d; ++j) dot += qh[j] * kc[j];
    part[c * heads + h] = w[h] * fmaxf(dot, 0.0f);
  }
  __syncthreads();
  if (threadIdx.x < tile) {
    float s = 0;
    for (int h = 0; h < heads; ++h) s += part[threadIdx.x * heads + h];
    score[c0 + threadIdx.x] = s;
  }
}

__global__ void __launch_bounds__(kScoreThreads) k_indexer_scores(const float* rows, int64_t n, int64_t d,
                                                                  const float* q, const float* w, int heads,
                                                                  float* score) {
  pdl_enter();
  indexer_score_tile(rows, n, static_cast<int64_t>(blockIdx.x) * kScoreTile, d, q, w, heads, score);
}

// Tile blockIdx.x of pass row blockIdx.y.
__global__ void __launch_bounds__(kScoreThreads) k_indexer_scores_rows(IdxRows rows, int64_t d, const float* q,
                                                                       int64_t q_stride, const float* w,
                                                                       int64_t w_stride, int heads) {
  pdl_enter();
  const IdxRow& r = rows.r[blockIdx.y];
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kScoreTile;
  if (c0 >= r.n) return;
  indexer_score_tile(r.rows, r.n, c0, d, q + blockIdx.y * q_stride, w + blockIdx.y * w_stride, heads, r.score);
}

// The tiles' shared memory, above the default 48 KiB when the shape needs it.
void score_smem_setup(int64_t d, int heads) {
  const size_t need = score_smem(d, heads);
  if (need > 200 * 1024)
    throw_cuda_error(cudaErrorInvalidValue, "indexer_scores: query and tile do not fit in shared memory", __FILE__,
                     __LINE__);
  if (need > 48 * 1024) {
    DS4_CUDA_CHECK(cudaFuncSetAttribute(k_indexer_scores, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(need)));
    DS4_CUDA_CHECK(cudaFuncSetAttribute(k_indexer_scores_rows, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(need)));
  }
}

// Top-k in one block, linear in n: a radix select finds the k-th largest
// score's key T (4 passes of 8 bits over an order-preserving integer key) and
// how many rows scoring exactly T are taken (the lowest indices: a row is
// selected when fewer than k rows beat it, a higher score or an equal one at a
// lower index); then one pass in index order writes the selected indices,
// ascending, with block-wide prefix sums giving each its place.
constexpr int kTopkThreads = 1024;

// Larger float, larger key; -0 and +0 are one key, as they compare equal.
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t u = __float_as_uint(f == 0.0f ? 0.0f : f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ void topk_block(const float* score, int64_t n, int64_t k, int32_t* sel);

__global__ void __launch_bounds__(kTopkThreads) k_topk(const float* score, int64_t n, int64_t k, int32_t* sel) {
  pdl_enter();
  topk_block(score, n, k, sel);
}

// Pass row blockIdx.x; rows with n == 0 skip.
__global__ void __launch_bounds__(kTopkThreads) k_topk_rows(IdxRows rows, int64_t k) {
  pdl_enter();
  const IdxRow& r = rows.r[blockIdx.x];
  if (r.n > 0) topk_block(r.score, r.n, k, r.sel);
}

__device__ __forceinline__ void topk_block(const float* score, int64_t n, int64_t k, int32_t* sel) {
  using Scan = cub::BlockScan<uint32_t, kTopkThreads>;
  __shared__ typename Scan::TempStorage scan_tmp;
  __shared__ uint32_t hist[256];
  __shared__ uint32_t s_prefix, s_need;
  const int tid = static_cast<int>(threadIdx.x);
  uint32_t prefix = 0, mask = 0;
  auto need = static_cast<uint32_t>(k);
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = tid; i < 256; i += kTopkThreads) hist[i] = 0;
    __syncthreads();
    for (int64_t c = tid; c < n; c += kTopkThreads) {
      const uint32_t key = order_key(score[c]);
      if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (tid == 0) {
      // The bucket holding the need-th largest key among those still in play.
      uint32_t above = 0;
      int b = 255;
      for (; b > 0; --b) {
        if (above + hist[b] >= need) break;
        above += hist[b];
      }
      s_prefix = prefix | (static_cast<uint32_t>(b) << shift);
      s_need = need - above;
    }
    __syncthreads();
    prefix = s_prefix;
    need = s_need;
    mask |= 255u << shift;
  }
  // Every key above T is taken, and the first `need` rows whose key is T.
  const uint32_t T = prefix;
  uint32_t eq_off = 0, gt_off = 0;  // rows equal to / above T before this chunk
  for (int64_t base = 0; base < n; base += kTopkThreads) {
    const int64_t c = base + tid;
    const uint32_t key = c < n ? order_key(score[c]) : 0;
    const bool gt = c < n && key > T, eq = c < n && key == T;
    // Both counts in one scan: rows equal to T in the low half, above T in the high.
    uint32_t before = 0, total = 0;
    Scan(scan_tmp).ExclusiveSum((gt ? 0x10000u : 0u) | (eq ? 1u : 0u), before, total);
    const uint32_t eq_rank = eq_off + (before & 0xffffu), gt_before = gt_off + (before >> 16);
    if (gt || (eq && eq_rank < need)) sel[gt_before + min(eq_rank, need)] = static_cast<int32_t>(c);
    eq_off += total & 0xffffu;
    gt_off += total >> 16;
    __syncthreads();  // scan_tmp is reused
  }
}

// Sink attention, one head split over S blocks of kAttnWarps warps: each warp
// walks every (S * kAttnWarps)-th key with its own online softmax (a key's dot
// product summed by shuffles, no block barrier per key); the block merges its
// warps, and with S > 1 writes its partial (max, denominator, unnormalised
// output) for the merge kernel. The sink starts warp 0 of split 0. S depends
// on the number of keys alone, so a row's numbers do not depend on the batch
// it runs in.
constexpr int kAttnWarps = 4;
constexpr int kAttnMaxPerLane = 32;  // head_dim up to 1024
constexpr int kAttnMaxSplits = 8;
constexpr int kAttnHeads = 4;  // heads per block for several rows (attend_rows)

__host__ __device__ __forceinline__ int attn_splits(int64_t keys) {
  const int64_t s = keys / (16 * kAttnWarps);  // about 16 keys or more per warp
  return static_cast<int>(s < 1 ? 1 : s > kAttnMaxSplits ? kAttnMaxSplits : s);
}

// Heads h0 .. h0 + HG - 1, split `split` of S. part: head h0's S partials of
// dim + 2 floats (head h0 + g's at part + g * kAttnMaxSplits * (dim + 2)).
// The heads share one KV row (multi-query attention), so a warp loads each
// key once for its HG heads; each head's sums run exactly as with HG = 1
// (same keys per warp, same order), so HG changes speed, never a result.
template <int PER_LANE, int HG>
__device__ __forceinline__ void attend_block(int h0, int split, int S, const float* q, int64_t dim, const float* raw,
                                             int64_t window, int64_t p, int64_t n_raw, const float* comp,
                                             int64_t n_comp, const int32_t* sel, const float* sinks, float* out,
                                             float* part) {
  extern __shared__ float sh[];  // [HG][kAttnWarps][dim] outputs, then [HG][kAttnWarps] maxima and denominators
  const int lane = static_cast<int>(threadIdx.x) & 31, w = static_cast<int>(threadIdx.x) >> 5;
  const float scale = 1.0f / sqrtf(static_cast<float>(dim));
  float qv[HG][PER_LANE], acc[HG][PER_LANE], mx[HG], den[HG];
  const bool first = split == 0 && w == 0;
#pragma unroll
  for (int g = 0; g < HG; ++g) {
    const float* qh = q + (h0 + g) * dim;
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
      const int64_t k = lane + 32 * i;
      qv[g][i] = k < dim ? qh[k] : 0.0f;
      acc[g][i] = 0;
    }
    mx[g] = first ? sinks[h0 + g] : -INFINITY;  // the sink's exp(sink - mx)
    den[g] = first ? 1.0f : 0.0f;
  }
  const int64_t total = n_raw + n_comp, stride = int64_t{S} * kAttnWarps;
  for (int64_t j = int64_t{split} * kAttnWarps + w; j < total; j += stride) {
    const float* key;
    if (j < n_raw) {
      const int64_t pos = p - n_raw + 1 + j;
      key = raw + (pos % window) * dim;
    } else {
      const int64_t c = j - n_raw;
      key = comp + (sel ? sel[c] : c) * dim;
    }
    float kv[PER_LANE];
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
      const int64_t k = lane + 32 * i;
      kv[i] = k < dim ? key[k] : 0.0f;
    }
#pragma unroll
    for (int g = 0; g < HG; ++g) {
      float dot = 0;
#pragma unroll
      for (int i = 0; i < PER_LANE; ++i) dot += qv[g][i] * kv[i];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
      const float sc = dot * scale;
      if (sc > mx[g]) {
        const float c = expf(mx[g] - sc);
        den[g] *= c;
#pragma unroll
        for (int i = 0; i < PER_LANE; ++i) acc[g][i] *= c;
        mx[g] = sc;
      }
      const float e = expf(sc - mx[g]);
      den[g] += e;
#pragma unroll
      for (int i = 0; i < PER_LANE; ++i) acc[g][i] += e * kv[i];
    }
  }
  float* shm = sh + HG * kAttnWarps * dim;  // maxima, then denominators
#pragma unroll
  for (int g = 0; g < HG; ++g) {
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
      const int64_t k = lane + 32 * i;
      if (k < dim) sh[(g * kAttnWarps + w) * dim + k] = acc[g][i];
    }
    if (lane == 0) {
      shm[g * kAttnWarps + w] = mx[g];
      shm[HG * kAttnWarps + g * kAttnWarps + w] = den[g];
    }
  }
  __syncthreads();
  for (int g = 0; g < HG; ++g) {
    const float* gm = shm + g * kAttnWarps;
    const float* gd = shm + HG * kAttnWarps + g * kAttnWarps;
    float M = -INFINITY;
    for (int v = 0; v < kAttnWarps; ++v) M = fmaxf(M, gm[v]);
    float D = 0, f[kAttnWarps];
    for (int v = 0; v < kAttnWarps; ++v) {
      f[v] = gm[v] == -INFINITY ? 0.0f : expf(gm[v] - M);
      D += gd[v] * f[v];
    }
    float* ps = part + int64_t{g} * kAttnMaxSplits * (dim + 2) + int64_t{split} * (dim + 2);
    for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) {
      float o = 0;
      for (int v = 0; v < kAttnWarps; ++v) o += sh[(g * kAttnWarps + v) * dim + k] * f[v];
      if (S == 1) out[(h0 + g) * dim + k] = o / D;
      else ps[2 + k] = o;
    }
    if (S > 1 && threadIdx.x == 0) {
      ps[0] = M;
      ps[1] = D;
    }
  }
}

// Merges one head's S partials into out.
__device__ __forceinline__ void attend_merge_head(const float* ph, int S, int64_t dim, float* out) {
  float M = -INFINITY;
  for (int s = 0; s < S; ++s) M = fmaxf(M, ph[s * (dim + 2)]);
  float D = 0;
  for (int s = 0; s < S; ++s) {
    const float m = ph[s * (dim + 2)];
    if (m != -INFINITY) D += ph[s * (dim + 2) + 1] * expf(m - M);
  }
  for (int64_t k = threadIdx.x; k < dim; k += blockDim.x) {
    float o = 0;
    for (int s = 0; s < S; ++s) {
      const float m = ph[s * (dim + 2)];
      if (m != -INFINITY) o += ph[s * (dim + 2) + 2 + k] * expf(m - M);
    }
    out[k] = o / D;
  }
}

// Heads HG * blockIdx.x .., split blockIdx.y of pass row blockIdx.z (splits
// past the row's own count return). Row r's partials at
// scratch + r * H * kAttnMaxSplits * (dim + 2).
template <int PER_LANE, int HG>
__global__ void __launch_bounds__(kAttnWarps * 32)
    k_attend_rows(const float* q, int64_t dim, AttnRows rows, const float* sinks, float* out, float* scratch) {
  pdl_enter();
  const int H = static_cast<int>(gridDim.x) * HG, h0 = static_cast<int>(blockIdx.x) * HG;
  const AttnRow& r = rows.r[blockIdx.z];
  const int S = attn_splits(r.n_raw + r.n_comp);
  if (static_cast<int>(blockIdx.y) >= S) return;
  const int64_t off = static_cast<int64_t>(blockIdx.z) * H * dim;
  float* part = scratch + (static_cast<int64_t>(blockIdx.z) * H + h0) * kAttnMaxSplits * (dim + 2);
  attend_block<PER_LANE, HG>(h0, static_cast<int>(blockIdx.y), S, q + off, dim, r.raw, rows.ring, r.pos, r.n_raw,
                             r.comp, r.n_comp, r.sel, sinks, out + off, part);
}

// Head blockIdx.x of pass row blockIdx.y, for rows split more than once.
__global__ void k_attend_merge_rows(const float* scratch, int64_t dim, AttnRows rows, float* out) {
  pdl_enter();
  const int H = static_cast<int>(gridDim.x), h = static_cast<int>(blockIdx.x);
  const AttnRow& r = rows.r[blockIdx.y];
  const int S = attn_splits(r.n_raw + r.n_comp);
  if (S == 1) return;
  attend_merge_head(scratch + (static_cast<int64_t>(blockIdx.y) * H + h) * kAttnMaxSplits * (dim + 2), S, dim,
                    out + (static_cast<int64_t>(blockIdx.y) * H + h) * dim);
}

// ---- MoE -----------------------------------------------------------------------

constexpr int kMaxExperts = 1024;
// The warp's best (value, index) in every lane: the highest value, the lowest
// index among equal values (routing's order in both k_route forms).
__device__ inline void warp_argmax(float& bv, int& bi) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) {
      bv = ov;
      bi = oi;
    }
  }
}

constexpr int kMaxRouteK = 16;  // choices k_route_warp keeps in registers

// One warp for up to 32 * V experts (Flash's 256: V = 8), everything in
// registers: lane l holds experts l + 32 t. The same scores, the same K
// rounds of argmax (highest biased score, lowest index among equals, a NaN
// never chosen while another is left) and the same weights in selection order
// as k_route below, without its two block barriers per round (k_route took
// about 10 us of a decode step's layer under ncu).
template <int V>
__global__ void k_route_warp(const float* logits, int E, int K, const int32_t* hash_table, Tokens toks,
                             const float* bias, bool norm, float wscale, int32_t* sel, float* w) {
  pdl_enter();
  logits += blockIdx.x * static_cast<int64_t>(E);
  sel += blockIdx.x * K;
  w += blockIdx.x * K;
  const int32_t* hash_ids = hash_table ? hash_table + static_cast<int64_t>(toks.tok[blockIdx.x]) * K : nullptr;
  const int lane = static_cast<int>(threadIdx.x);
  float s[V], v[V];
  unsigned taken = 0;  // bit t: expert lane + 32 t chosen
#pragma unroll
  for (int t = 0; t < V; ++t) {
    const int e = lane + 32 * t;
    if (e < E) {
      const float z = logits[e];
      s[t] = sqrtf(z > 20.0f ? z : log1pf(expf(z)));
      v[t] = s[t] + (bias ? bias[e] : 0.0f);
    } else {
      s[t] = 0.0f;
      v[t] = -INFINITY;
      taken |= 1u << t;  // never a candidate
    }
  }
  float sum = 0;
  int chosen[kMaxRouteK];
  float chosen_s[kMaxRouteK];
  for (int k = 0; k < K; ++k) {
    int bi;
    if (hash_ids) {
      bi = hash_ids[k];
    } else {
      float bv = -INFINITY;
      bi = 0x7fffffff;
#pragma unroll
      for (int t = 0; t < V; ++t) {
        const int e = lane + 32 * t;
        if (!(taken >> t & 1u) && (v[t] > bv || (v[t] == bv && e < bi))) {
          bv = v[t];
          bi = e;
        }
      }
      warp_argmax(bv, bi);
      if (bi == 0x7fffffff) {  // every score left is NaN: the lowest index not taken
        int lowest = 0x7fffffff;
#pragma unroll
        for (int t = 0; t < V; ++t)
          if (!(taken >> t & 1u)) lowest = min(lowest, lane + 32 * t);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) lowest = min(lowest, __shfl_xor_sync(0xffffffffu, lowest, o));
        bi = lowest;
      }
      if ((bi & 31) == lane) taken |= 1u << (bi >> 5);
    }
    // The chosen expert's score, from the lane that holds it.
    float mine = 0.0f;
#pragma unroll
    for (int t = 0; t < V; ++t)
      if (lane + 32 * t == bi) mine = s[t];
    chosen_s[k] = __shfl_sync(0xffffffffu, mine, bi & 31);
    chosen[k] = bi;
  }
  if (lane == 0) {
    for (int k = 0; k < K; ++k) sum += chosen_s[k];
    for (int k = 0; k < K; ++k) {
      sel[k] = chosen[k];
      float x = chosen_s[k];
      if (norm) x /= sum + 1e-20f;
      w[k] = x * wscale;
    }
  }
}

// One block: scores in parallel, then K rounds of a block-wide argmax (the
// highest biased score, the lowest index among equals, as the CPU's
// partial_sort orders them); the weights from thread 0 in selection order.
// Row blockIdx.x of a pass: its logits, its hash ids (hash-routed layers:
// row tok[i] of the K-wide table) and its choices at + i * E / + i * K.
__global__ void k_route(const float* logits, int E, int K, const int32_t* hash_table, Tokens toks, const float* bias,
                        bool norm, float wscale, int32_t* sel, float* w) {
  pdl_enter();
  logits += blockIdx.x * static_cast<int64_t>(E);
  sel += blockIdx.x * K;
  w += blockIdx.x * K;
  const int32_t* hash_ids = hash_table ? hash_table + static_cast<int64_t>(toks.tok[blockIdx.x]) * K : nullptr;
  __shared__ float s[kMaxExperts], v[kMaxExperts];
  __shared__ bool taken[kMaxExperts];
  __shared__ float wv[32];
  __shared__ int wi[32];
  __shared__ int chosen[kMaxExperts];
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5, nwarps = static_cast<int>(blockDim.x >> 5);
  for (int e = t; e < E; e += blockDim.x) {
    const float z = logits[e];
    s[e] = sqrtf(z > 20.0f ? z : log1pf(expf(z)));
    v[e] = s[e] + (bias ? bias[e] : 0.0f);
    taken[e] = false;
  }
  __syncthreads();
  for (int k = 0; k < K; ++k) {
    if (hash_ids) {
      if (t == 0) chosen[k] = hash_ids[k];
      continue;
    }
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int e = t; e < E; e += blockDim.x)
      if (!taken[e] && (v[e] > bv || (v[e] == bv && e < bi))) {
        bv = v[e];
        bi = e;
      }
    warp_argmax(bv, bi);
    if (lane == 0) {
      wv[warp] = bv;
      wi[warp] = bi;
    }
    __syncthreads();
    if (t == 0) {
      for (int i = 1; i < nwarps; ++i)
        if (wv[i] > bv || (wv[i] == bv && wi[i] < bi)) {
          bv = wv[i];
          bi = wi[i];
        }
      if (bi == 0x7fffffff)  // every score left is NaN: the lowest index not taken
        for (int e = 0; e < E; ++e)
          if (!taken[e]) {
            bi = e;
            break;
          }
      taken[bi] = true;
      chosen[k] = bi;
    }
    __syncthreads();
  }
  if (t == 0) {
    float sum = 0;
    for (int k = 0; k < K; ++k) sum += s[chosen[k]];
    for (int k = 0; k < K; ++k) {
      sel[k] = chosen[k];
      float x = s[chosen[k]];
      if (norm) x /= sum + 1e-20f;
      w[k] = x * wscale;
    }
  }
}

__global__ void k_swiglu(float* g, const float* u, int64_t n, float clamp, const float* wk) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  g[i] = rm::swiglu_value(g[i], u[i], clamp, wk ? *wk : 1.0f);
}

// Row r (of ff values) scaled by wts[r] (null: 1).
__global__ void k_swiglu_rows(float* g, const float* u, int64_t ff, int64_t n, float clamp, const float* wts) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  g[i] = rm::swiglu_value(g[i], u[i], clamp, wts ? wts[i / ff] : 1.0f);
}

// y[i] += x[i] + x[n + i] + ... in row order (the order of separate adds).
// out[i][d] = (ye[i][0][d] + ... + ye[i][K-1][d]) + ys[i][d], summed from 0
// in that order (as memset + add_rows + add did).
__global__ void k_moe_sum(float* out, const float* ye, const float* ys, int64_t D, int K, int64_t n) {
  pdl_enter();
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= n * D) return;
  const int64_t i = t / D, d = t % D;
  float v = 0;
  for (int k = 0; k < K; ++k) v += ye[(i * K + k) * D + d];
  if (ys) v += ys[t];
  out[t] = v;
}

__global__ void k_add_rows(float* y, const float* x, int64_t n, int rows) {
  pdl_enter();
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  float v = y[i];
  for (int r = 0; r < rows; ++r) v += x[r * n + i];
  y[i] = v;
}

}  // namespace

#define LAUNCH_CHECK(name) DS4_CUDA_CHECK_LAUNCH(name)

void rms_norm_rows(const float* x, const float* w, int64_t rows, int64_t n, float eps, float* y, cudaStream_t s) {
  if (rows <= 0) return;
  // Few rows (decode): wide blocks, so one row's read is spread over more threads.
  const int threads = rms_threads(rows, n);
  ds4::cuda::launch(&k_rms_norm, static_cast<unsigned>(rows), threads, 0, s, x, w, n, eps, y);
  LAUNCH_CHECK("k_rms_norm");
}

void hc_fill(const float* e, int hc, int64_t D, float* X, cudaStream_t s) {
  ds4::cuda::launch(&k_hc_fill, blocks_for(hc * D), kBlock, 0, s, e, hc, D, X);
  LAUNCH_CHECK("k_hc_fill");
}

void hc_split(const float* m, const float* scale, const float* base, int hc, float eps, int iters, float* pre,
              float* post, float* comb, cudaStream_t s) {
  hc_split_rows(m, 0, 1, scale, base, hc, eps, iters, pre, post, comb, s);
}

void hc_split_rows(const float* m, int64_t m_stride, int64_t rows, const float* scale, const float* base, int hc,
                   float eps, int iters, float* pre, float* post, float* comb, cudaStream_t s) {
  if (rows <= 0) return;
  const auto g = static_cast<unsigned>(rows);
  if (hc * hc <= 32)
    ds4::cuda::launch(&k_hc_split_warp, g, 32, 0, s, m, scale, base, hc, eps, iters, pre, post, comb, m_stride);
  else
    ds4::cuda::launch(&k_hc_split, g, 1, 0, s, m, scale, base, hc, eps, iters, pre, post, comb, m_stride);
  LAUNCH_CHECK("k_hc_split");
}

void hc_head_pre(const float* m, const float* scale, const float* base, int hc, float eps, float* pre, cudaStream_t s) {
  ds4::cuda::launch(&k_hc_head_pre, 1, 32, 0, s, m, scale, base, hc, eps, pre);
  LAUNCH_CHECK("k_hc_head_pre");
}

void hc_collapse(const float* X, const float* pre, int hc, int64_t D, float* y, cudaStream_t s, int64_t rows) {
  if (rows <= 0) return;
  ds4::cuda::launch(&k_hc_collapse, dim3(blocks_for(D), static_cast<unsigned>(rows)), kBlock, 0, s, X, pre, hc, D, y);
  LAUNCH_CHECK("k_hc_collapse");
}

void hc_expand(float* X, const float* out, const float* post, const float* comb, int hc, int64_t D, cudaStream_t s,
               int64_t rows) {
  if (hc > kMaxHc) throw_cuda_error(cudaErrorInvalidValue, "hc_expand: hc_count above 16", __FILE__, __LINE__);
  if (rows <= 0) return;
  ds4::cuda::launch(&k_hc_expand, dim3(blocks_for(D), static_cast<unsigned>(rows)), kBlock, 0, s, X, out, post, comb,
                    hc, D);
  LAUNCH_CHECK("k_hc_expand");
}

void hc_expand_moe(float* X, const float* ye, const float* ys, int K, const float* post, const float* comb, int hc,
                   int64_t D, int64_t rows, cudaStream_t s) {
  if (hc > kMaxHc) throw_cuda_error(cudaErrorInvalidValue, "hc_expand_moe: hc_count above 16", __FILE__, __LINE__);
  if (rows <= 0) return;
  ds4::cuda::launch(&k_hc_expand_moe, dim3(blocks_for(D), static_cast<unsigned>(rows)), kBlock, 0, s, X, ye, ys, K,
                    post, comb, hc, D);
  LAUNCH_CHECK("k_hc_expand_moe");
}

void rope(float* x, int64_t stride, int heads, const float* inv_freq, int pairs, int64_t pos, bool inverse,
          cudaStream_t s) {
  ds4::cuda::launch(&k_rope, blocks_for(int64_t{heads} * pairs), kBlock, 0, s, x, stride, heads, inv_freq, pairs, pos,
                    inverse);
  LAUNCH_CHECK("k_rope");
}

void kv_round(float* x, int64_t nope, int64_t n, cudaStream_t s) {
  ds4::cuda::launch(&k_fp8_blocks, blocks_for((nope + 63) / 64), kBlock, 0, s, x, nope);
  LAUNCH_CHECK("k_fp8_blocks");
  ds4::cuda::launch(&k_f16_round, blocks_for(n), kBlock, 0, s, x, n);
  LAUNCH_CHECK("k_f16_round");
}

void kv_rows(const float* src, int64_t hd, const float* w, float eps, int64_t nope, const float* inv_freq, int pairs,
             const KvRows& rows, cudaStream_t s) {
  if (rows.n <= 0) return;
  if (rows.n > kMaxRows) throw_cuda_error(cudaErrorInvalidValue, "kv_rows: more than 32 rows", __FILE__, __LINE__);
  ds4::cuda::launch(&k_kv_rows, static_cast<unsigned>(rows.n), rms_threads(1, hd),
                    static_cast<size_t>(hd) * sizeof(float), s, src, hd, w, eps, nope, inv_freq, pairs, rows);
  LAUNCH_CHECK("k_kv_rows");
}

void indexer_qat(float* x, int64_t rows, int64_t d, cudaStream_t s) {
  if (d <= 0 || (d & (d - 1)) != 0)
    throw_cuda_error(cudaErrorInvalidValue, "indexer_qat: row length not a power of two", __FILE__, __LINE__);
  if (rows <= 0) return;
  const unsigned wb = static_cast<unsigned>((rows * 32 + 127) / 128);
  switch (d) {
    case 32:
      ds4::cuda::launch(&k_indexer_qat_warp<1>, wb, 128, 0, s, x, rows);
      break;
    case 64:
      ds4::cuda::launch(&k_indexer_qat_warp<2>, wb, 128, 0, s, x, rows);
      break;
    case 128:
      ds4::cuda::launch(&k_indexer_qat_warp<4>, wb, 128, 0, s, x, rows);
      break;
    case 256:
      ds4::cuda::launch(&k_indexer_qat_warp<8>, wb, 128, 0, s, x, rows);
      break;
    default:
      ds4::cuda::launch(&k_indexer_qat, blocks_for(rows), kBlock, 0, s, x, rows, d);
  }
  LAUNCH_CHECK("k_indexer_qat");
}

void scale(float* x, int64_t n, float a, cudaStream_t s) {
  ds4::cuda::launch(&k_scale, blocks_for(n), kBlock, 0, s, x, n, a);
  LAUNCH_CHECK("k_scale");
}

__global__ void k_steer_row(float* y, const float* d, int64_t n, float s) {
  pdl_enter();
  double dot = 0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) dot += static_cast<double>(d[k]) * y[k];
  dot = block_sum(dot);
  const auto c = static_cast<float>(static_cast<double>(s) * dot);
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) y[k] -= c * d[k];
}

void steer_row(float* y, const float* d, int64_t n, float s, cudaStream_t st) {
  ds4::cuda::launch(&k_steer_row, 1, kBlock, 0, st, y, d, n, s);
  LAUNCH_CHECK("k_steer_row");
}

void add(float* y, const float* x, int64_t n, cudaStream_t s) {
  ds4::cuda::launch(&k_add, blocks_for(n), kBlock, 0, s, y, x, n);
  LAUNCH_CHECK("k_add");
}

void comp_rows(const CompShape& shape, const CompRows& segs, cudaStream_t s) {
  if (segs.n <= 0) return;
  if (segs.n > kMaxRows) throw_cuda_error(cudaErrorInvalidValue, "comp_rows: more than 32 segments", __FILE__, __LINE__);
  if (shape.indexer && (shape.d < 32 || shape.d > 256 || (shape.d & (shape.d - 1)) != 0))
    throw_cuda_error(cudaErrorInvalidValue, "comp_rows: indexer rows of 32, 64, 128 or 256 only", __FILE__, __LINE__);
  // rms_norm_rows of one row of d uses rms_threads(1, d) threads; the same
  // block width keeps the norm's sum in the same order.
  const int threads = rms_threads(1, shape.d);
  int64_t closings = 0;
  for (int i = 0; i < segs.n; ++i) closings += (segs.s[i].p0 + segs.s[i].n) / shape.ratio - segs.s[i].p0 / shape.ratio;
  if (closings > 0) {
    const int64_t cand = (shape.overlap ? 2 : 1) * int64_t{shape.ratio};
    const size_t smem = static_cast<size_t>(cand) * sizeof(CompSrc) + static_cast<size_t>(shape.d) * sizeof(float);
    if (smem > 48 * 1024)
      throw_cuda_error(cudaErrorInvalidValue, "comp_rows: window and row too large for one block", __FILE__, __LINE__);
    ds4::cuda::launch(&k_comp_pool, static_cast<unsigned>(closings), threads, smem, s, shape, segs);
    LAUNCH_CHECK("k_comp_pool");
  }
  const int64_t cw = (shape.overlap ? 2 : 1) * shape.d;
  int64_t touched = 0;
  for (int i = 0; i < segs.n; ++i) touched = std::max(touched, comp_touched(shape, segs.s[i]));
  const dim3 grid(static_cast<unsigned>((touched * cw + kBlock - 1) / kBlock), static_cast<unsigned>(segs.n));
  ds4::cuda::launch(&k_comp_frontier, grid, kBlock, 0, s, shape, segs);
  LAUNCH_CHECK("k_comp_frontier");
}

void indexer_scores(const float* rows, int64_t n, int64_t d, const float* q, const float* w, int heads, float* score,
                    cudaStream_t s) {
  if (heads > kMaxIndexerHeads)
    throw_cuda_error(cudaErrorInvalidValue, "indexer_scores: more than 128 indexer heads", __FILE__, __LINE__);
  if (n <= 0) return;
  score_smem_setup(d, heads);
  ds4::cuda::launch(&k_indexer_scores, static_cast<unsigned>((n + kScoreTile - 1) / kScoreTile), kScoreThreads,
                    score_smem(d, heads), s, rows, n, d, q, w, heads, score);
  LAUNCH_CHECK("k_indexer_scores");
}

void topk_select(const float* score, int64_t n, int64_t k, int32_t* sel, cudaStream_t s) {
  if (n <= 0 || k <= 0) return;
  if (n >= (int64_t{1} << 16) * kTopkThreads || k > n)
    throw_cuda_error(cudaErrorInvalidValue, "topk_select: k > n or more than 2^26 rows", __FILE__, __LINE__);
  ds4::cuda::launch(&k_topk, 1, kTopkThreads, 0, s, score, n, k, sel);
  LAUNCH_CHECK("k_topk");
}

void rope_rows(float* x, int64_t row_stride, int64_t stride, int heads, const float* inv_freq, int pairs,
               const Positions& p, bool inverse, cudaStream_t s) {
  if (p.n <= 0) return;
  if (p.n > kMaxRows) throw_cuda_error(cudaErrorInvalidValue, "rope_rows: more than 32 rows", __FILE__, __LINE__);
  ds4::cuda::launch(&k_rope_rows, dim3(blocks_for(int64_t{heads} * pairs), static_cast<unsigned>(p.n)), kBlock, 0, s, x,
                    row_stride, stride, heads, inv_freq, pairs, p, inverse);
  LAUNCH_CHECK("k_rope_rows");
}

void indexer_scores_rows(const IdxRows& rows, int64_t d, const float* q, int64_t q_stride, const float* w,
                         int64_t w_stride, int heads, cudaStream_t s) {
  if (heads > kMaxIndexerHeads)
    throw_cuda_error(cudaErrorInvalidValue, "indexer_scores: more than 128 indexer heads", __FILE__, __LINE__);
  if (rows.n > kMaxRows) throw_cuda_error(cudaErrorInvalidValue, "indexer_scores_rows: more than 32 rows", __FILE__, __LINE__);
  int64_t most = 0;
  for (int i = 0; i < rows.n; ++i) most = std::max(most, rows.r[i].n);
  if (most == 0) return;
  score_smem_setup(d, heads);
  ds4::cuda::launch(&k_indexer_scores_rows,
                    dim3(static_cast<unsigned>((most + kScoreTile - 1) / kScoreTile), static_cast<unsigned>(rows.n)),
                    kScoreThreads, score_smem(d, heads), s, rows, d, q, q_stride, w, w_stride, heads);
  LAUNCH_CHECK("k_indexer_scores_rows");
}

void topk_rows(const IdxRows& rows, int64_t k, cudaStream_t s) {
  if (rows.n > kMaxRows) throw_cuda_error(cudaErrorInvalidValue, "topk_rows: more than 32 rows", __FILE__, __LINE__);
  bool any = false;
  for (int i = 0; i < rows.n; ++i) {
    if (rows.r[i].n <= 0) continue;
    if (rows.r[i].n >= (int64_t{1} << 16) * kTopkThreads || k > rows.r[i].n || k <= 0)
      throw_cuda_error(cudaErrorInvalidValue, "topk_rows: k > n or more than 2^26 rows", __FILE__, __LINE__);
    any = true;
  }
  if (!any) return;
  ds4::cuda::launch(&k_topk_rows, static_cast<unsigned>(rows.n), kTopkThreads, 0, s, rows, k);
  LAUNCH_CHECK("k_topk_rows");
}

int64_t attend_rows_scratch_floats(int H, int64_t dim) { return int64_t{kMaxRows} * H * kAttnMaxSplits * (dim + 2); }
int64_t attend_scratch_floats(int H, int64_t dim) { return int64_t{H} * kAttnMaxSplits * (dim + 2); }

void attend_rows(const float* q, int H, int64_t dim, const AttnRows& rows, const float* sinks, float* out,
                 float* scratch, cudaStream_t s) {
  if (dim > 32 * kAttnMaxPerLane)
    throw_cuda_error(cudaErrorInvalidValue, "attend: head_dim above 1024", __FILE__, __LINE__);
  if (rows.n > kMaxRows) throw_cuda_error(cudaErrorInvalidValue, "attend_rows: more than 32 rows", __FILE__, __LINE__);
  if (rows.n <= 0) return;
  int S = 1;
  for (int i = 0; i < rows.n; ++i) S = std::max(S, attn_splits(rows.r[i].n_raw + rows.r[i].n_comp));
  const int per_lane = static_cast<int>((dim + 31) / 32);
  // Several rows (a prefill group): a block takes kAttnHeads heads, so each
  // key is read once per kAttnHeads heads instead of once per head. One row
  // (a decode step) keeps a block per head, for more blocks in flight.
  const int hg = rows.n >= 4 && H % kAttnHeads == 0 && per_lane <= 16 ? kAttnHeads : 1;
  const dim3 grid(static_cast<unsigned>(H / hg), static_cast<unsigned>(S), static_cast<unsigned>(rows.n));
  const size_t shm = (static_cast<size_t>(hg) * kAttnWarps * static_cast<size_t>(dim) + 2 * hg * kAttnWarps) *
                     sizeof(float);
  constexpr int T = kAttnWarps * 32;
  if (hg == kAttnHeads) {
    if (per_lane <= 4)
      ds4::cuda::launch(&k_attend_rows<4, kAttnHeads>, grid, T, shm, s, q, dim, rows, sinks, out, scratch);
    else if (per_lane <= 8)
      ds4::cuda::launch(&k_attend_rows<8, kAttnHeads>, grid, T, shm, s, q, dim, rows, sinks, out, scratch);
    else
      ds4::cuda::launch(&k_attend_rows<16, kAttnHeads>, grid, T, shm, s, q, dim, rows, sinks, out, scratch);
  } else if (per_lane <= 4) {
    ds4::cuda::launch(&k_attend_rows<4, 1>, grid, T, shm, s, q, dim, rows, sinks, out, scratch);
  } else if (per_lane <= 8) {
    ds4::cuda::launch(&k_attend_rows<8, 1>, grid, T, shm, s, q, dim, rows, sinks, out, scratch);
  } else if (per_lane <= 16) {
    ds4::cuda::launch(&k_attend_rows<16, 1>, grid, T, shm, s, q, dim, rows, sinks, out, scratch);
  } else {
    ds4::cuda::launch(&k_attend_rows<32, 1>, grid, T, shm, s, q, dim, rows, sinks, out, scratch);
  }
  LAUNCH_CHECK("k_attend_rows");
  if (S > 1) {
    ds4::cuda::launch(&k_attend_merge_rows, dim3(static_cast<unsigned>(H), static_cast<unsigned>(rows.n)), 128, 0, s,
                      scratch, dim, rows, out);
    LAUNCH_CHECK("k_attend_merge_rows");
  }
}

void attend(const float* q, int H, int64_t dim, const float* raw, int64_t window, int64_t p, int64_t n_raw,
            const float* comp, int64_t n_comp, const int32_t* sel, const float* sinks, float* out, float* scratch,
            cudaStream_t s) {
  AttnRows rows;
  rows.n = 1;
  rows.ring = window;
  rows.r[0] = {p, n_raw, n_comp, raw, comp, sel};
  attend_rows(q, H, dim, rows, sinks, out, scratch, s);
}

void route(const float* logits, int E, int K, const int32_t* hash_ids, const float* bias, bool norm, float wscale,
           int32_t* sel, float* w, cudaStream_t s) {
  Tokens one;
  one.n = 1;
  one.tok[0] = 0;
  route_rows(logits, E, K, hash_ids, one, bias, norm, wscale, sel, w, s);
}

void route_rows(const float* logits, int E, int K, const int32_t* hash_table, const Tokens& toks, const float* bias,
                bool norm, float wscale, int32_t* sel, float* w, cudaStream_t s) {
  if (E > kMaxExperts || K > E)
    throw_cuda_error(cudaErrorInvalidValue, "route: more than 1024 experts or K > E", __FILE__, __LINE__);
  if (toks.n > kMaxRows) throw_cuda_error(cudaErrorInvalidValue, "route_rows: more than 32 rows", __FILE__, __LINE__);
  if (toks.n <= 0) return;
  const auto g = static_cast<unsigned>(toks.n);
  if (E <= 256 && K <= kMaxRouteK) {
    ds4::cuda::launch(&k_route_warp<8>, g, 32, 0, s, logits, E, K, hash_table, toks, bias, norm, wscale, sel, w);
    LAUNCH_CHECK("k_route_warp");
    return;
  }
  const int threads = std::min(1024, (E + 31) / 32 * 32);
  ds4::cuda::launch(&k_route, g, threads, 0, s, logits, E, K, hash_table, toks, bias, norm, wscale, sel, w);
  LAUNCH_CHECK("k_route");
}

void swiglu(float* g, const float* u, int64_t n, float clamp, const float* wk, cudaStream_t s) {
  ds4::cuda::launch(&k_swiglu, blocks_for(n), kBlock, 0, s, g, u, n, clamp, wk);
  LAUNCH_CHECK("k_swiglu");
}

void swiglu_rows(float* g, const float* u, int64_t ff, int64_t rows, float clamp, const float* wts, cudaStream_t s) {
  const int64_t n = ff * rows;
  ds4::cuda::launch(&k_swiglu_rows, blocks_for(n), kBlock, 0, s, g, u, ff, n, clamp, wts);
  LAUNCH_CHECK("k_swiglu_rows");
}

void moe_sum(float* out, const float* ye, const float* ys, int64_t D, int K, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  ds4::cuda::launch(&k_moe_sum, blocks_for(n * D), kBlock, 0, s, out, ye, ys, D, K, n);
  LAUNCH_CHECK("k_moe_sum");
}

void add_rows(float* y, const float* x, int64_t n, int rows, cudaStream_t s) {
  ds4::cuda::launch(&k_add_rows, blocks_for(n), kBlock, 0, s, y, x, n, rows);
  LAUNCH_CHECK("k_add_rows");
}

}  // namespace ds4::cuda::fwd
