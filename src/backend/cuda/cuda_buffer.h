#pragma once
// Owning device allocation (plain cudaMalloc: no managed memory, so a program
// can never oversubscribe the GPU through page faults), and a non-owning view
// of part of one. Every device allocation of the backend goes through
// DeviceBuffer, so its counters (alloc_stats) see all of them: the forward-pass
// tests assert they do not move inside forward() (docs/cuda-backend.md).
#include <cstddef>
#include <cstdint>
#include <utility>

namespace ds4::cuda {

// Process-wide counts of DeviceBuffer's cudaMalloc / cudaFree calls.
struct AllocStats {
  uint64_t mallocs = 0;     // cudaMalloc calls so far
  uint64_t frees = 0;       // cudaFree calls so far
  uint64_t live_bytes = 0;  // bytes allocated and not yet freed
};
AllocStats alloc_stats();

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t size() const { return size_; }

  // Synchronous copies; bounds are checked (a ds4::Error, not a fault).
  void upload(const void* src, size_t bytes, size_t offset = 0);
  void download(void* dst, size_t bytes, size_t offset = 0) const;

 private:
  void release() noexcept;
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// `bytes` bytes of device memory owned by someone else (a slab carved into
// parts). Null with size 0 when default-constructed.
class DeviceSpan {
 public:
  DeviceSpan() = default;
  DeviceSpan(void* p, size_t bytes) : ptr_(p), size_(bytes) {}
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t size() const { return size_; }
  // Synchronous copies, bounds checked as DeviceBuffer's; the caller makes
  // sure no queued work still uses the memory.
  void upload(const void* src, size_t bytes) const;
  void download(void* dst, size_t bytes) const;
  void fill_zero() const;

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ds4::cuda
