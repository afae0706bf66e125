#pragma once
// How fast the device reads memory it already holds (backend's
// measure_read_rates, for `ds4 bench`'s decode bound): a kernel that reads
// every 16 bytes of [p, p + bytes) once, best of a few runs, timed with events
// on stream s. sink: 4 bytes of device memory the kernel may write (so that
// the reads cannot be dropped).
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace ds4::cuda {
double read_gbps(const void* p, size_t bytes, uint32_t* sink, cudaStream_t s);
}  // namespace ds4::cuda
