#include "backend/cuda/cuda_buffer.h"

#include <cuda_runtime_api.h>

#include <atomic>

#include "backend/cuda/cuda_check.h"
#include "util/error.h"

namespace ds4::cuda {
namespace {

std::atomic<uint64_t> g_mallocs{0}, g_frees{0}, g_live{0};

void check_range(const char* what, size_t bytes, size_t offset, size_t size) {
  if (offset > size || bytes > size - offset) fail("device {} of {} bytes at {} overruns a {}-byte buffer", what, bytes, offset, size);
}

}  // namespace

AllocStats alloc_stats() { return {g_mallocs.load(), g_frees.load(), g_live.load()}; }

DeviceBuffer::DeviceBuffer(size_t bytes) {
  if (!bytes) return;
  DS4_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  size_ = bytes;
  g_mallocs.fetch_add(1);
  g_live.fetch_add(bytes);
}

DeviceBuffer::~DeviceBuffer() { release(); }

void DeviceBuffer::release() noexcept {
  if (!ptr_) return;
  // A destructor cannot throw; a failing cudaFree means the context is already
  // broken and the next checked call reports it.
  (void)cudaFree(ptr_);
  g_frees.fetch_add(1);
  g_live.fetch_sub(size_);
  ptr_ = nullptr;
  size_ = 0;
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    release();
    ptr_ = std::exchange(o.ptr_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

void DeviceBuffer::upload(const void* src, size_t bytes, size_t offset) {
  check_range("upload", bytes, offset, size_);
  if (bytes) DS4_CUDA_CHECK(cudaMemcpy(static_cast<char*>(ptr_) + offset, src, bytes, cudaMemcpyHostToDevice));
}

void DeviceBuffer::download(void* dst, size_t bytes, size_t offset) const {
  check_range("download", bytes, offset, size_);
  if (bytes) DS4_CUDA_CHECK(cudaMemcpy(dst, static_cast<const char*>(ptr_) + offset, bytes, cudaMemcpyDeviceToHost));
}

void DeviceSpan::upload(const void* src, size_t bytes) const {
  check_range("upload", bytes, 0, size_);
  if (bytes) DS4_CUDA_CHECK(cudaMemcpy(ptr_, src, bytes, cudaMemcpyHostToDevice));
}

void DeviceSpan::download(void* dst, size_t bytes) const {
  check_range("download", bytes, 0, size_);
  if (bytes) DS4_CUDA_CHECK(cudaMemcpy(dst, ptr_, bytes, cudaMemcpyDeviceToHost));
}

void DeviceSpan::fill_zero() const {
  if (size_) DS4_CUDA_CHECK(cudaMemset(ptr_, 0, size_));
}

}  // namespace ds4::cuda
