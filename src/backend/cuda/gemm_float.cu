// Float-weight products of many f32 activation rows at once: the f16 tensors
// of the quantized recipes (HC mixers, compressors, indexer, router) and
// whole f32/f16/bf16 models, for a prefill chunk or a wide batch
// (docs/cuda-backend.md, "Prefill products").
//
// The matvec (quant_kernels.cu) reads the weight once per activation row; a
// 256-row prefill pass would read each of these matrices 256 times. Here a
// block stages a 64-row x 32-column weight tile (as f32) and the matching
// tile of 64 activation rows in shared memory and each thread forms 4 x 4
// outputs with f32 FMAs, so the weight is read once per 64 rows. Every sum
// runs over k in ascending order; the result differs from the matvec's
// (lane-split, then a warp reduction) by rounding only.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_fail.h"
#include "backend/cuda/cuda_quant.h"
#include "backend/cuda/kernel_common.cuh"

namespace ds4::cuda {

namespace {

constexpr int kTile = 64;  // weight rows and activation rows per block
constexpr int kK = 32;     // columns per step
constexpr int kThreads = 256;

struct LoadF32 {
  __device__ static float at(const void* w, int64_t i) { return __ldg(static_cast<const float*>(w) + i); }
};
struct LoadF16 {
  __device__ static float at(const void* w, int64_t i) { return __half2float(static_cast<const __half*>(w)[i]); }
};
struct LoadBF16 {
  __device__ static float at(const void* w, int64_t i) {
    return __bfloat162float(static_cast<const __nv_bfloat16*>(w)[i]);
  }
};

template <class L>
__global__ void __launch_bounds__(kThreads) k_gemm_float(const void* __restrict__ w, int64_t rows, int64_t cols,
                                                         const float* __restrict__ x, int64_t x_stride, int64_t n,
                                                         float* __restrict__ y, int64_t y_stride) {
  __shared__ float ws[kK][kTile + 4];  // [k][weight row]
  __shared__ float xs[kK][kTile + 4];  // [k][activation row]
  const int tid = static_cast<int>(threadIdx.x), tr = tid % 16, tt = tid / 16;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kTile, t0 = static_cast<int64_t>(blockIdx.y) * kTile;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
  for (int64_t k0 = 0; k0 < cols; k0 += kK) {
    // Consecutive threads take consecutive columns of one row: coalesced.
    for (int i = tid; i < kTile * kK; i += kThreads) {
      const int r = i / kK, k = i % kK;
      const int64_t gr = r0 + r, gk = k0 + k;
      ws[k][r] = gr < rows && gk < cols ? L::at(w, gr * cols + gk) : 0.0f;
      const int64_t gt = t0 + r;
      xs[k][r] = gt < n && gk < cols ? __ldg(x + gt * x_stride + gk) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kK; ++k) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = ws[k][tr + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = xs[k][tt + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t t = t0 + tt + 16 * j;
    if (t >= n) continue;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t r = r0 + tr + 16 * i;
      if (r < rows) y[t * y_stride + r] = acc[i][j];
    }
  }
}

template <class L>
void launch(const void* w, int64_t rows, int64_t cols, const float* x, int64_t x_stride, int64_t n, float* y,
            int64_t y_stride, cudaStream_t s) {
  const int64_t gy = (n + kTile - 1) / kTile;
  if (gy > 65535) fail_limit("matmul_float: activation tiles", gy, 65535);
  const dim3 grid(kc::grid_for(rows, kTile), static_cast<unsigned>(gy));
  k_gemm_float<L><<<grid, kThreads, 0, s>>>(w, rows, cols, x, x_stride, n, y, y_stride);
  DS4_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void matmul_float(GgmlType t, const void* w, int64_t rows, int64_t cols, const float* x, int64_t x_stride, int64_t n,
                  float* y, int64_t y_stride, cudaStream_t s) {
  if (rows <= 0 || cols <= 0 || n <= 0) return;
  switch (t) {
    case GgmlType::F32: return launch<LoadF32>(w, rows, cols, x, x_stride, n, y, y_stride, s);
    case GgmlType::F16: return launch<LoadF16>(w, rows, cols, x, x_stride, n, y, y_stride, s);
    case GgmlType::BF16: return launch<LoadBF16>(w, rows, cols, x, x_stride, n, y, y_stride, s);
    default: fail_unsupported("matmul_float", t);
  }
}

}  // namespace ds4::cuda
