// Scalar reference dot kernels: the plain arithmetic of each format, written
// for clarity. The SIMD kernels must agree with these (tests/unit/quant).
// Integer kernels: sum of int products per (sub-)block, then scale in float.
#include <cstring>

#include "quant/blocks.h"
#include "quant/iq_tables.h"
#include "quant/kernels.h"
#include "quant/quant.h"
#include "util/float16.h"

namespace ds4::quant {
namespace {

float dot_f32(int64_t n, const void* w, const void* a) {
  const float* x = static_cast<const float*>(w);
  const float* y = static_cast<const float*>(a);
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}
float dot_f16(int64_t n, const void* w, const void* a) {
  const uint16_t* x = static_cast<const uint16_t*>(w);
  const float* y = static_cast<const float*>(a);
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += f16_to_f32(x[i]) * y[i];
  return s;
}
float dot_bf16(int64_t n, const void* w, const void* a) {
  const uint16_t* x = static_cast<const uint16_t*>(w);
  const float* y = static_cast<const float*>(a);
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += bf16_to_f32(x[i]) * y[i];
  return s;
}

// Any type: dequantize one block at a time, float dot with the activation.
template <GgmlType T>
float dot_generic(int64_t n, const void* w, const void* a) {
  const TypeOps& ops = *find_ops(T);
  const auto* wb = static_cast<const uint8_t*>(w);
  const float* y = static_cast<const float*>(a);
  float buf[QK_K];
  float s = 0;
  for (int64_t i = 0; i < n; i += ops.block_size, wb += ops.block_bytes) {
    ops.dequantize_row(wb, buf, ops.block_size);
    for (int64_t j = 0; j < ops.block_size; ++j) s += buf[j] * y[i + j];
  }
  return s;
}

inline int nib(const uint8_t* qs, int j) { return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4); }
inline int qh_bit(const uint8_t* qh, int j) { return (qh[j / 8] >> (j % 8)) & 1; }

// --- x Q8_0 ---

float dot_q8_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ8_0*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float s = 0;
  for (int64_t i = 0; i < n / QK; ++i) {
    int sum = 0;
    for (int j = 0; j < QK; ++j) sum += x[i].qs[j] * y[i].qs[j];
    s += f16_to_f32(x[i].d) * f16_to_f32(y[i].d) * static_cast<float>(sum);
  }
  return s;
}
float dot_q4_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_0*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float s = 0;
  for (int64_t i = 0; i < n / QK; ++i) {
    int sum = 0;
    for (int j = 0; j < QK; ++j) sum += (nib(x[i].qs, j) - 8) * y[i].qs[j];
    s += f16_to_f32(x[i].d) * f16_to_f32(y[i].d) * static_cast<float>(sum);
  }
  return s;
}
float dot_q4_1(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_1*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float s = 0;
  for (int64_t i = 0; i < n / QK; ++i) {
    int sum = 0, sy = 0;
    for (int j = 0; j < QK; ++j) {
      sum += nib(x[i].qs, j) * y[i].qs[j];
      sy += y[i].qs[j];
    }
    const float dy = f16_to_f32(y[i].d);
    s += f16_to_f32(x[i].d) * dy * static_cast<float>(sum) + f16_to_f32(x[i].m) * dy * static_cast<float>(sy);
  }
  return s;
}
float dot_q5_0(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ5_0*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float s = 0;
  for (int64_t i = 0; i < n / QK; ++i) {
    int sum = 0;
    for (int j = 0; j < QK; ++j) sum += ((nib(x[i].qs, j) | (qh_bit(x[i].qh, j) << 4)) - 16) * y[i].qs[j];
    s += f16_to_f32(x[i].d) * f16_to_f32(y[i].d) * static_cast<float>(sum);
  }
  return s;
}
float dot_q5_1(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ5_1*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float s = 0;
  for (int64_t i = 0; i < n / QK; ++i) {
    int sum = 0, sy = 0;
    for (int j = 0; j < QK; ++j) {
      sum += (nib(x[i].qs, j) | (qh_bit(x[i].qh, j) << 4)) * y[i].qs[j];
      sy += y[i].qs[j];
    }
    const float dy = f16_to_f32(y[i].d);
    s += f16_to_f32(x[i].d) * dy * static_cast<float>(sum) + f16_to_f32(x[i].m) * dy * static_cast<float>(sy);
  }
  return s;
}
float dot_iq4_nl(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockIQ4_NL*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float s = 0;
  for (int64_t i = 0; i < n / QK; ++i) {
    int sum = 0;
    for (int j = 0; j < QK; ++j) sum += kvalues_iq4nl[nib(x[i].qs, j)] * y[i].qs[j];
    s += f16_to_f32(x[i].d) * f16_to_f32(y[i].d) * static_cast<float>(sum);
  }
  return s;
}
float dot_mxfp4(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockMXFP4*>(w);
  const auto* y = static_cast<const BlockQ8_0*>(a);
  float s = 0;
  for (int64_t i = 0; i < n / QK; ++i) {
    int sum = 0;
    for (int j = 0; j < QK; ++j) sum += kvalues_mxfp4[nib(x[i].qs, j)] * y[i].qs[j];
    s += e8m0_to_f32_half(x[i].e) * f16_to_f32(y[i].d) * static_cast<float>(sum);
  }
  return s;
}

// --- x Q8_K ---

float dot_q2_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ2_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  float s = 0;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int isum = 0, summs = 0;
    for (int j = 0; j < 16; ++j) summs += y[i].bsums[j] * (x[i].scales[j] >> 4);
    for (int h = 0; h < 2; ++h)
      for (int sh = 0; sh < 4; ++sh)
        for (int half = 0; half < 2; ++half) {  // 16 values sharing one scale
          const int pos0 = 128 * h + 32 * sh + 16 * half;
          int sum = 0;
          for (int l = 0; l < 16; ++l)
            sum += ((x[i].qs[32 * h + 16 * half + l] >> (2 * sh)) & 3) * y[i].qs[pos0 + l];
          isum += (x[i].scales[pos0 / 16] & 0xF) * sum;
        }
    s += y[i].d * f16_to_f32(x[i].d) * static_cast<float>(isum) - y[i].d * f16_to_f32(x[i].dmin) * static_cast<float>(summs);
  }
  return s;
}
float dot_q4_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ4_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  float s = 0;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int isum = 0, summ = 0;
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      get_scale_min_k4(j, x[i].scales, sc, m);
      int sum = 0;
      for (int l = 0; l < 32; ++l) sum += ((x[i].qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 0xF) * y[i].qs[32 * j + l];
      isum += sc * sum;
      summ += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
    }
    s += y[i].d * f16_to_f32(x[i].d) * static_cast<float>(isum) - y[i].d * f16_to_f32(x[i].dmin) * static_cast<float>(summ);
  }
  return s;
}
float dot_q6_k(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockQ6_K*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  float s = 0;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int isum = 0;
    for (int h = 0; h < 2; ++h)
      for (int sh = 0; sh < 4; ++sh)
        for (int half = 0; half < 2; ++half) {
          const int pos0 = 128 * h + 32 * sh + 16 * half;
          int sum = 0;
          for (int l = 16 * half; l < 16 * half + 16; ++l) {
            const int lo = (x[i].ql[64 * h + 32 * (sh & 1) + l] >> (4 * (sh / 2))) & 0xF;
            const int hi = (x[i].qh[32 * h + l] >> (2 * sh)) & 3;
            sum += ((lo | (hi << 4)) - 32) * y[i].qs[128 * h + 32 * sh + l];
          }
          isum += x[i].scales[pos0 / 16] * sum;
        }
    s += y[i].d * f16_to_f32(x[i].d) * static_cast<float>(isum);
  }
  return s;
}
float dot_iq2_xxs(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockIQ2_XXS*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  float s = 0;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int bsum = 0;
    for (int ib = 0; ib < 8; ++ib) {
      uint32_t aux0, aux1;
      std::memcpy(&aux0, x[i].qs + 4 * ib, 4);
      std::memcpy(&aux1, x[i].qs + 4 * ib + 2, 4);
      int sum = 0;
      for (int k = 0; k < 4; ++k) {
        const uint8_t* g = iq2xxs_grid[(aux0 >> (8 * k)) & 0xFF];
        const uint8_t sg = ksigns_iq2xs[(aux1 >> (7 * k)) & 127];
        for (int j = 0; j < 8; ++j) {
          const int v = g[j] * y[i].qs[32 * ib + 8 * k + j];
          sum += (sg >> j) & 1 ? -v : v;
        }
      }
      bsum += sum * static_cast<int>(2 * (aux1 >> 28) + 1);
    }
    // d (0.5 + l) / 4 = d (2l + 1) / 8
    s += f16_to_f32(x[i].d) * y[i].d * 0.125f * static_cast<float>(bsum);
  }
  return s;
}
float dot_iq4_xs(int64_t n, const void* w, const void* a) {
  const auto* x = static_cast<const BlockIQ4_XS*>(w);
  const auto* y = static_cast<const BlockQ8_K*>(a);
  float s = 0;
  for (int64_t i = 0; i < n / QK_K; ++i) {
    int isum = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const int ls = ((x[i].scales_l[ib / 2] >> (4 * (ib & 1))) & 0xF) | (((x[i].scales_h >> (2 * ib)) & 3) << 4);
      int sum = 0;
      for (int j = 0; j < 16; ++j) {
        sum += kvalues_iq4nl[x[i].qs[16 * ib + j] & 0xF] * y[i].qs[32 * ib + j];
        sum += kvalues_iq4nl[x[i].qs[16 * ib + j] >> 4] * y[i].qs[32 * ib + j + 16];
      }
      isum += (ls - 32) * sum;
    }
    s += f16_to_f32(x[i].d) * y[i].d * static_cast<float>(isum);
  }
  return s;
}

struct Entry {
  GgmlType t;
  DotKernel k;
};
const Entry kScalar[] = {
    {GgmlType::F32, {GgmlType::F32, dot_f32}},
    {GgmlType::F16, {GgmlType::F32, dot_f16}},
    {GgmlType::BF16, {GgmlType::F32, dot_bf16}},
    {GgmlType::Q8_0, {GgmlType::Q8_0, dot_q8_0}},
    {GgmlType::Q4_0, {GgmlType::Q8_0, dot_q4_0}},
    {GgmlType::Q4_1, {GgmlType::Q8_0, dot_q4_1}},
    {GgmlType::Q5_0, {GgmlType::Q8_0, dot_q5_0}},
    {GgmlType::Q5_1, {GgmlType::Q8_0, dot_q5_1}},
    {GgmlType::IQ4_NL, {GgmlType::Q8_0, dot_iq4_nl}},
    {GgmlType::MXFP4, {GgmlType::Q8_0, dot_mxfp4}},
    {GgmlType::Q2_K, {GgmlType::Q8_K, dot_q2_k}},
    {GgmlType::Q4_K, {GgmlType::Q8_K, dot_q4_k}},
    {GgmlType::Q6_K, {GgmlType::Q8_K, dot_q6_k}},
    {GgmlType::IQ2_XXS, {GgmlType::Q8_K, dot_iq2_xxs}},
    {GgmlType::IQ4_XS, {GgmlType::Q8_K, dot_iq4_xs}},
    // Types without an integer kernel yet: exact float path.
    {GgmlType::Q3_K, {GgmlType::F32, dot_generic<GgmlType::Q3_K>}},
    {GgmlType::Q5_K, {GgmlType::F32, dot_generic<GgmlType::Q5_K>}},
    {GgmlType::IQ2_XS, {GgmlType::F32, dot_generic<GgmlType::IQ2_XS>}},
    {GgmlType::IQ2_S, {GgmlType::F32, dot_generic<GgmlType::IQ2_S>}},
    {GgmlType::IQ3_XXS, {GgmlType::F32, dot_generic<GgmlType::IQ3_XXS>}},
    {GgmlType::IQ3_S, {GgmlType::F32, dot_generic<GgmlType::IQ3_S>}},
    {GgmlType::IQ1_S, {GgmlType::F32, dot_generic<GgmlType::IQ1_S>}},
    {GgmlType::IQ1_M, {GgmlType::F32, dot_generic<GgmlType::IQ1_M>}},
};

}  // namespace

const DotKernel* scalar_kernel(GgmlType t) {
  for (const auto& e : kScalar)
    if (e.t == t) return &e.k;
  return nullptr;
}

}  // namespace ds4::quant
