#pragma once
// Pieces shared by the CUDA matvec kernels (quant_kernels.cu: f32
// activations; q8_kernels.cu: quantized activations): loads, reductions,
// launch arithmetic, and the warp-per-rows loop both kernels run.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <mutex>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_fail.h"
#include "backend/cuda/launch.cuh"

namespace ds4::cuda::kc {

__device__ __forceinline__ uint32_t ld_u16(const uint8_t* p) { return __ldg(reinterpret_cast<const unsigned short*>(p)); }
__device__ __forceinline__ uint32_t ld_u32(const uint8_t* p) { return __ldg(reinterpret_cast<const unsigned int*>(p)); }
__device__ __forceinline__ uint4 ld_u128(const void* p) { return __ldg(reinterpret_cast<const uint4*>(p)); }
__device__ __forceinline__ float f16f(uint32_t h) { return __half2float(__ushort_as_half(static_cast<unsigned short>(h))); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

inline unsigned grid_for(int64_t threads, int block) {
  const int64_t blocks = (threads + block - 1) / block;
  if (blocks > 0x7fffffff) fail_shape("launch (too many blocks)", GgmlType::F32, threads, block);
  return static_cast<unsigned>(blocks);
}

inline bool aligned(const void* p, int a) { return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(a) == 0; }

// Runs upload() the first time it is asked for on the current device: a .cu
// file's __device__ tables exist once per device. Tag gives each caller its
// own record (a type from the caller's anonymous namespace).
template <class Tag, class F>
void once_per_device(F&& upload) {
  static std::mutex mu;
  static std::vector<bool> done;
  int dev = 0;
  DS4_CUDA_CHECK(cudaGetDevice(&dev));
  const auto d = static_cast<size_t>(dev);
  const std::lock_guard<std::mutex> lock(mu);
  if (d < done.size() && done[d]) return;
  upload();
  if (done.size() <= d) done.resize(d + 1, false);
  done[d] = true;
}

// The rows warp_rows will give this warp, asked of L2 before the kernel
// waits for its predecessor (launch.cuh): weights are never written, so a
// kernel launched early fetches them while the previous kernel finishes.
template <int R, int kBlockThreads>
__device__ __forceinline__ void prefetch_warp_rows(const uint8_t* w, int64_t row_bytes, int64_t rows) {
  const int64_t row0 = ((static_cast<int64_t>(blockIdx.x) * kBlockThreads + threadIdx.x) >> 5) * R;
  if (row0 >= rows) return;
  const int64_t n = rows - row0 < R ? rows - row0 : R;
  prefetch_l2(w + row0 * row_bytes, n * row_bytes, static_cast<int>(threadIdx.x & 31));
}

// One warp per R rows of a row-major weight: lane l takes units l, l+32, ...
// of every row (T::PARTS units per block of T::BYTES bytes), so the 32 lanes
// read one contiguous stretch per step and each weight byte is loaded once.
// kUnroll steps per trip issue all their loads before any math, keeping
// kUnroll * R loads in flight per lane. math(raw, b, p, acc) adds unit p of
// block b (raw[r]: row r's bytes) into acc[r]. Rows past the end (last warp
// only) re-read the last row and their sums are dropped. Threads of a warp
// with no rows return early, so call this after any __syncthreads.
template <class T, int R, int kBlockThreads, int kUnroll, class Math>
__device__ __forceinline__ void warp_rows(const uint8_t* w, int64_t row_bytes, int64_t rows, int64_t nunits, float* y,
                                          Math&& math) {
  const int lane = threadIdx.x & 31;
  const int64_t row0 = ((static_cast<int64_t>(blockIdx.x) * kBlockThreads + threadIdx.x) >> 5) * R;
  if (row0 >= rows) return;
  const uint8_t* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w + (row0 + r < rows ? row0 + r : rows - 1) * row_bytes;
  float acc[R];
#pragma unroll
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  for (int64_t u0 = lane; u0 < nunits; u0 += 32 * kUnroll) {
    typename T::Raw raw[kUnroll][R];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t u = u0 + 32 * k;
      if (u < nunits) {
#pragma unroll
        for (int r = 0; r < R; ++r) raw[k][r] = T::load(wr[r] + u / T::PARTS * T::BYTES, static_cast<int>(u % T::PARTS));
      }
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t u = u0 + 32 * k;
      if (u < nunits) math(raw[k], u / T::PARTS, static_cast<int>(u % T::PARTS), acc);
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const float v = warp_sum(acc[r]);
    if (lane == 0 && row0 + r < rows) y[row0 + r] = v;
  }
}

}  // namespace ds4::cuda::kc
