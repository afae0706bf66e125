#pragma once
// Row arithmetic shared by the forward kernels (fwd_kernels.cu) and the fused
// HC pre-mix (quant_kernels.cu, which owns the weight types): the norm's
// block sum, the HC Sinkhorn split of one row by one warp and the collapse of
// one element, each written once so that every kernel that uses them rounds
// alike.
#include <cuda_runtime.h>

#include <cstdint>

namespace ds4::cuda::rm {

__device__ __forceinline__ float sigmoidf(float z) { return 1.0f / (1.0f + expf(-z)); }

// Block-wide sum of a double (blockDim.x a multiple of 32, at most 1024).
__device__ __forceinline__ double block_sum(double v) {
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

// The block width rms_norm_rows gives a row of n among `rows` (the norm's sum
// order depends on it; every kernel that norms a row the way it does uses it).
inline int rms_threads(int64_t rows, int64_t n) { return rows < 64 && n >= 4096 ? 1024 : 256; }

// y = x * inv * w (w null: x * inv): the normed value rms_norm_rows stores.
__device__ __forceinline__ float normed(const float* x, const float* w, int64_t k, float inv) {
  return w ? x[k] * inv * w[k] : x[k] * inv;
}

// 1 / rms of one row, for every thread of the block. The sum's order depends
// on the block's width only.
__device__ __forceinline__ float rms_inv(const float* xr, int64_t n, float eps) {
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
  return static_cast<float>(1.0 / sqrt(ss / static_cast<double>(n) + eps));
}

// HC coefficients of one row from its mixer output m (model-spec §5.2) by one
// warp (lane l; hc * hc <= 32), lane i*hc + j holding comb[i][j]: each row and
// column sum is gathered with shuffles in the index order of the CPU's serial
// loops (cpu::hc_split_sinkhorn), so the result is the same.
__device__ __forceinline__ void hc_split_warp_row(const float* m, const float* scale, const float* base, int hc,
                                                  float eps, int iters, float* pre, float* post, float* comb_out,
                                                  int l) {
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

// y[d] of the HC collapse: sum_i pre[i] X[i*D + d], i ascending.
__device__ __forceinline__ float hc_collapse_at(const float* X, const float* pre, int hc, int64_t D, int64_t d) {
  float s = 0;
  for (int i = 0; i < hc; ++i) s += pre[i] * X[i * D + d];
  return s;
}

// The SwiGLU of one value (model-spec §7): silu(min(g, c)) * clamp(u, -c, c),
// times the expert's routing weight w.
__device__ __forceinline__ float swiglu_value(float g, float u, float clamp, float w) {
  const float gv = fminf(g, clamp);
  const float uv = fminf(fmaxf(u, -clamp), clamp);
  return gv * sigmoidf(gv) * uv * w;
}

}  // namespace ds4::cuda::rm
