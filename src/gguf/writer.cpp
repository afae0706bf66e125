#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "gguf/gguf.h"
#include "util/error.h"

namespace ds4::gguf {

namespace {

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

class Bytes {
 public:
  template <typename T>
  void put(T v) {
    append(&v, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    append(s.data(), s.size());
  }
  void append(const void* p, size_t n) {
    if (!n) return;
    const size_t at = out.size();
    out.resize(at + n);
    std::memcpy(out.data() + at, p, n);
  }
  void put_value(const Value& v) {
    switch (v.type) {
      case ValueType::UINT8: put<uint8_t>(static_cast<uint8_t>(v.u)); break;
      case ValueType::UINT16: put<uint16_t>(static_cast<uint16_t>(v.u)); break;
      case ValueType::UINT32: put<uint32_t>(static_cast<uint32_t>(v.u)); break;
      case ValueType::UINT64: put<uint64_t>(v.u); break;
      case ValueType::INT8: put<int8_t>(static_cast<int8_t>(v.i)); break;
      case ValueType::INT16: put<int16_t>(static_cast<int16_t>(v.i)); break;
      case ValueType::INT32: put<int32_t>(static_cast<int32_t>(v.i)); break;
      case ValueType::INT64: put<int64_t>(v.i); break;
      case ValueType::FLOAT32: put<float>(static_cast<float>(v.f)); break;
      case ValueType::FLOAT64: put<double>(v.f); break;
      case ValueType::BOOL: put<uint8_t>(v.u ? 1 : 0); break;
      case ValueType::STRING: put_string(v.s); break;
      case ValueType::ARRAY:
        put<uint32_t>(static_cast<uint32_t>(v.elem_type));
        put<uint64_t>(v.items.size());
        for (const auto& it : v.items) put_value(it);
        break;
    }
  }
  std::vector<uint8_t> out;
};

}  // namespace

// Output file written under a temporary name and renamed into place by finish(),
// so an interrupted or failed write (disk full) never leaves a truncated file
// under the requested name.
struct Writer::Sink {
  std::string path, tmp;
  FILE* f = nullptr;
  uint64_t written = 0;

  void write(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f) != n) fail("{}: write failed after {} bytes: {}", path, written, std::strerror(errno));
    written += n;
  }
  void pad_to(uint64_t target) {
    static const uint8_t zeros[256] = {};
    while (written < target) write(zeros, static_cast<size_t>(std::min<uint64_t>(sizeof zeros, target - written)));
  }
  ~Sink() {
    if (f) {
      std::fclose(f);
      std::remove(tmp.c_str());
    }
  }
};

Writer::Writer(uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0) fail("gguf writer: alignment {} is not a power of two", alignment);
  if (alignment != 32) set("general.alignment", Value::u32(alignment));
}

Writer::~Writer() = default;

void Writer::set(const std::string& key, Value v) {
  if (sink_) fail("gguf writer: cannot set metadata '{}' after begin()", key);
  if (key == "general.alignment") {
    if (v.type != ValueType::UINT32 || v.u == 0 || (v.u & (v.u - 1)) != 0)
      fail("gguf writer: general.alignment must be a u32 power of two");
    if (!tensors_.empty()) fail("gguf writer: set general.alignment before adding tensors");
    alignment_ = static_cast<uint32_t>(v.u);
  }
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  }
  kv_.emplace_back(key, std::move(v));
}

void Writer::add_tensor_info(const std::string& name, GgmlType type, std::vector<int64_t> ne) {
  if (sink_) fail("gguf writer: cannot add tensor '{}' after begin()", name);
  if (tensor_index_.count(name)) fail("gguf writer: duplicate tensor '{}'", name);
  if (ne.empty() || ne.size() > static_cast<size_t>(kMaxDims))
    fail("gguf writer: tensor '{}' has {} dimensions (allowed 1..{})", name, ne.size(), kMaxDims);
  Pending p;
  p.info.name = name;
  p.info.type = type;
  p.info.ne = std::move(ne);
  try {
    p.info.nbytes = tensor_nbytes(type, p.info.ne);
  } catch (const Error& e) {
    fail("gguf writer: tensor '{}': {}", name, e.what());
  }
  p.info.offset = data_size_;
  data_size_ = align_up(data_size_ + p.info.nbytes, alignment_);
  tensor_index_.emplace(name, tensors_.size());
  tensors_.push_back(std::move(p));
}

void Writer::add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne,
                        std::span<const uint8_t> bytes) {
  add_tensor_info(name, type, std::move(ne));
  Pending& p = tensors_.back();
  if (bytes.size() != p.info.nbytes)
    fail("gguf writer: tensor '{}' {} {} needs {} bytes, got {}", name, ggml_type_name(type), p.info.shape_string(),
         p.info.nbytes, bytes.size());
  p.bytes.assign(bytes.begin(), bytes.end());
  p.has_bytes = true;
}

std::vector<uint8_t> Writer::header_bytes() const {
  Bytes b;
  b.put<uint32_t>(0x46554747);
  b.put<uint32_t>(3);
  b.put<uint64_t>(tensors_.size());
  b.put<uint64_t>(kv_.size());
  for (const auto& [k, v] : kv_) {
    b.put_string(k);
    b.put<uint32_t>(static_cast<uint32_t>(v.type));
    b.put_value(v);
  }
  for (const auto& p : tensors_) {
    b.put_string(p.info.name);
    b.put<uint32_t>(static_cast<uint32_t>(p.info.ne.size()));
    for (int64_t d : p.info.ne) b.put<uint64_t>(static_cast<uint64_t>(d));
    b.put<uint32_t>(static_cast<uint32_t>(p.info.type));
    b.put<uint64_t>(p.info.offset);
  }
  b.out.resize(align_up(b.out.size(), alignment_), 0);
  return std::move(b.out);
}

void Writer::begin(const std::string& path) {
  if (sink_) fail("gguf writer: begin() called twice");
  auto s = std::make_unique<Sink>();
  s->path = path;
  s->tmp = path + ".tmp";
  s->f = std::fopen(s->tmp.c_str(), "wb");
  if (!s->f) fail("{}: cannot create: {}", s->tmp, std::strerror(errno));
  auto header = header_bytes();
  s->write(header.data(), header.size());
  sink_ = std::move(s);
  next_tensor_ = 0;
  chunk_written_ = 0;
}

void Writer::write_tensor_data(const std::string& name, std::span<const uint8_t> bytes) {
  if (!sink_) fail("gguf writer: write_tensor_data('{}') before begin()", name);
  if (next_tensor_ < tensors_.size() && chunk_written_ != 0)
    fail("gguf writer: tensor '{}' is partly written in chunks ({} of {} bytes); finish it with write_tensor_chunk",
         tensors_[next_tensor_].info.name, chunk_written_, tensors_[next_tensor_].info.nbytes);
  if (next_tensor_ < tensors_.size() && tensors_[next_tensor_].info.name == name &&
      bytes.size() != tensors_[next_tensor_].info.nbytes)
    fail("gguf writer: tensor '{}' needs {} bytes, got {}", name, tensors_[next_tensor_].info.nbytes, bytes.size());
  write_tensor_chunk(name, bytes);
}

void Writer::write_tensor_chunk(const std::string& name, std::span<const uint8_t> bytes) {
  if (!sink_) fail("gguf writer: write_tensor_chunk('{}') before begin()", name);
  if (next_tensor_ >= tensors_.size()) fail("gguf writer: tensor '{}' was not declared", name);
  const TensorInfo& ti = tensors_[next_tensor_].info;
  if (ti.name != name) fail("gguf writer: expected data for tensor '{}', got '{}'", ti.name, name);
  if (bytes.size() > ti.nbytes - chunk_written_)
    fail("gguf writer: tensor '{}' needs {} bytes, got {} (chunk of {} after {})", name, ti.nbytes,
         chunk_written_ + bytes.size(), bytes.size(), chunk_written_);
  sink_->write(bytes.data(), bytes.size());
  chunk_written_ += bytes.size();
  if (chunk_written_ < ti.nbytes) return;
  const uint64_t data_start = sink_->written - ti.nbytes - ti.offset;
  chunk_written_ = 0;
  ++next_tensor_;
  sink_->pad_to(data_start + (next_tensor_ < tensors_.size() ? tensors_[next_tensor_].info.offset : data_size_));
}

void Writer::finish() {
  if (!sink_) fail("gguf writer: finish() before begin()");
  if (next_tensor_ != tensors_.size())
    fail("{}: only {} of {} tensors were written (next: '{}', {} of {} bytes)", sink_->path, next_tensor_,
         tensors_.size(), tensors_[next_tensor_].info.name, chunk_written_, tensors_[next_tensor_].info.nbytes);
  if (std::fflush(sink_->f) != 0 || std::ferror(sink_->f))
    fail("{}: write failed: {}", sink_->path, std::strerror(errno));
  int rc = std::fclose(sink_->f);
  sink_->f = nullptr;
  if (rc != 0) {
    std::remove(sink_->tmp.c_str());
    fail("{}: close failed: {}", sink_->path, std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::rename(sink_->tmp, sink_->path, ec);
  if (ec) {
    std::remove(sink_->tmp.c_str());
    fail("{}: cannot rename from {}: {}", sink_->path, sink_->tmp, ec.message());
  }
  sink_.reset();
}

void Writer::write(const std::string& path) {
  for (const auto& p : tensors_)
    if (!p.has_bytes) fail("gguf writer: tensor '{}' has no data; use the streaming API", p.info.name);
  begin(path);
  for (const auto& p : tensors_) write_tensor_data(p.info.name, p.bytes);
  finish();
}

}  // namespace ds4::gguf
