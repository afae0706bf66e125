#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/read_rate.h"

namespace ds4::cuda {

namespace {

__global__ void read_kernel(const uint4* __restrict__ p, size_t n, uint32_t* sink) {
  pdl_enter();
  uint32_t acc = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(p + i);  // streamed: no reuse, keep it out of L2's way
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;  // almost never taken, but the loads must happen
}

}  // namespace

double read_gbps(const void* p, size_t bytes, uint32_t* sink, cudaStream_t s) {
  const size_t n = bytes / 16;
  if (n == 0) return 0;
  int dev = 0, sms = 0;
  DS4_CUDA_CHECK(cudaGetDevice(&dev));
  DS4_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaEvent_t a = nullptr, b = nullptr;
  DS4_CUDA_CHECK(cudaEventCreate(&a));
  DS4_CUDA_CHECK(cudaEventCreate(&b));
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    DS4_CUDA_CHECK(cudaEventRecord(a, s));
    ds4::cuda::launch(&read_kernel, sms * 8, 512, 0, s, static_cast<const uint4*>(p), n, sink);
    DS4_CUDA_CHECK(cudaGetLastError());
    DS4_CUDA_CHECK(cudaEventRecord(b, s));
    DS4_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    DS4_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    if (rep > 0 && ms > 0) best = std::max(best, static_cast<double>(n * 16) / (static_cast<double>(ms) * 1e6));
  }
  (void)cudaEventDestroy(a);
  (void)cudaEventDestroy(b);
  return best;
}

}  // namespace ds4::cuda
