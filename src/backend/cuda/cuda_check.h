#pragma once
// Checked CUDA runtime calls. Every call goes through DS4_CUDA_CHECK so that a
// failure becomes a ds4::Error naming the call, the file:line that made it and
// CUDA's own description; nothing is silently ignored. Plain C++ (no fmt, no
// CUDA language features) so .cu files can include it too.
#include <cuda_runtime_api.h>

namespace ds4::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);

inline void check(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) throw_cuda_error(err, call, file, line);
}

// Number of usable CUDA devices; 0 (not an error) when there is no driver or GPU.
int device_count();

}  // namespace ds4::cuda

#define DS4_CUDA_CHECK(call) ::ds4::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch. Launch errors (bad configuration, no kernel image for
// this GPU) show here; faults while the kernel runs show at the next
// synchronising call, which is checked too.
#define DS4_CUDA_CHECK_LAUNCH(kernel_name) ::ds4::cuda::check(cudaGetLastError(), "launch of " kernel_name, __FILE__, __LINE__)
