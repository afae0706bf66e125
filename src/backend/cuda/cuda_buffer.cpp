#include "backend/cuda/cuda_buffer.h"

#include <cuda_runtime_api.h>

#include "backend/cuda/cuda_check.h"
#include "util/error.h"

namespace ds4::cuda {

DeviceBuffer::DeviceBuffer(size_t bytes) : size_(bytes) {
  if (bytes) DS4_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}

DeviceBuffer::~DeviceBuffer() {
  // A destructor cannot throw; a failing cudaFree means the context is already
  // broken and the next checked call reports it.
  if (ptr_) (void)cudaFree(ptr_);
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    if (ptr_) (void)cudaFree(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void DeviceBuffer::upload(const void* src, size_t bytes, size_t offset) {
  if (offset > size_ || bytes > size_ - offset) fail("device upload of {} bytes at {} overruns a {}-byte buffer", bytes, offset, size_);
  if (bytes) DS4_CUDA_CHECK(cudaMemcpy(static_cast<char*>(ptr_) + offset, src, bytes, cudaMemcpyHostToDevice));
}

void DeviceBuffer::download(void* dst, size_t bytes, size_t offset) const {
  if (offset > size_ || bytes > size_ - offset) fail("device download of {} bytes at {} overruns a {}-byte buffer", bytes, offset, size_);
  if (bytes) DS4_CUDA_CHECK(cudaMemcpy(dst, static_cast<const char*>(ptr_) + offset, bytes, cudaMemcpyDeviceToHost));
}

}  // namespace ds4::cuda
