#include <bit>
#include <cstring>
#include <limits>

#include "gguf/gguf.h"
#include "util/error.h"

namespace ds4::gguf {

namespace {
constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxKeyLen = 65535;
constexpr int kMaxArrayDepth = 8;
}  // namespace

int64_t TensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

std::string TensorInfo::shape_string() const {
  std::string s = "[";
  for (size_t k = 0; k < ne.size(); ++k) s += (k ? ", " : "") + std::to_string(ne[k]);
  return s + "]";
}

size_t tensor_nbytes(GgmlType type, std::span<const int64_t> ne) {
  auto info = ggml_type_info(static_cast<uint32_t>(type));
  if (!info) fail("unknown tensor type {}", static_cast<uint32_t>(type));
  if (ne.empty()) return info->block_bytes;
  if (ne[0] % info->block_size != 0)
    fail("row length {} is not a multiple of the {} block size {}", ne[0], info->name, info->block_size);
  // Row bytes first, then multiply by the other dims, checking overflow at each step.
  int64_t bytes = 0;
  if (__builtin_mul_overflow(ne[0] / info->block_size, static_cast<int64_t>(info->block_bytes), &bytes))
    fail("tensor size overflows");
  for (size_t k = 1; k < ne.size(); ++k)
    if (ne[k] < 0 || __builtin_mul_overflow(bytes, ne[k], &bytes)) fail("tensor size overflows");
  return static_cast<size_t>(bytes);
}

class Parser {
 public:
  Parser(std::span<const uint8_t> b, const std::string& name) : b_(b), name_(name) {}

  File run(std::shared_ptr<MappedFile> map) {
    File f;
    f.map_ = std::move(map);
    f.path_ = name_;
    f.size_ = b_.size();
    if (b_.size() < 4) fail("{}: not a GGUF file: only {} bytes", name_, b_.size());
    uint32_t magic = u32("magic");
    if (magic != kMagic) {
      fail("{}: not a GGUF file: bad magic {:02x} {:02x} {:02x} {:02x} at byte 0 (expected \"GGUF\")", name_, b_[0],
           b_[1], b_[2], b_[3]);
    }
    size_t at = pos_;
    f.version_ = u32("version");
    if (f.version_ != 2 && f.version_ != 3) {
      if (f.version_ == 1)
        fail("{}: GGUF version 1 at byte {} is obsolete; only versions 2 and 3 are supported", name_, at);
      if (__builtin_bswap32(f.version_) == 2 || __builtin_bswap32(f.version_) == 3)
        fail("{}: big-endian GGUF (version field at byte {} reads {}); only little-endian files are supported",
             name_, at, f.version_);
      fail("{}: unsupported GGUF version {} at byte {} (supported: 2, 3)", name_, f.version_, at);
    }
    at = pos_;
    uint64_t n_tensors = u64("tensor count");
    // Each tensor record takes at least 24 bytes and each metadata record 13, so
    // a count larger than the rest of the file allows is rejected before any
    // allocation.
    if (n_tensors > remaining() / 24)
      fail("{}: tensor count {} at byte {} is impossible for a file of {} bytes (truncated or corrupt)", name_,
           n_tensors, at, b_.size());
    at = pos_;
    uint64_t n_kv = u64("metadata count");
    if (n_kv > remaining() / 13)
      fail("{}: metadata count {} at byte {} is impossible for a file of {} bytes (truncated or corrupt)", name_, n_kv,
           at, b_.size());

    for (uint64_t k = 0; k < n_kv; ++k) {
      size_t key_at = pos_;
      std::string key = string(fmt::format("key of metadata entry {}", k), kMaxKeyLen);
      if (key.empty()) fail("{}: empty metadata key at byte {}", name_, key_at);
      if (f.kv_index_.count(key)) fail("{}: duplicate metadata key '{}' at byte {}", name_, key, key_at);
      size_t type_at = pos_;
      uint32_t t = u32(fmt::format("type of metadata '{}'", key));
      Value v = value(t, type_at, key, 0);
      f.kv_index_.emplace(key, f.kv_.size());
      f.kv_.emplace_back(std::move(key), std::move(v));
    }

    if (const Value* a = f.find("general.alignment")) {
      if (a->type != ValueType::UINT32)
        fail("{}: general.alignment must be u32, found {}", name_, value_type_name(a->type));
      if (a->u == 0 || (a->u & (a->u - 1)) != 0)
        fail("{}: general.alignment {} is not a power of two", name_, a->u);
      f.alignment_ = static_cast<uint32_t>(a->u);
    }

    f.tensors_.reserve(n_tensors);
    for (uint64_t k = 0; k < n_tensors; ++k) {
      size_t rec_at = pos_;
      TensorInfo ti;
      ti.name = string(fmt::format("name of tensor {}", k), kMaxKeyLen);
      if (f.tensor_index_.count(ti.name)) fail("{}: duplicate tensor name '{}' at byte {}", name_, ti.name, rec_at);
      size_t dims_at = pos_;
      uint32_t n_dims = u32(fmt::format("dimension count of tensor '{}'", ti.name));
      if (n_dims < 1 || n_dims > kMaxDims)
        fail("{}: tensor '{}' has {} dimensions at byte {} (allowed 1..{})", name_, ti.name, n_dims, dims_at,
             kMaxDims);
      for (uint32_t d = 0; d < n_dims; ++d) {
        size_t dim_at = pos_;
        uint64_t v = u64(fmt::format("dimension {} of tensor '{}'", d, ti.name));
        if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
          fail("{}: tensor '{}' dimension {} = {} at byte {} is out of range", name_, ti.name, d, v, dim_at);
        ti.ne.push_back(static_cast<int64_t>(v));
      }
      size_t type_at = pos_;
      uint32_t type = u32(fmt::format("type of tensor '{}'", ti.name));
      auto info = ggml_type_info(type);
      if (!info) fail("{}: tensor '{}' has unknown type id {} at byte {}", name_, ti.name, type, type_at);
      ti.type = info->type;
      size_t off_at = pos_;
      ti.offset = u64(fmt::format("data offset of tensor '{}'", ti.name));
      try {
        ti.nbytes = tensor_nbytes(ti.type, ti.ne);
      } catch (const Error& e) {
        fail("{}: tensor '{}' {} {} (record at byte {}): {}", name_, ti.name, info->name, ti.shape_string(), rec_at,
             e.what());
      }
      if (ti.offset % f.alignment_ != 0)
        fail("{}: tensor '{}' data offset {} (at byte {}) is not a multiple of the alignment {}", name_, ti.name,
             ti.offset, off_at, f.alignment_);
      f.tensor_index_.emplace(ti.name, f.tensors_.size());
      f.tensors_.push_back(std::move(ti));
    }

    uint64_t data_offset = (static_cast<uint64_t>(pos_) + f.alignment_ - 1) / f.alignment_ * f.alignment_;
    if (!f.tensors_.empty() && data_offset > b_.size())
      fail("{}: data section would start at byte {}, past the end of the file ({} bytes)", name_, data_offset,
           b_.size());
    f.data_offset_ = data_offset;
    for (auto& ti : f.tensors_) {
      uint64_t begin = data_offset + ti.offset;
      if (ti.offset > b_.size() || begin > b_.size() || ti.nbytes > b_.size() - begin)
        fail("{}: tensor '{}' data [{}, {}) runs past the end of the file ({} bytes); the file is truncated", name_,
             ti.name, begin, begin + ti.nbytes, b_.size());
      ti.data = b_.data() + begin;
    }
    return f;
  }

 private:
  size_t remaining() const { return b_.size() - pos_; }

  void need(size_t n, const std::string& what) {
    if (n > remaining())
      fail("{}: truncated at byte {} reading {}: need {} bytes, {} left", name_, pos_, what, n, remaining());
  }
  template <typename T>
  T raw(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  uint32_t u32(const std::string& what) { return raw<uint32_t>(what); }
  uint64_t u64(const std::string& what) { return raw<uint64_t>(what); }

  std::string string(const std::string& what, uint64_t max_len = UINT64_MAX) {
    size_t at = pos_;
    uint64_t len = u64("length of " + what);
    if (len > max_len) fail("{}: {} has length {} at byte {} (limit {})", name_, what, len, at, max_len);
    if (len > remaining())
      fail("{}: {} at byte {} claims {} bytes but only {} remain", name_, what, at, len, remaining());
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }

  static size_t min_size(ValueType t) {
    switch (t) {
      case ValueType::UINT8: case ValueType::INT8: case ValueType::BOOL: return 1;
      case ValueType::UINT16: case ValueType::INT16: return 2;
      case ValueType::UINT32: case ValueType::INT32: case ValueType::FLOAT32: return 4;
      case ValueType::UINT64: case ValueType::INT64: case ValueType::FLOAT64: case ValueType::STRING: return 8;
      case ValueType::ARRAY: return 12;
    }
    return 1;
  }

  Value value(uint32_t t, size_t type_at, const std::string& key, int depth) {
    if (t > static_cast<uint32_t>(ValueType::FLOAT64))
      fail("{}: metadata '{}' has unknown value type {} at byte {}", name_, key, t, type_at);
    Value v;
    v.type = static_cast<ValueType>(t);
    const std::string what = "value of metadata '" + key + "'";
    switch (v.type) {
      case ValueType::UINT8: v.u = raw<uint8_t>(what); break;
      case ValueType::UINT16: v.u = raw<uint16_t>(what); break;
      case ValueType::UINT32: v.u = raw<uint32_t>(what); break;
      case ValueType::UINT64: v.u = raw<uint64_t>(what); break;
      case ValueType::INT8: v.i = raw<int8_t>(what); break;
      case ValueType::INT16: v.i = raw<int16_t>(what); break;
      case ValueType::INT32: v.i = raw<int32_t>(what); break;
      case ValueType::INT64: v.i = raw<int64_t>(what); break;
      case ValueType::FLOAT32: v.f = raw<float>(what); break;
      case ValueType::FLOAT64: v.f = raw<double>(what); break;
      case ValueType::BOOL: {
        size_t at = pos_;
        uint8_t b = raw<uint8_t>(what);
        if (b > 1) fail("{}: metadata '{}' bool has value {} at byte {} (expected 0 or 1)", name_, key, b, at);
        v.u = b;
        break;
      }
      case ValueType::STRING: v.s = string(what); break;
      case ValueType::ARRAY: {
        if (depth >= kMaxArrayDepth)
          fail("{}: metadata '{}' nests arrays deeper than {} at byte {}", name_, key, kMaxArrayDepth, type_at);
        size_t et_at = pos_;
        uint32_t et = u32("element type of " + what);
        if (et > static_cast<uint32_t>(ValueType::FLOAT64))
          fail("{}: metadata '{}' array has unknown element type {} at byte {}", name_, key, et, et_at);
        v.elem_type = static_cast<ValueType>(et);
        size_t n_at = pos_;
        uint64_t n = u64("element count of " + what);
        if (n > remaining() / min_size(v.elem_type))
          fail("{}: metadata '{}' array of {} {} elements at byte {} cannot fit in the {} bytes left", name_, key, n,
               value_type_name(v.elem_type), n_at, remaining());
        v.items.reserve(static_cast<size_t>(n));
        for (uint64_t k = 0; k < n; ++k) v.items.push_back(value(et, et_at, key, depth + 1));
        break;
      }
    }
    return v;
  }

  std::span<const uint8_t> b_;
  std::string name_;
  size_t pos_ = 0;
};

File File::open(const std::string& path) {
  auto map = std::make_shared<MappedFile>(path);
  Parser p({map->data(), map->size()}, path);
  return p.run(map);
}

File parse(std::span<const uint8_t> bytes, const std::string& name) {
  Parser p(bytes, name);
  return p.run(nullptr);
}

const Value* File::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const Value& File::get(std::string_view key) const {
  const Value* v = find(key);
  if (!v) fail("{}: missing metadata key '{}'", path(), key);
  return *v;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::tensor(std::string_view name) const {
  const TensorInfo* t = find_tensor(name);
  if (!t) fail("{}: missing tensor '{}'", path(), name);
  return *t;
}

}  // namespace ds4::gguf
