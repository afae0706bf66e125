#pragma once
// GGML tensor type ids and their block geometry. These are facts of the GGUF
// file format (shared by the reader, the writer and the quant library), so they
// live here rather than in either module.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace ds4 {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21,
  IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28,
  IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};

struct GgmlTypeInfo {
  GgmlType type;
  std::string_view name;
  int64_t block_size;  // elements per block
  size_t block_bytes;  // bytes per block
};

// Geometry of a known type id, or nullopt for an id this build does not know.
std::optional<GgmlTypeInfo> ggml_type_info(uint32_t id);
std::optional<GgmlType> ggml_type_from_name(std::string_view name);  // case-insensitive
std::string_view ggml_type_name(GgmlType t);
inline uint32_t ggml_type_id(GgmlType t) { return static_cast<uint32_t>(t); }

}  // namespace ds4
