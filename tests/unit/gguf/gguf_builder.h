#pragma once
// Hand-assembles GGUF bytes field by field, so tests can produce exactly the
// malformed files the reader must reject (our Writer refuses to make them).
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace ds4::testing {

struct RawGguf {
  std::vector<uint8_t> b;
  template <typename T>
  RawGguf& put(T v) {
    const size_t at = b.size();
    b.resize(at + sizeof(T));
    std::memcpy(b.data() + at, &v, sizeof(T));
    return *this;
  }
  RawGguf& str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  RawGguf& header(uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    put<uint32_t>(0x46554747);
    put<uint32_t>(version);
    put<uint64_t>(n_tensors);
    put<uint64_t>(n_kv);
    return *this;
  }
  RawGguf& kv_u32(const std::string& key, uint32_t v) {
    str(key);
    put<uint32_t>(4);
    put<uint32_t>(v);
    return *this;
  }
  RawGguf& tensor(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name);
    put<uint32_t>(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) put<uint64_t>(d);
    put<uint32_t>(type);
    put<uint64_t>(offset);
    return *this;
  }
  RawGguf& pad(size_t align) {
    b.resize((b.size() + align - 1) / align * align, 0);
    return *this;
  }
  RawGguf& zeros(size_t n) {
    b.resize(b.size() + n, 0);
    return *this;
  }
};

}  // namespace ds4::testing
