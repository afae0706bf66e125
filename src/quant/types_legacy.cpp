// 32-element block types besides Q8_0: Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, MXFP4.
// Dequantizers follow the element order and float operation order of gguf-py
// (the tests' oracle), so the results are bitwise equal. Quantizers for the
// types gguf-py can produce follow its arithmetic too (ggml's reference code).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "quant/blocks.h"
#include "quant/iq_tables.h"
#include "quant/types.h"
#include "util/float16.h"

namespace ds4::quant {
namespace {

template <class B>
const B* blocks(const void* p) { return static_cast<const B*>(p); }
template <class B>
B* blocks(void* p) { return static_cast<B*>(p); }

// Element j < 16 is the low nibble of qs[j], element j + 16 its high nibble.
inline int nib(const uint8_t* qs, int j) { return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4); }
inline int qh_bit(const uint8_t* qh, int j) { return (qh[j / 8] >> (j % 8)) & 1; }

void deq_q4_0(const void* src, float* y, int64_t n) {
  const auto* b = blocks<BlockQ4_0>(src);
  for (int64_t i = 0; i < n / QK; ++i, y += QK) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < QK; ++j) y[j] = d * static_cast<float>(nib(b[i].qs, j) - 8);
  }
}
void deq_q4_1(const void* src, float* y, int64_t n) {
  const auto* b = blocks<BlockQ4_1>(src);
  for (int64_t i = 0; i < n / QK; ++i, y += QK) {
    const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
    for (int j = 0; j < QK; ++j) y[j] = d * static_cast<float>(nib(b[i].qs, j)) + m;
  }
}
void deq_q5_0(const void* src, float* y, int64_t n) {
  const auto* b = blocks<BlockQ5_0>(src);
  for (int64_t i = 0; i < n / QK; ++i, y += QK) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < QK; ++j) y[j] = d * static_cast<float>((nib(b[i].qs, j) | (qh_bit(b[i].qh, j) << 4)) - 16);
  }
}
void deq_q5_1(const void* src, float* y, int64_t n) {
  const auto* b = blocks<BlockQ5_1>(src);
  for (int64_t i = 0; i < n / QK; ++i, y += QK) {
    const float d = f16_to_f32(b[i].d), m = f16_to_f32(b[i].m);
    for (int j = 0; j < QK; ++j) y[j] = d * static_cast<float>(nib(b[i].qs, j) | (qh_bit(b[i].qh, j) << 4)) + m;
  }
}
void deq_iq4_nl(const void* src, float* y, int64_t n) {
  const auto* b = blocks<BlockIQ4_NL>(src);
  for (int64_t i = 0; i < n / QK; ++i, y += QK) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < QK; ++j) y[j] = d * static_cast<float>(kvalues_iq4nl[nib(b[i].qs, j)]);
  }
}
void deq_mxfp4(const void* src, float* y, int64_t n) {
  const auto* b = blocks<BlockMXFP4>(src);
  for (int64_t i = 0; i < n / QK; ++i, y += QK) {
    const float d = e8m0_to_f32_half(b[i].e);
    for (int j = 0; j < QK; ++j) y[j] = d * static_cast<float>(kvalues_mxfp4[nib(b[i].qs, j)]);
  }
}

// --- quantizers (ggml reference arithmetic, as gguf-py reproduces it) ---

// The value of largest magnitude, keeping its sign (first one on ties).
float signed_absmax(const float* x) {
  float amax = 0, v = 0;
  for (int j = 0; j < QK; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      v = x[j];
    }
  return v;
}
uint8_t clampq(float v, int hi) {
  const int q = static_cast<int>(std::trunc(v));
  return static_cast<uint8_t>(std::clamp(q, 0, hi));
}
void pack_nibbles(const uint8_t* q, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<uint8_t>(q[j] | (q[j + 16] << 4));
}
void pack_qh(const uint8_t* q, uint8_t* qh) {
  uint32_t h = 0;
  for (int j = 0; j < QK; ++j) h |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
  std::memcpy(qh, &h, 4);
}

void q_q4_0(const float* x, void* dst, int64_t n, const float*) {
  auto* b = blocks<BlockQ4_0>(dst);
  for (int64_t i = 0; i < n / QK; ++i, x += QK) {
    const float d = signed_absmax(x) / -8.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    uint8_t q[QK];
    for (int j = 0; j < QK; ++j) q[j] = clampq(x[j] * id + 8.5f, 15);
    b[i].d = f32_to_f16(d);
    pack_nibbles(q, b[i].qs);
  }
}
void q_q4_1(const float* x, void* dst, int64_t n, const float*) {
  auto* b = blocks<BlockQ4_1>(dst);
  for (int64_t i = 0; i < n / QK; ++i, x += QK) {
    const float mn = *std::min_element(x, x + QK), mx = *std::max_element(x, x + QK);
    const float d = (mx - mn) / 15.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    uint8_t q[QK];
    for (int j = 0; j < QK; ++j) q[j] = clampq((x[j] - mn) * id + 0.5f, 15);
    b[i].d = f32_to_f16(d);
    b[i].m = f32_to_f16(mn);
    pack_nibbles(q, b[i].qs);
  }
}
void q_q5_0(const float* x, void* dst, int64_t n, const float*) {
  auto* b = blocks<BlockQ5_0>(dst);
  for (int64_t i = 0; i < n / QK; ++i, x += QK) {
    const float d = signed_absmax(x) / -16.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    uint8_t q[QK];
    for (int j = 0; j < QK; ++j) q[j] = clampq(x[j] * id + 16.5f, 31);
    b[i].d = f32_to_f16(d);
    uint8_t lo[QK];
    for (int j = 0; j < QK; ++j) lo[j] = q[j] & 0xF;
    pack_nibbles(lo, b[i].qs);
    pack_qh(q, b[i].qh);
  }
}
void q_q5_1(const float* x, void* dst, int64_t n, const float*) {
  auto* b = blocks<BlockQ5_1>(dst);
  for (int64_t i = 0; i < n / QK; ++i, x += QK) {
    const float mn = *std::min_element(x, x + QK), mx = *std::max_element(x, x + QK);
    const float d = (mx - mn) / 31.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    uint8_t q[QK];
    for (int j = 0; j < QK; ++j) q[j] = clampq((x[j] - mn) * id + 0.5f, 31);
    b[i].d = f32_to_f16(d);
    b[i].m = f32_to_f16(mn);
    uint8_t lo[QK];
    for (int j = 0; j < QK; ++j) lo[j] = q[j] & 0xF;
    pack_nibbles(lo, b[i].qs);
    pack_qh(q, b[i].qh);
  }
}
// MXFP4: shared power-of-two scale from the block max, then the nearest e2m1
// value (first index on ties, as gguf-py's argmin).
void q_mxfp4(const float* x, void* dst, int64_t n, const float*) {
  auto* b = blocks<BlockMXFP4>(dst);
  for (int64_t i = 0; i < n / QK; ++i, x += QK) {
    float amax = 0;
    for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(x[j]));
    // floor(log2(amax)) taken exactly from the binary exponent.
    int ex = 0;
    if (amax > 0) std::frexp(amax, &ex);
    const uint8_t e = amax > 0 ? static_cast<uint8_t>(ex - 1 - 2 + 127) : 0;
    const float d = e8m0_to_f32_half(e);
    uint8_t q[QK];
    for (int j = 0; j < QK; ++j) {
      int best = 0;
      float berr = INFINITY;
      for (int k = 0; k < 16; ++k) {
        const float err = std::fabs(d * static_cast<float>(kvalues_mxfp4[k]) - x[j]);
        if (err < berr) {
          berr = err;
          best = k;
        }
      }
      q[j] = static_cast<uint8_t>(best);
    }
    b[i].e = e;
    pack_nibbles(q, b[i].qs);
  }
}

}  // namespace

void register_legacy_types(std::vector<TypeOps>& out) {
  out.push_back({GgmlType::Q4_0, QK, sizeof(BlockQ4_0), deq_q4_0, q_q4_0});
  out.push_back({GgmlType::Q4_1, QK, sizeof(BlockQ4_1), deq_q4_1, q_q4_1});
  out.push_back({GgmlType::Q5_0, QK, sizeof(BlockQ5_0), deq_q5_0, q_q5_0});
  out.push_back({GgmlType::Q5_1, QK, sizeof(BlockQ5_1), deq_q5_1, q_q5_1});
  out.push_back({GgmlType::IQ4_NL, QK, sizeof(BlockIQ4_NL), deq_iq4_nl, nullptr});
  out.push_back({GgmlType::MXFP4, QK, sizeof(BlockMXFP4), deq_mxfp4, q_mxfp4});
}

}  // namespace ds4::quant
