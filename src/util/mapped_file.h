#pragma once
// Read-only memory map of a whole file. Weight tensors are views into this map
// and are never copied on the CPU path.
#include <cstddef>
#include <cstdint>
#include <string>

namespace ds4 {

class MappedFile {
 public:
  MappedFile() = default;
  // Throws ds4::Error naming the path and the OS error.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& o) noexcept;
  MappedFile& operator=(MappedFile&& o) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ds4
