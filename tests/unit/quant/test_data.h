#pragma once
// Random but valid weight rows for any type: quantized from random floats when
// the library can quantize the type, else random bytes with the scale fields
// set to sane finite f16 values (as the Python tests do).
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "quant/quant.h"
#include "util/float16.h"

namespace ds4::quant::test {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// Byte offsets of f16 scales inside one block, for types built from random bytes.
inline std::vector<int> f16_fields(GgmlType t) {
  switch (t) {
    case GgmlType::Q3_K: return {108};
    case GgmlType::Q5_K: return {0, 2};
    case GgmlType::IQ2_XS:
    case GgmlType::IQ2_S:
    case GgmlType::IQ3_XXS:
    case GgmlType::IQ3_S:
    case GgmlType::IQ1_S:
    case GgmlType::IQ4_NL:
    case GgmlType::IQ4_XS: return {0};
    default: return {};
  }
}

inline std::vector<uint8_t> random_rows(GgmlType t, int64_t rows, int64_t cols, uint32_t seed) {
  const TypeOps& ops = require_ops(t, "test");
  const size_t rb = row_bytes(t, cols);
  std::vector<uint8_t> w(rb * static_cast<size_t>(rows));
  if (ops.quantize_row && t != GgmlType::Q8_K) {
    const auto x = random_floats(static_cast<size_t>(rows * cols), seed);
    for (int64_t r = 0; r < rows; ++r) quantize_row(t, x.data() + r * cols, w.data() + rb * static_cast<size_t>(r), cols);
    return w;
  }
  std::mt19937 rng(seed);
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  std::uniform_real_distribution<float> ud(0.01f, 0.1f);
  const size_t nblocks = w.size() / ops.block_bytes;
  for (size_t b = 0; b < nblocks; ++b) {
    uint8_t* blk = w.data() + b * ops.block_bytes;
    for (int off : f16_fields(t)) {
      const uint16_t h = f32_to_f16(ud(rng));
      std::memcpy(blk + off, &h, 2);
    }
    if (t == GgmlType::IQ1_M) {  // f16 scale in the top nibbles of 4 words at byte 48
      const uint16_t h = f32_to_f16(ud(rng));
      for (int k = 0; k < 4; ++k) {
        uint16_t word;
        std::memcpy(&word, blk + 48 + 2 * k, 2);
        word = static_cast<uint16_t>((word & 0x0FFF) | (((h >> (4 * k)) & 0xF) << 12));
        std::memcpy(blk + 48 + 2 * k, &word, 2);
      }
    }
  }
  return w;
}

}  // namespace ds4::quant::test
