// I-quants: IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M, IQ4_XS.
// Values come from the format's codebooks (iq_tables.h, generated from
// gguf-py); the float operation order is gguf-py's, so results are bitwise equal.
#include <cstring>

#include "quant/blocks.h"
#include "quant/iq_tables.h"
#include "quant/types.h"
#include "util/float16.h"

namespace ds4::quant {

void quantize_row_iq2_xxs(const float* x, void* dst, int64_t n, const float* imatrix);  // quantize_iq2xxs.cpp

namespace {

inline uint32_t load_u32(const void* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline float sign_of(uint8_t bits, int i) { return (bits >> i) & 1 ? -1.0f : 1.0f; }

void deq_iq2_xxs(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockIQ2_XXS*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      // Per 32 values: 4 grid indices (bytes of aux0); aux1 = 4 x 7-bit sign
      // indices and a 4-bit scale on top.
      const uint32_t aux0 = load_u32(b[i].qs + 4 * ib), aux1 = load_u32(b[i].qs + 4 * ib + 2);
      const float db = d * (0.5f + static_cast<float>(aux1 >> 28)) * 0.25f;
      for (int k = 0; k < 4; ++k, y += 8) {
        const uint8_t* g = iq2xxs_grid[(aux0 >> (8 * k)) & 0xFF];
        const uint8_t s = ksigns_iq2xs[(aux1 >> (7 * k)) & 127];
        for (int j = 0; j < 8; ++j) y[j] = db * static_cast<float>(g[j]) * sign_of(s, j);
      }
    }
  }
}

void deq_iq2_xs(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockIQ2_XS*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int g = 0; g < 32; ++g, y += 8) {  // 8 values per 16-bit code: 9-bit grid index, 7-bit signs
      const float db = d * (0.5f + static_cast<float>((b[i].scales[g / 4] >> (4 * ((g / 2) & 1))) & 0xF)) * 0.25f;
      const uint16_t q = b[i].qs[g];
      const uint8_t* gr = iq2xs_grid[q & 511];
      const uint8_t s = ksigns_iq2xs[q >> 9];
      for (int j = 0; j < 8; ++j) y[j] = db * static_cast<float>(gr[j]) * sign_of(s, j);
    }
  }
}

void deq_iq2_s(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockIQ2_S*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    const uint8_t* signs = b[i].qs + QK_K / 8;
    for (int g = 0; g < 32; ++g, y += 8) {  // 10-bit index: qs byte + 2 bits of qh; explicit sign byte
      const float db = d * (0.5f + static_cast<float>((b[i].scales[g / 4] >> (4 * ((g / 2) & 1))) & 0xF)) * 0.25f;
      const int idx = b[i].qs[g] | (((b[i].qh[g / 4] >> (2 * (g % 4))) & 3) << 8);
      const uint8_t* gr = iq2s_grid[idx];
      for (int j = 0; j < 8; ++j) y[j] = db * static_cast<float>(gr[j]) * sign_of(signs[g], j);
    }
  }
}

void deq_iq3_xxs(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockIQ3_XXS*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    const uint8_t* qs = b[i].qs;
    const uint8_t* sc = b[i].qs + QK_K / 4;
    for (int ib = 0; ib < 8; ++ib) {
      const uint32_t aux = load_u32(sc + 4 * ib);
      const float db = d * (0.5f + static_cast<float>(aux >> 28)) * 0.5f;
      for (int k = 0; k < 4; ++k, y += 8) {
        const uint8_t s = ksigns_iq2xs[(aux >> (7 * k)) & 127];
        const uint8_t* g1 = iq3xxs_grid[qs[8 * ib + 2 * k]];
        const uint8_t* g2 = iq3xxs_grid[qs[8 * ib + 2 * k + 1]];
        for (int j = 0; j < 4; ++j) {
          y[j] = db * static_cast<float>(g1[j]) * sign_of(s, j);
          y[j + 4] = db * static_cast<float>(g2[j]) * sign_of(s, j + 4);
        }
      }
    }
  }
}

void deq_iq3_s(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockIQ3_S*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      const float db = d * static_cast<float>(1 + 2 * ((b[i].scales[ib / 2] >> (4 * (ib & 1))) & 0xF));
      for (int k = 0; k < 4; ++k, y += 8) {
        const int g = 4 * ib + k;  // 8 values: two 9-bit grid indices, one sign byte
        for (int h = 0; h < 2; ++h) {
          const int q = 2 * g + h;
          const int idx = b[i].qs[q] | (((b[i].qh[q / 8] >> (q % 8)) & 1) << 8);
          const uint8_t* gr = iq3s_grid[idx];
          for (int j = 0; j < 4; ++j) y[4 * h + j] = db * static_cast<float>(gr[j]) * sign_of(b[i].signs[g], 4 * h + j);
        }
      }
    }
  }
}

void deq_iq1_s(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockIQ1_S*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib) {
      const uint16_t qh = b[i].qh[ib];
      const float dl = d * static_cast<float>(2 * ((qh >> 12) & 7) + 1);
      const float delta = qh & 0x8000 ? -kIq1Delta : kIq1Delta;
      for (int k = 0; k < 4; ++k, y += 8) {
        const int8_t* g = iq1s_grid[b[i].qs[4 * ib + k] | (((qh >> (3 * k)) & 7) << 8)];
        for (int j = 0; j < 8; ++j) y[j] = dl * (static_cast<float>(g[j]) + delta);
      }
    }
  }
}

void deq_iq1_m(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockIQ1_M*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    uint16_t sc[4];
    std::memcpy(sc, b[i].scales, 8);
    // The f16 super-block scale is spread over the top nibbles of the 4 words.
    const uint16_t dbits = static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0xF0) | ((sc[2] >> 4) & 0xF00) | (sc[3] & 0xF000));
    const float d = f16_to_f32(dbits);
    for (int g = 0; g < 32; ++g, y += 8) {
      const int s = g / 2;  // 3-bit scale per 16 values
      const float dl = d * static_cast<float>(2 * ((sc[s / 4] >> (3 * (s % 4))) & 7) + 1);
      const int nib = (b[i].qh[g / 2] >> (4 * (g % 2))) & 0xF;
      const float delta = nib & 8 ? -kIq1Delta : kIq1Delta;
      const int8_t* gr = iq1s_grid[b[i].qs[g] | ((nib & 7) << 8)];
      for (int j = 0; j < 8; ++j) y[j] = dl * (static_cast<float>(gr[j]) + delta);
    }
  }
}

void deq_iq4_xs(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockIQ4_XS*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      const int ls = ((b[i].scales_l[ib / 2] >> (4 * (ib & 1))) & 0xF) | (((b[i].scales_h >> (2 * ib)) & 3) << 4);
      const float dl = d * static_cast<float>(ls - 32);
      const uint8_t* qs = b[i].qs + 16 * ib;
      for (int j = 0; j < 16; ++j) {
        y[j] = dl * static_cast<float>(kvalues_iq4nl[qs[j] & 0xF]);
        y[j + 16] = dl * static_cast<float>(kvalues_iq4nl[qs[j] >> 4]);
      }
    }
  }
}

void q_iq2_xxs(const float* x, void* dst, int64_t n, const float* imatrix) { quantize_row_iq2_xxs(x, dst, n, imatrix); }

}  // namespace

void register_iq_types(std::vector<TypeOps>& out) {
  out.push_back({GgmlType::IQ2_XXS, QK_K, sizeof(BlockIQ2_XXS), deq_iq2_xxs, q_iq2_xxs});
  out.push_back({GgmlType::IQ2_XS, QK_K, sizeof(BlockIQ2_XS), deq_iq2_xs, nullptr});
  out.push_back({GgmlType::IQ2_S, QK_K, sizeof(BlockIQ2_S), deq_iq2_s, nullptr});
  out.push_back({GgmlType::IQ3_XXS, QK_K, sizeof(BlockIQ3_XXS), deq_iq3_xxs, nullptr});
  out.push_back({GgmlType::IQ3_S, QK_K, sizeof(BlockIQ3_S), deq_iq3_s, nullptr});
  out.push_back({GgmlType::IQ1_S, QK_K, sizeof(BlockIQ1_S), deq_iq1_s, nullptr});
  out.push_back({GgmlType::IQ1_M, QK_K, sizeof(BlockIQ1_M), deq_iq1_m, nullptr});
  out.push_back({GgmlType::IQ4_XS, QK_K, sizeof(BlockIQ4_XS), deq_iq4_xs, nullptr});
}

}  // namespace ds4::quant
