#pragma once
// Kernel launches with programmatic dependent launch (PDL, sm_90 and later).
//
// A decode step is a chain of about a thousand small kernels, each depending
// on the one before. On a plain stream the next kernel is only scheduled once
// the previous one has finished and its writes are flushed, so every launch
// pays the GPU's launch latency with the SMs idle. With PDL the next kernel
// is launched while the previous one is still running; its blocks run what
// does not depend on the previous kernel (address arithmetic, prefetching
// weights into L2) and then wait (pdl_enter) until the previous kernel has
// completed and its memory is visible. The order of every kernel's reads and
// writes relative to its neighbours is therefore the stream's order: results
// are bit for bit those of plain launches (DS4_CUDA_PDL=0).
//
// Every kernel launched through launch() must call pdl_enter() before it
// touches memory written by an earlier kernel and before it writes memory an
// earlier kernel reads; all kernels here call it first thing (after at most
// a weight prefetch). A kernel that never calls it would race. Since a
// kernel's dependents may start only once all its blocks have passed
// pdl_enter(), the chain holds transitively: kernel n+2 waits for n+1's
// completion, which came after n's.
#include <cuda_runtime.h>

#include <cstdint>
#include <utility>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/pdl.h"

namespace ds4::cuda {

// Waits for the previous kernel of the stream (a no-op when this launch was
// not programmatic), then lets the next kernel of the stream be launched.
__device__ __forceinline__ void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Asks L2 for bytes [p, p + n) (one request per 128-byte line, the warp's
// lanes taking turns): for weights, which no kernel writes, before pdl_enter.
__device__ __forceinline__ void prefetch_l2(const void* p, int64_t n, int lane) {
  const auto* b = static_cast<const char*>(p);
  for (int64_t o = int64_t{lane} * 128; o < n; o += 32 * 128) asm volatile("prefetch.global.L2 [%0];" ::"l"(b + o));
}

// kernel<<<grid, block, smem, s>>>(args...), programmatic when pdl_on().
template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t s, A&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = s;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_on() ? 1u : 0u;
  DS4_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...));
}

}  // namespace ds4::cuda
