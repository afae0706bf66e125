#pragma once
// GGUF v2/v3 reader and writer.
//
// The reader memory-maps the file, parses the header, metadata and tensor
// directory with bounds checks on every read, and exposes tensor data as views
// into the map. Every malformed input produces a ds4::Error naming the file, the
// problem and the byte offset where it was found.
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "util/ggml_type.h"
#include "util/mapped_file.h"

namespace ds4::gguf {

enum class ValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6,
  BOOL = 7, STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
std::string_view value_type_name(ValueType t);

// A metadata value with its exact GGUF type, so a file read and written again is
// byte-identical. Arrays may nest.
struct Value {
  ValueType type = ValueType::UINT32;
  uint64_t u = 0;  // UINT8..UINT64 and BOOL
  int64_t i = 0;   // INT8..INT64
  double f = 0;    // FLOAT32, FLOAT64
  std::string s;   // STRING
  ValueType elem_type = ValueType::UINT8;  // ARRAY
  std::vector<Value> items;                // ARRAY

  static Value u8(uint8_t v) { return make_u(ValueType::UINT8, v); }
  static Value u16(uint16_t v) { return make_u(ValueType::UINT16, v); }
  static Value u32(uint32_t v) { return make_u(ValueType::UINT32, v); }
  static Value u64(uint64_t v) { return make_u(ValueType::UINT64, v); }
  static Value i8(int8_t v) { return make_i(ValueType::INT8, v); }
  static Value i16(int16_t v) { return make_i(ValueType::INT16, v); }
  static Value i32(int32_t v) { return make_i(ValueType::INT32, v); }
  static Value i64(int64_t v) { return make_i(ValueType::INT64, v); }
  static Value f32(float v);
  static Value f64(double v);
  static Value boolean(bool v) { return make_u(ValueType::BOOL, v ? 1 : 0); }
  static Value str(std::string v);
  static Value array(ValueType elem, std::vector<Value> items);
  static Value string_array(const std::vector<std::string>& v);
  static Value f32_array(const std::vector<float>& v);
  static Value i32_array(const std::vector<int32_t>& v);
  static Value u32_array(const std::vector<uint32_t>& v);

  bool is_integer() const;
  bool is_float() const { return type == ValueType::FLOAT32 || type == ValueType::FLOAT64; }
  // Conversions throw ds4::Error (naming `what`) when the type does not fit.
  uint64_t as_u64(std::string_view what = "value") const;
  int64_t as_i64(std::string_view what = "value") const;
  double as_f64(std::string_view what = "value") const;
  bool as_bool(std::string_view what = "value") const;
  const std::string& as_string(std::string_view what = "value") const;
  std::vector<std::string> as_string_array(std::string_view what = "value") const;

  // Short human-readable rendering; arrays longer than `max_items` are abbreviated.
  std::string to_string(size_t max_items = 8) const;
  bool operator==(const Value& o) const;

 private:
  static Value make_u(ValueType t, uint64_t v) {
    Value x;
    x.type = t;
    x.u = v;
    return x;
  }
  static Value make_i(ValueType t, int64_t v) {
    Value x;
    x.type = t;
    x.i = v;
    return x;
  }
};

constexpr int kMaxDims = 4;  // GGML_MAX_DIMS

struct TensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // ne[0] is the contiguous dimension
  uint64_t offset = 0;      // relative to the start of the data section
  size_t nbytes = 0;
  const uint8_t* data = nullptr;  // view into the mapping (reader only)

  int64_t n_elements() const;
  std::string shape_string() const;  // "[4096, 1024]"
};

// Byte size of a tensor of `type` and shape `ne`; throws if ne[0] is not a
// multiple of the block size or the size overflows.
size_t tensor_nbytes(GgmlType type, std::span<const int64_t> ne);

class File {
 public:
  // Opens and validates a GGUF file. Throws ds4::Error on any malformation.
  static File open(const std::string& path);

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_size() const { return size_; }

  // Metadata in file order.
  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;
  const Value& get(std::string_view key) const;  // throws if missing

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;
  const TensorInfo& tensor(std::string_view name) const;  // throws if missing

 private:
  std::shared_ptr<MappedFile> map_;  // null when parsed from caller-owned bytes
  std::string path_;
  uint64_t size_ = 0;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
  friend class Parser;
};

// Parses a GGUF image already in memory (used by the fuzz target and tests).
// `name` labels error messages. Tensor data views point into `bytes`.
File parse(std::span<const uint8_t> bytes, const std::string& name);

// Writer. Two ways to use it:
//  - in memory: add_tensor(name, type, ne, bytes) for every tensor, then write(path);
//  - streaming (for files larger than memory): declare every tensor with
//    add_tensor_info(), call begin(path), then write_tensor_data() once per tensor
//    in declaration order, then finish(). A tensor too large to hold in memory
//    may instead be written as several write_tensor_chunk() calls whose sizes
//    add up to the tensor's size.
class Writer {
 public:
  explicit Writer(uint32_t alignment = 32);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void set(const std::string& key, Value v);  // replaces an existing key in place
  void add_tensor_info(const std::string& name, GgmlType type, std::vector<int64_t> ne);
  void add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne,
                  std::span<const uint8_t> bytes);

  void write(const std::string& path);
  void begin(const std::string& path);
  void write_tensor_data(const std::string& name, std::span<const uint8_t> bytes);
  // Appends the next bytes of tensor `name` (the current one in declaration
  // order); the tensor is complete, and the next one current, once its size is
  // reached. Throws when a chunk would overrun the tensor.
  void write_tensor_chunk(const std::string& name, std::span<const uint8_t> bytes);
  void finish();

  // Serialized header (magic through padding before data) for the declared state.
  std::vector<uint8_t> header_bytes() const;
  // Bytes of the data section for the declared tensors (each padded to the alignment).
  uint64_t data_size() const { return data_size_; }

 private:
  struct Pending {
    TensorInfo info;
    std::vector<uint8_t> bytes;  // in-memory mode only
    bool has_bytes = false;
  };
  uint32_t alignment_;
  std::vector<std::pair<std::string, Value>> kv_;
  std::vector<Pending> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
  uint64_t data_size_ = 0;
  // streaming state
  struct Sink;
  std::unique_ptr<Sink> sink_;
  size_t next_tensor_ = 0;
  size_t chunk_written_ = 0;  // bytes of tensors_[next_tensor_] written so far
};

}  // namespace ds4::gguf
