// pdl.h: whether kernel launches are programmatic.
#include "backend/cuda/pdl.h"

#include <cuda_runtime.h>

#include <array>
#include <atomic>

#include "backend/cuda/cuda_check.h"

namespace ds4::cuda {
namespace {

thread_local bool allowed = true;

// Per device: 0 not asked yet, 1 unsupported, 2 supported.
std::array<std::atomic<int>, 64> support{};

bool supported() {
  int dev = 0;
  DS4_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 0 || static_cast<size_t>(dev) >= support.size()) return false;
  std::atomic<int>& s = support[static_cast<size_t>(dev)];
  int v = s.load(std::memory_order_relaxed);
  if (v == 0) {
    int major = 0;
    DS4_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    v = major >= 9 ? 2 : 1;
    s.store(v, std::memory_order_relaxed);
  }
  return v == 2;
}

}  // namespace

bool pdl_on() { return allowed && supported(); }

PdlScope::PdlScope(bool allow) : prev_(allowed) { allowed = allow; }
PdlScope::~PdlScope() { allowed = prev_; }

}  // namespace ds4::cuda
