#include <vector>

#include "quant/quant.h"
#include "quant/types.h"
#include "util/error.h"

namespace ds4::quant {
namespace {

const std::vector<TypeOps>& table() {
  static const std::vector<TypeOps> t = [] {
    std::vector<TypeOps> v;
    register_basic_types(v);
    register_legacy_types(v);
    register_k_types(v);
    register_iq_types(v);
    return v;
  }();
  return t;
}

}  // namespace

const TypeOps* find_ops(GgmlType t) {
  for (const auto& e : table())
    if (e.type == t) return &e;
  return nullptr;
}

const TypeOps& require_ops(GgmlType t, std::string_view tensor_name) {
  const TypeOps* o = find_ops(t);
  if (!o) fail("tensor '{}': type {} is not supported", tensor_name, ggml_type_name(t));
  return *o;
}

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
  const TypeOps& o = require_ops(t, "(row)");
  if (n % o.block_size) fail("dequantize {}: row length {} is not a multiple of {}", ggml_type_name(t), n, o.block_size);
  o.dequantize_row(src, dst, n);
}

void quantize_row(GgmlType t, const float* src, void* dst, int64_t n, const float* imatrix) {
  const TypeOps& o = require_ops(t, "(row)");
  if (!o.quantize_row) fail("quantization to {} is not supported", ggml_type_name(t));
  if (n % o.block_size) fail("quantize {}: row length {} is not a multiple of {}", ggml_type_name(t), n, o.block_size);
  o.quantize_row(src, dst, n, imatrix);
}

size_t row_bytes(GgmlType t, int64_t n) {
  auto info = ggml_type_info(static_cast<uint32_t>(t));
  if (!info) fail("unknown type id {}", static_cast<uint32_t>(t));
  if (n % info->block_size) fail("{}: row length {} is not a multiple of {}", info->name, n, info->block_size);
  return static_cast<size_t>(n / info->block_size) * info->block_bytes;
}

}  // namespace ds4::quant
