#pragma once
// safetensors reader: one file, or a sharded checkpoint described by
// model.safetensors.index.json. Tensors are views into memory maps.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "util/mapped_file.h"

namespace ds4::safetensors {

enum class DType { F64, F32, F16, BF16, F8_E4M3, F8_E5M2, I64, I32, I16, I8, U8, BOOL, U16, U32, U64, F8_E8M0, F4 };
std::string_view dtype_name(DType d);
size_t dtype_bits(DType d);  // F4 is 4 bits

struct Tensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // torch order: last dimension is contiguous
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // the shard holding it

  int64_t n_elements() const;
  std::string shape_string() const;
  // Element k converted to float (F32/F16/BF16/F8/integer dtypes).
  std::vector<float> to_f32() const;
};

class Checkpoint {
 public:
  // `path` is a .safetensors file, a model.safetensors.index.json, or a folder
  // holding either. Throws ds4::Error naming the file and the problem.
  static Checkpoint open(const std::string& path);

  const std::vector<std::string>& names() const { return names_; }  // sorted
  const Tensor* find(std::string_view name) const;
  const Tensor& get(std::string_view name) const;  // throws if missing
  // The string metadata of the first shard's "__metadata__" entry.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  void add_file(const std::string& path, bool first);
  std::vector<std::shared_ptr<MappedFile>> maps_;
  std::map<std::string, Tensor, std::less<>> tensors_;
  std::vector<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace ds4::safetensors
