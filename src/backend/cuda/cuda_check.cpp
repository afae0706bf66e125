#include "backend/cuda/cuda_check.h"

#include "util/error.h"

namespace ds4::cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  // The runtime also keeps the error as its "last error"; it is reported now, so
  // clear it, or the next launch check (cudaGetLastError) would report it again
  // as that kernel's failure. Sticky errors (a faulted context) stay: every
  // later call returns them anyway.
  (void)cudaGetLastError();
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
