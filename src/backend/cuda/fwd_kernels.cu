// Forward-pass kernels (see fwd_kernels.h). First version: correctness first,
// simple launch shapes (one block per row or head, single-thread kernels for
// the tiny sequential pieces such as Sinkhorn and routing), all f32.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/fwd_kernels.h"

namespace ds4::cuda::fwd {
namespace {

constexpr int kBlock = 256;

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kBlock - 1) / kBlock); }

__device__ __forceinline__ float sigmoidf(float z) { return 1.0f / (1.0f + expf(-z)); }

// Block-wide sum of a double (blockDim.x a multiple of 32, at most 1024).
__device__ double block_sum(double v) {
  __shared__ double part[32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
  __syncthreads();  // part may still be read by a previous call
  if (lane == 0) part[w] = v;
  __syncthreads();
  double t = 0;
  for (int i = 0; i < static_cast<int>(blockDim.x >> 5); ++i) t += part[i];
  return t;
}

__device__ float block_sum_f(float v) { return static_cast<float>(block_sum(static_cast<double>(v))); }

__global__ void k_rms_norm(const float* x, const float* w, int64_t n, float eps, float* y) {
  const float* xr = x + blockIdx.x * n;
  float* yr = y + blockIdx.x * n;
  double ss = 0;
  const int step = static_cast<int>(blockDim.x);
  int64_t k = threadIdx.x;
  // Four loads in flight per thread: a single row (decode) runs on one block,
  // where a dependent load per iteration would leave it latency-bound.
  for (; k + 3 * step < n; k += 4 * step) {
    const float a = xr[k], b = xr[k + step], c = xr[k + 2 * step], d = xr[k + 3 * step];
    ss += static_cast<double>(a) * a;
    ss += static_cast<double>(b) * b;
    ss += static_cast<double>(c) * c;
    ss += static_cast<double>(d) * d;
  }
  for (; k < n; k += step) ss += static_cast<double>(xr[k]) * xr[k];
  ss = block_sum(ss);
  const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(n) + eps));
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) yr[k] = w ? xr[k] * inv * w[k] : xr[k] * inv;
}

__global__ void k_hc_fill(const float* e, int hc, int64_t D, float* X) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < hc * D) X[i] = e[i % D];
}

// One thread, for hc above 5 (k_hc_split_warp below serves up to 5, V4's 4
// included): the operations of cpu::hc_split_sinkhorn in the same order.
__global__ void k_hc_split(const float* m, const float* scale, const float* base, int hc, float eps, int iters,
                           float* pre, float* post, float* comb) {
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
                                float* pre, float* post, float* comb_out) {
  const int l = threadIdx.x;
  if (l < hc) {
    pre[l] = sigmoidf(scale[0] * m[l] + base[l]) + eps;
    post[l] = 2.0f * sigmoidf(scale[1] * m[hc + l] + base[hc + l]);
  }
  const bool live = l < hc * hc;
  const int i = live ? l / hc : 0, j = live ? l % hc : 0;
  float c = live ? scale[2] * m[2 * hc + l] + base[2 * hc + l] : 0.0f;
  float mx = -INFINITY;
  for (int k = 0; k < hc; ++k) mx = fmaxf(mx, __shfl_sync(0xffffffffu, c, i * hc + k));
  c = expf(c - mx);
  float sum = 0;
  for (int k = 0; k < hc; ++k) sum += __shfl_sync(0xffffffffu, c, i * hc + k);
  c = c / sum + eps;
  for (int it = 0; it < iters; ++it) {
    if (it > 0) {
      sum = 0;
      for (int k = 0; k < hc; ++k) sum += __shfl_sync(0xffffffffu, c, i * hc + k);
      c /= sum + eps;
    }
    sum = 0;
    for (int k = 0; k < hc; ++k) sum += __shfl_sync(0xffffffffu, c, k * hc + j);
    c /= sum + eps;
  }
  if (live) comb_out[l] = c;
}

__global__ void k_hc_head_pre(const float* m, const float* scale, const float* base, int hc, float eps, float* pre) {
  const int i = threadIdx.x;
  if (i < hc) pre[i] = sigmoidf(m[i] * scale[0] + base[i]) + eps;
}

__global__ void k_hc_collapse(const float* X, const float* pre, int hc, int64_t D, float* y) {
  const int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (d >= D) return;
  float s = 0;
  for (int i = 0; i < hc; ++i) s += pre[i] * X[i * D + d];
  y[d] = s;
}

constexpr int kMaxHc = 16;

__global__ void k_hc_expand(float* X, const float* out, const float* post, const float* comb, int hc, int64_t D) {
  const int64_t d = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (d >= D) return;
  float old[kMaxHc];
  for (int i = 0; i < hc; ++i) old[i] = X[i * D + d];
  for (int j = 0; j < hc; ++j) {
    float s = post[j] * out[d];
    for (int i = 0; i < hc; ++i) s += comb[i * hc + j] * old[i];
    X[j * D + d] = s;
  }
}

// Same arithmetic as cpu::Rope::apply: f32 angle, double cos/sin and products.
__global__ void k_rope(float* x, int64_t stride, int heads, const float* inv_freq, int pairs, int64_t pos, bool inverse) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= static_cast<int64_t>(heads) * pairs) return;
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
  const int64_t b = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) * 64;
  if (b >= nope) return;
  scaled_round(x + b, nope - b < 64 ? nope - b : 64, 64, 448.0f, 1e-4f, 3, -6);
}

__global__ void k_f16_round(float* x, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] = __half2float(__float2half_rn(x[i]));
}

// One thread per row: the butterflies in the CPU's order, then FP4 per 32.
__global__ void k_indexer_qat(float* x, int64_t rows, int64_t d) {
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

__global__ void k_scale(float* x, int64_t n, float a) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) x[i] *= a;
}

__global__ void k_add(float* y, const float* x, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) y[i] += x[i];
}

// ---- compressor, indexer, attention ---------------------------------------------

__global__ void k_comp_store(float* kv_row, float* score_row, const float* kv, const float* gate, const float* ape,
                             int64_t cw) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= cw) return;
  kv_row[j] = kv[j];
  score_row[j] = gate[j] + ape[j];
}

__global__ void k_comp_pool(const float* kv, const float* score, int64_t r, int64_t d, bool overlap, float* v) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= d) return;
  const int64_t cw = (overlap ? 2 : 1) * d, cand = overlap ? 2 * r : r;
  float mx = -INFINITY;
  for (int64_t i = 0; i < cand; ++i) mx = fmaxf(mx, score[i * cw + (overlap && i >= r ? d + j : j)]);
  float den = 0, num = 0;
  for (int64_t i = 0; i < cand; ++i) {
    const int64_t col = overlap && i >= r ? d + j : j;
    const float e = expf(score[i * cw + col] - mx);
    den += e;
    num += e * kv[i * cw + col];
  }
  v[j] = num / den;
}

constexpr int kMaxIndexerHeads = 128;

// One block per compressed row; thread h computes head h's dot in the CPU's
// order, thread 0 sums the heads in order.
__global__ void k_indexer_scores(const float* rows, int64_t d, const float* q, const float* w, int heads, float* score) {
  __shared__ float part[kMaxIndexerHeads];
  const float* k = rows + blockIdx.x * d;
  for (int h = threadIdx.x; h < heads; h += blockDim.x) {
    float dot = 0;
    for (int64_t j = 0; j < d; ++j) dot += q[h * d + j] * k[j];
    part[h] = w[h] * fmaxf(dot, 0.0f);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float s = 0;
    for (int h = 0; h < heads; ++h) s += part[h];
    score[blockIdx.x] = s;
  }
}

// Single block: a row is selected when fewer than k rows beat it (higher score,
// or equal score and lower index); selected rows are then written in index order.
__global__ void k_topk(const float* score, int64_t n, int64_t k, int* flags, int32_t* sel) {
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
    const float sc = score[c];
    int64_t beat = 0;
    for (int64_t o = 0; o < n && beat < k; ++o) beat += score[o] > sc || (score[o] == sc && o < c);
    flags[c] = beat < k;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t m = 0;
    for (int64_t c = 0; c < n && m < k; ++c)
      if (flags[c]) sel[m++] = static_cast<int32_t>(c);
  }
}

constexpr int kAttnThreads = 128;
constexpr int kMaxDimPerThread = 8;  // head_dim up to 1024

// One block per head, online softmax over the keys (K = V), sink included.
__global__ void __launch_bounds__(kAttnThreads) k_attend(const float* q, int64_t dim, const float* raw, int64_t window,
                                                          int64_t p, int64_t n_raw, const float* comp, int64_t n_comp,
                                                          const int32_t* sel, const float* sinks, float* out) {
  const int h = blockIdx.x;
  const float* qh = q + h * dim;
  const float scale = 1.0f / sqrtf(static_cast<float>(dim));
  float acc[kMaxDimPerThread], qv[kMaxDimPerThread];
  int nk = 0;
  for (int64_t k = threadIdx.x; k < dim; k += kAttnThreads, ++nk) {
    acc[nk] = 0;
    qv[nk] = qh[k];
  }
  float mx = sinks[h], den = 1.0f;  // the sink's exp(sink - mx)
  const int64_t total = n_raw + n_comp;
  for (int64_t j = 0; j < total; ++j) {
    const float* key;
    if (j < n_raw) {
      const int64_t pos = p - n_raw + 1 + j;
      key = raw + (pos % window) * dim;
    } else {
      const int64_t c = j - n_raw;
      key = comp + (sel ? sel[c] : c) * dim;
    }
    float part = 0;
    int i = 0;
    for (int64_t k = threadIdx.x; k < dim; k += kAttnThreads, ++i) part += qv[i] * key[k];
    const float sc = block_sum_f(part) * scale;
    if (sc > mx) {
      const float c = expf(mx - sc);
      den *= c;
      for (int t = 0; t < nk; ++t) acc[t] *= c;
      mx = sc;
    }
    const float e = expf(sc - mx);
    den += e;
    i = 0;
    for (int64_t k = threadIdx.x; k < dim; k += kAttnThreads, ++i) acc[i] += e * key[k];
  }
  int i = 0;
  for (int64_t k = threadIdx.x; k < dim; k += kAttnThreads, ++i) out[h * dim + k] = acc[i] / den;
}

// ---- MoE -----------------------------------------------------------------------

constexpr int kMaxExperts = 1024;

// One block: scores in parallel, then K rounds of a block-wide argmax (the
// highest biased score, the lowest index among equals, as the CPU's
// partial_sort orders them); the weights from thread 0 in selection order.
__global__ void k_route(const float* logits, int E, int K, const int32_t* hash_ids, const float* bias, bool norm,
                        float wscale, int32_t* sel, float* w) {
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
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ov > bv || (ov == bv && oi < bi)) {
        bv = ov;
        bi = oi;
      }
    }
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
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float gv = fminf(g[i], clamp);
  const float uv = fminf(fmaxf(u[i], -clamp), clamp);
  g[i] = gv * sigmoidf(gv) * uv * (wk ? *wk : 1.0f);
}

// Row r (of ff values) scaled by wts[r] (null: 1).
__global__ void k_swiglu_rows(float* g, const float* u, int64_t ff, int64_t n, float clamp, const float* wts) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float gv = fminf(g[i], clamp);
  const float uv = fminf(fmaxf(u[i], -clamp), clamp);
  g[i] = gv * sigmoidf(gv) * uv * (wts ? wts[i / ff] : 1.0f);
}

// y[i] += x[i] + x[n + i] + ... in row order (the order of separate adds).
__global__ void k_add_rows(float* y, const float* x, int64_t n, int rows) {
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
  const int threads = rows < 64 && n >= 4096 ? 1024 : kBlock;
  k_rms_norm<<<static_cast<unsigned>(rows), threads, 0, s>>>(x, w, n, eps, y);
  LAUNCH_CHECK("k_rms_norm");
}

void hc_fill(const float* e, int hc, int64_t D, float* X, cudaStream_t s) {
  k_hc_fill<<<blocks_for(hc * D), kBlock, 0, s>>>(e, hc, D, X);
  LAUNCH_CHECK("k_hc_fill");
}

void hc_split(const float* m, const float* scale, const float* base, int hc, float eps, int iters, float* pre,
              float* post, float* comb, cudaStream_t s) {
  if (hc * hc <= 32) k_hc_split_warp<<<1, 32, 0, s>>>(m, scale, base, hc, eps, iters, pre, post, comb);
  else k_hc_split<<<1, 1, 0, s>>>(m, scale, base, hc, eps, iters, pre, post, comb);
  LAUNCH_CHECK("k_hc_split");
}

void hc_head_pre(const float* m, const float* scale, const float* base, int hc, float eps, float* pre, cudaStream_t s) {
  k_hc_head_pre<<<1, 32, 0, s>>>(m, scale, base, hc, eps, pre);
  LAUNCH_CHECK("k_hc_head_pre");
}

void hc_collapse(const float* X, const float* pre, int hc, int64_t D, float* y, cudaStream_t s) {
  k_hc_collapse<<<blocks_for(D), kBlock, 0, s>>>(X, pre, hc, D, y);
  LAUNCH_CHECK("k_hc_collapse");
}

void hc_expand(float* X, const float* out, const float* post, const float* comb, int hc, int64_t D, cudaStream_t s) {
  if (hc > kMaxHc) throw_cuda_error(cudaErrorInvalidValue, "hc_expand: hc_count above 16", __FILE__, __LINE__);
  k_hc_expand<<<blocks_for(D), kBlock, 0, s>>>(X, out, post, comb, hc, D);
  LAUNCH_CHECK("k_hc_expand");
}

void rope(float* x, int64_t stride, int heads, const float* inv_freq, int pairs, int64_t pos, bool inverse,
          cudaStream_t s) {
  k_rope<<<blocks_for(int64_t{heads} * pairs), kBlock, 0, s>>>(x, stride, heads, inv_freq, pairs, pos, inverse);
  LAUNCH_CHECK("k_rope");
}

void kv_round(float* x, int64_t nope, int64_t n, cudaStream_t s) {
  k_fp8_blocks<<<blocks_for((nope + 63) / 64), kBlock, 0, s>>>(x, nope);
  LAUNCH_CHECK("k_fp8_blocks");
  k_f16_round<<<blocks_for(n), kBlock, 0, s>>>(x, n);
  LAUNCH_CHECK("k_f16_round");
}

void indexer_qat(float* x, int64_t rows, int64_t d, cudaStream_t s) {
  if (d <= 0 || (d & (d - 1)) != 0)
    throw_cuda_error(cudaErrorInvalidValue, "indexer_qat: row length not a power of two", __FILE__, __LINE__);
  k_indexer_qat<<<blocks_for(rows), kBlock, 0, s>>>(x, rows, d);
  LAUNCH_CHECK("k_indexer_qat");
}

void scale(float* x, int64_t n, float a, cudaStream_t s) {
  k_scale<<<blocks_for(n), kBlock, 0, s>>>(x, n, a);
  LAUNCH_CHECK("k_scale");
}

__global__ void k_steer_row(float* y, const float* d, int64_t n, float s) {
  double dot = 0;
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) dot += static_cast<double>(d[k]) * y[k];
  dot = block_sum(dot);
  const auto c = static_cast<float>(static_cast<double>(s) * dot);
  for (int64_t k = threadIdx.x; k < n; k += blockDim.x) y[k] -= c * d[k];
}

void steer_row(float* y, const float* d, int64_t n, float s, cudaStream_t st) {
  k_steer_row<<<1, kBlock, 0, st>>>(y, d, n, s);
  LAUNCH_CHECK("k_steer_row");
}

void add(float* y, const float* x, int64_t n, cudaStream_t s) {
  k_add<<<blocks_for(n), kBlock, 0, s>>>(y, x, n);
  LAUNCH_CHECK("k_add");
}

void comp_store(float* kv_row, float* score_row, const float* kv, const float* gate, const float* ape_slot, int64_t cw,
                cudaStream_t s) {
  k_comp_store<<<blocks_for(cw), kBlock, 0, s>>>(kv_row, score_row, kv, gate, ape_slot, cw);
  LAUNCH_CHECK("k_comp_store");
}

void comp_pool(const float* kv, const float* score, int64_t r, int64_t d, bool overlap, float* v, cudaStream_t s) {
  k_comp_pool<<<blocks_for(d), kBlock, 0, s>>>(kv, score, r, d, overlap, v);
  LAUNCH_CHECK("k_comp_pool");
}

void indexer_scores(const float* rows, int64_t n, int64_t d, const float* q, const float* w, int heads, float* score,
                    cudaStream_t s) {
  if (heads > kMaxIndexerHeads)
    throw_cuda_error(cudaErrorInvalidValue, "indexer_scores: more than 128 indexer heads", __FILE__, __LINE__);
  if (n <= 0) return;
  k_indexer_scores<<<static_cast<unsigned>(n), 128, 0, s>>>(rows, d, q, w, heads, score);
  LAUNCH_CHECK("k_indexer_scores");
}

void topk_select(const float* score, int64_t n, int64_t k, int* flags, int32_t* sel, cudaStream_t s) {
  k_topk<<<1, 1024, 0, s>>>(score, n, k, flags, sel);
  LAUNCH_CHECK("k_topk");
}

void attend(const float* q, int H, int64_t dim, const float* raw, int64_t window, int64_t p, int64_t n_raw,
            const float* comp, int64_t n_comp, const int32_t* sel, const float* sinks, float* out, cudaStream_t s) {
  if (dim > int64_t{kAttnThreads} * kMaxDimPerThread)
    throw_cuda_error(cudaErrorInvalidValue, "attend: head_dim above 1024", __FILE__, __LINE__);
  k_attend<<<static_cast<unsigned>(H), kAttnThreads, 0, s>>>(q, dim, raw, window, p, n_raw, comp, n_comp, sel, sinks,
                                                             out);
  LAUNCH_CHECK("k_attend");
}

void route(const float* logits, int E, int K, const int32_t* hash_ids, const float* bias, bool norm, float wscale,
           int32_t* sel, float* w, cudaStream_t s) {
  if (E > kMaxExperts || K > E)
    throw_cuda_error(cudaErrorInvalidValue, "route: more than 1024 experts or K > E", __FILE__, __LINE__);
  const int threads = std::min(1024, (E + 31) / 32 * 32);
  k_route<<<1, threads, 0, s>>>(logits, E, K, hash_ids, bias, norm, wscale, sel, w);
  LAUNCH_CHECK("k_route");
}

void swiglu(float* g, const float* u, int64_t n, float clamp, const float* wk, cudaStream_t s) {
  k_swiglu<<<blocks_for(n), kBlock, 0, s>>>(g, u, n, clamp, wk);
  LAUNCH_CHECK("k_swiglu");
}

void swiglu_rows(float* g, const float* u, int64_t ff, int64_t rows, float clamp, const float* wts, cudaStream_t s) {
  const int64_t n = ff * rows;
  k_swiglu_rows<<<blocks_for(n), kBlock, 0, s>>>(g, u, ff, n, clamp, wts);
  LAUNCH_CHECK("k_swiglu_rows");
}

void add_rows(float* y, const float* x, int64_t n, int rows, cudaStream_t s) {
  k_add_rows<<<blocks_for(n), kBlock, 0, s>>>(y, x, n, rows);
  LAUNCH_CHECK("k_add_rows");
}

}  // namespace ds4::cuda::fwd
