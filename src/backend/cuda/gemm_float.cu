// Float-weight products of many f32 activation rows at once: the f16 tensors
// of the quantized recipes (HC mixers, compressors, indexer, router) and
// whole f32/f16/bf16 models, for a prefill chunk or a wide batch
// (docs/cuda-backend.md, "Prefill products").
//
// The matvec (quant_kernels.cu) reads the weight once per activation row; a
// 256-row prefill pass would read each of these matrices 256 times. Here a
// block stages a 64-row x 32-column weight tile (as f32) and the matching
// tile of 64 activation rows in shared memory and each thread forms 4 x 4
// outputs with f32 FMAs, so the weight is read once per 64 rows.
//
// Split k: the mixers (24 rows by 16384 columns) and the router (256 by 4096)
// have too few row tiles to fill the card (one and four blocks per 64 rows of
// activations), so their columns are cut into up to 64 slices of at least 256,
// each slice's partial sums go to scratch and a second kernel adds the slices
// in order. The slicing depends on the weight's shape only, never on the
// number of activation rows, so a row's result does not depend on how many
// rows share its pass. Within a slice the sum runs over k in ascending order;
// the result differs from the matvec's (lane-split, then a warp reduction) by
// rounding only.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_fail.h"
#include "backend/cuda/cuda_quant.h"
#include "backend/cuda/kernel_common.cuh"
#include "backend/cuda/launch.cuh"

namespace ds4::cuda {

namespace {

constexpr int kTile = 64;  // weight rows and activation rows per block
constexpr int kK = 32;     // columns per step
constexpr int kThreads = 256;
// Split k until a weight has this many (row tile, slice) pairs, with slices of
// at least kMinSlice columns.
constexpr int64_t kTargetTiles = 64;
constexpr int64_t kMinSlice = 256;

struct Split {
  int64_t slices, width;  // width: columns per slice, a multiple of kK
};
Split split_k(int64_t rows, int64_t cols) {
  const int64_t row_tiles = (rows + kTile - 1) / kTile;
  int64_t s = std::min((kTargetTiles + row_tiles - 1) / row_tiles, std::max<int64_t>(cols / kMinSlice, 1));
  if (row_tiles >= kTargetTiles) s = 1;
  int64_t width = (cols + s - 1) / s;
  width = (width + kK - 1) / kK * kK;
  return {(cols + width - 1) / width, width};
}

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
                                                         float* __restrict__ y, int64_t y_stride, int64_t width,
                                                         int64_t slice_stride) {
  pdl_enter();
  __shared__ float ws[kK][kTile + 4];  // [k][weight row]
  __shared__ float xs[kK][kTile + 4];  // [k][activation row]
  const int tid = static_cast<int>(threadIdx.x), tr = tid % 16, tt = tid / 16;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kTile, t0 = static_cast<int64_t>(blockIdx.y) * kTile;
  float acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
  // Slice z: columns [kb, ke); its sums go to y + z * slice_stride.
  const int64_t kb = static_cast<int64_t>(blockIdx.z) * width, ke = min(cols, kb + width);
  y += static_cast<int64_t>(blockIdx.z) * slice_stride;
  for (int64_t k0 = kb; k0 < ke; k0 += kK) {
    // Consecutive threads take consecutive columns of one row: coalesced.
    for (int i = tid; i < kTile * kK; i += kThreads) {
      const int r = i / kK, k = i % kK;
      const int64_t gr = r0 + r, gk = k0 + k;
      ws[k][r] = gr < rows && gk < ke ? L::at(w, gr * cols + gk) : 0.0f;
      const int64_t gt = t0 + r;
      xs[k][r] = gt < n && gk < ke ? __ldg(x + gt * x_stride + gk) : 0.0f;
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

// y[t][r] = the slices' partial sums of (t, r) added in slice order.
__global__ void k_sum_slices(const float* __restrict__ part, int64_t slices, int64_t rows, int64_t n,
                             float* __restrict__ y, int64_t y_stride) {
  pdl_enter();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * n) return;
  const int64_t t = i / rows, r = i % rows;
  float acc = part[i];
  for (int64_t z = 1; z < slices; ++z) acc += part[z * rows * n + i];
  y[t * y_stride + r] = acc;
}

template <class L>
void launch(const void* w, int64_t rows, int64_t cols, const float* x, int64_t x_stride, int64_t n, float* y,
            int64_t y_stride, float* scratch, size_t scratch_bytes, cudaStream_t s) {
  const int64_t gy = (n + kTile - 1) / kTile;
  if (gy > 65535) fail_limit("matmul_float: activation tiles", gy, 65535);
  const Split sp = split_k(rows, cols);
  const dim3 grid(kc::grid_for(rows, kTile), static_cast<unsigned>(gy), static_cast<unsigned>(sp.slices));
  if (sp.slices == 1) {
    ds4::cuda::launch(&k_gemm_float<L>, grid, kThreads, 0, s, w, rows, cols, x, x_stride, n, y, y_stride, sp.width, 0);
  } else {
    // Partial sums packed as [slice][t][r].
    const size_t need = static_cast<size_t>(sp.slices * n * rows) * sizeof(float);
    if (need > scratch_bytes) fail_scratch("matmul_float", scratch_bytes, need);
    ds4::cuda::launch(&k_gemm_float<L>, grid, kThreads, 0, s, w, rows, cols, x, x_stride, n, scratch, rows, sp.width,
                      n * rows);
    DS4_CUDA_CHECK(cudaGetLastError());
    ds4::cuda::launch(&k_sum_slices, kc::grid_for(rows * n, 256), 256, 0, s, scratch, sp.slices, rows, n, y, y_stride);
  }
  DS4_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

size_t matmul_float_scratch(int64_t rows, int64_t cols, int64_t n) {
  const Split sp = split_k(rows, cols);
  return sp.slices == 1 ? 0 : static_cast<size_t>(sp.slices * rows * n) * sizeof(float);
}

size_t matmul_float_scratch_bound(int64_t n) {
  // Slices are split only below kTargetTiles row tiles, and then
  // slices * row_tiles < kTargetTiles + row_tiles <= 2 * kTargetTiles.
  return static_cast<size_t>(2 * kTargetTiles * kTile * n) * sizeof(float);
}

void matmul_float(GgmlType t, const void* w, int64_t rows, int64_t cols, const float* x, int64_t x_stride, int64_t n,
                  float* y, int64_t y_stride, float* scratch, size_t scratch_bytes, cudaStream_t s) {
  if (rows <= 0 || cols <= 0 || n <= 0) return;
  switch (t) {
    case GgmlType::F32: return launch<LoadF32>(w, rows, cols, x, x_stride, n, y, y_stride, scratch, scratch_bytes, s);
    case GgmlType::F16: return launch<LoadF16>(w, rows, cols, x, x_stride, n, y, y_stride, scratch, scratch_bytes, s);
    case GgmlType::BF16:
      return launch<LoadBF16>(w, rows, cols, x, x_stride, n, y, y_stride, scratch, scratch_bytes, s);
    default: fail_unsupported("matmul_float", t);
  }
}

}  // namespace ds4::cuda
