#include "quant/types_basic.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/kernels.h"
#include "util/float16.h"

namespace ds4::quant {
namespace {

void deq_f32(const void* src, float* dst, int64_t n) { std::memcpy(dst, src, static_cast<size_t>(n) * 4); }
void q_f32(const float* src, void* dst, int64_t n, const float*) { std::memcpy(dst, src, static_cast<size_t>(n) * 4); }

void deq_f16(const void* src, float* dst, int64_t n) {
  const auto* s = static_cast<const uint8_t*>(src);
  for (int64_t k = 0; k < n; ++k) {
    uint16_t h;
    std::memcpy(&h, s + 2 * k, 2);
    dst[k] = f16_to_f32(h);
  }
}
void q_f16(const float* src, void* dst, int64_t n, const float*) {
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t k = 0; k < n; ++k) {
    uint16_t h = f32_to_f16(src[k]);
    std::memcpy(d + 2 * k, &h, 2);
  }
}

void deq_bf16(const void* src, float* dst, int64_t n) {
  const auto* s = static_cast<const uint8_t*>(src);
  for (int64_t k = 0; k < n; ++k) {
    uint16_t h;
    std::memcpy(&h, s + 2 * k, 2);
    dst[k] = bf16_to_f32(h);
  }
}
void q_bf16(const float* src, void* dst, int64_t n, const float*) {
  auto* d = static_cast<uint8_t*>(dst);
  for (int64_t k = 0; k < n; ++k) {
    uint16_t h = f32_to_bf16(src[k]);
    std::memcpy(d + 2 * k, &h, 2);
  }
}

// Q8_0: 32 values, f16 scale d then 32 int8; x = d * q.
void deq_q8_0(const void* src, float* dst, int64_t n) {
  const auto* s = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / 32; ++b, s += 34) {
    uint16_t h;
    std::memcpy(&h, s, 2);
    const float d = f16_to_f32(h);
    for (int j = 0; j < 32; ++j) dst[b * 32 + j] = d * static_cast<float>(static_cast<int8_t>(s[2 + j]));
  }
}
// Same rounding as ggml's reference quantize_row_q8_0 (and gguf-py): d = amax/127,
// q = round-half-away(x/d).
void q_q8_0(const float* src, void* dst, int64_t n, const float*) { quantize_row_q8_0(src, dst, n); }

}  // namespace

void quantize_row_q8_0(const float* src, void* dst, int64_t n) {
  auto* d8 = static_cast<uint8_t*>(dst);
  for (int64_t b = 0; b < n / 32; ++b, d8 += 34) {
    const float* x = src + b * 32;
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint16_t h = f32_to_f16(d);
    std::memcpy(d8, &h, 2);
    for (int j = 0; j < 32; ++j) d8[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
  }
}

void register_basic_types(std::vector<TypeOps>& out) {
  out.push_back({GgmlType::F32, 1, 4, deq_f32, q_f32});
  out.push_back({GgmlType::F16, 1, 2, deq_f16, q_f16});
  out.push_back({GgmlType::BF16, 1, 2, deq_bf16, q_bf16});
  out.push_back({GgmlType::Q8_0, 32, 34, deq_q8_0, q_q8_0});
}

}  // namespace ds4::quant
