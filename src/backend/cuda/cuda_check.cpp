#include "backend/cuda/cuda_check.h"

#include "util/error.h"

namespace ds4::cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  fail("CUDA error: {} failed at {}:{}: {} ({})", call, file, line, cudaGetErrorString(err), cudaGetErrorName(err));
}

int device_count() {
  int n = 0;
  // No driver / no device are answers here, not failures.
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

}  // namespace ds4::cuda
