// K-quants (256-element super-blocks): Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and the
// activation type Q8_K. Dequantizers reproduce gguf-py's element order and
// float operation order bit for bit. Quantizers implement ggml's reference
// algorithms (weighted least-squares scale/min search per sub-block, then 4- or
// 6-bit super-block quantization of those scales).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "quant/blocks.h"
#include "quant/quant_util.h"
#include "quant/types.h"
#include "util/float16.h"

namespace ds4::quant {
namespace {

void deq_q2_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ2_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    // Element 128h + 32s + l is bits 2s..2s+1 of qs[32h + l].
    for (int h = 0; h < 2; ++h)
      for (int s = 0; s < 4; ++s)
        for (int l = 0; l < 32; ++l) {
          const int pos = 128 * h + 32 * s + l;
          const uint8_t sc = b[i].scales[pos / 16];
          const float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
          y[pos] = dl * static_cast<float>((b[i].qs[32 * h + l] >> (2 * s)) & 3) - ml;
        }
  }
}

void deq_q3_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ3_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
    const float d = f16_to_f32(b[i].d);
    const uint8_t* sc = b[i].scales;
    float dl[16];
    for (int j = 0; j < 16; ++j) {
      const int lo = j < 8 ? (sc[j] & 0xF) : (sc[j - 8] >> 4);
      const int hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
      dl[j] = d * static_cast<float>((lo | (hi << 4)) - 32);
    }
    for (int h = 0; h < 2; ++h)
      for (int s = 0; s < 4; ++s)
        for (int l = 0; l < 32; ++l) {
          const int pos = 128 * h + 32 * s + l;
          const int ql = (b[i].qs[32 * h + l] >> (2 * s)) & 3;
          const int qh = (b[i].hmask[l] >> (pos / 32)) & 1;  // set bit means no -4 offset
          y[pos] = dl[pos / 16] * static_cast<float>(ql - (qh ? 0 : 4));
        }
  }
}

void deq_q4_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ4_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    for (int j = 0; j < 8; ++j) {  // sub-block j: nibble (j & 1) of qs[32 (j / 2) + l]
      uint8_t sc, m;
      get_scale_min_k4(j, b[i].scales, sc, m);
      const float dl = d * sc, ml = dmin * m;
      for (int l = 0; l < 32; ++l)
        y[32 * j + l] = dl * static_cast<float>((b[i].qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 0xF) - ml;
    }
  }
}

void deq_q5_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ5_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      get_scale_min_k4(j, b[i].scales, sc, m);
      const float dl = d * sc, ml = dmin * m;
      for (int l = 0; l < 32; ++l) {
        const int q = ((b[i].qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 0xF) | (((b[i].qh[l] >> j) & 1) << 4);
        y[32 * j + l] = dl * static_cast<float>(q) - ml;
      }
    }
  }
}

void deq_q6_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ6_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K) {
    const float d = f16_to_f32(b[i].d);
    // Element 128h + 32s + l: low 4 bits from ql[64h + 32(s&1) + l] nibble s/2,
    // high 2 bits from qh[32h + l] bits 2s..2s+1.
    for (int h = 0; h < 2; ++h)
      for (int s = 0; s < 4; ++s)
        for (int l = 0; l < 32; ++l) {
          const int pos = 128 * h + 32 * s + l;
          const int lo = (b[i].ql[64 * h + 32 * (s & 1) + l] >> (4 * (s / 2))) & 0xF;
          const int hi = (b[i].qh[32 * h + l] >> (2 * s)) & 3;
          const float dl = d * static_cast<float>(b[i].scales[pos / 16]);
          y[pos] = dl * static_cast<float>((lo | (hi << 4)) - 32);
        }
  }
}

void deq_q8_k(const void* src, float* y, int64_t n) {
  const auto* b = static_cast<const BlockQ8_K*>(src);
  for (int64_t i = 0; i < n / QK_K; ++i, y += QK_K)
    for (int l = 0; l < QK_K; ++l) y[l] = b[i].d * static_cast<float>(b[i].qs[l]);
}

// --- quantizers ---

// Scale and min (returned negated in *the_min) for n values in [0, nmax] by a
// weighted least-squares fit, trying nstep+1 perturbed initial scales.
float make_qkx2_quants(int n, int nmax, const float* x, const float* w, uint8_t* L, float* the_min, uint8_t* Laux,
                       float rmin, float rdelta, int nstep, bool use_mad) {
  float mn = x[0], mx = x[0], sum_w = w[0], sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
    sum_w += w[i];
    sum_x += w[i] * x[i];
  }
  if (mn > 0) mn = 0;
  if (mx == mn) {
    std::fill(L, L + n, 0);
    *the_min = -mn;
    return 0.0f;
  }
  float iscale = static_cast<float>(nmax) / (mx - mn);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    L[i] = static_cast<uint8_t>(std::clamp(nearest_int(iscale * (x[i] - mn)), 0, nmax));
    float diff = scale * L[i] + mn - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += w[i] * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (mx - mn);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest_int(iscale * (x[i] - mn)), 0, nmax);
      Laux[i] = static_cast<uint8_t>(l);
      sum_l += w[i] * static_cast<float>(l);
      sum_l2 += w[i] * static_cast<float>(l * l);
      sum_xl += w[i] * static_cast<float>(l) * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += w[i] * diff;
      }
      if (cur_error < best_error) {
        std::copy(Laux, Laux + n, L);
        best_error = cur_error;
        scale = this_scale;
        mn = this_min;
      }
    }
  }
  *the_min = -mn;
  return scale;
}

// Symmetric signed scale for n values in [-nmax, nmax-1], weights x^2 (rmse_type 1).
float make_qx_quants(int n, int nmax, const float* x, int8_t* L) {
  float mx = 0, amax = 0;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      mx = x[i];
    }
  if (amax < kGroupMaxEps) {
    std::fill(L, L + n, 0);
    return 0;
  }
  auto fit = [&](float iscale, float& sumlx, float& suml2) {
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1);
      const float w = x[i] * x[i];
      sumlx += w * x[i] * static_cast<float>(l);
      suml2 += w * static_cast<float>(l * l);
    }
  };
  auto assign = [&](float iscale) {
    for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(std::clamp(nearest_int(iscale * x[i]), -nmax, nmax - 1));
  };
  float iscale = -static_cast<float>(nmax) / mx;
  float sumlx, suml2;
  fit(iscale, sumlx, suml2);
  assign(iscale);
  float scale = suml2 > 0 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / mx;
    fit(iscale, sumlx, suml2);
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      assign(iscale);
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

void q_q2_k(const float* x, void* dst, int64_t n, const float*) {
  auto* b = static_cast<BlockQ2_K*>(dst);
  constexpr float q4scale = 15.0f;
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    uint8_t L[QK_K], Laux[16];
    float weights[16], mins[16], scales[16];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] = make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < 16; ++j) b[i].scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
      b[i].d = f32_to_f16(max_scale / q4scale);
    } else {
      std::memset(b[i].scales, 0, 16);
      b[i].d = f32_to_f16(0.0f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < 16; ++j) b[i].scales[j] |= static_cast<uint8_t>(nearest_int(iscale * mins[j]) << 4);
      b[i].dmin = f32_to_f16(max_min / q4scale);
    } else {
      b[i].dmin = f32_to_f16(0.0f);
    }
    // Requantize against the stored (rounded) scales.
    for (int j = 0; j < 16; ++j) {
      const float d = f16_to_f32(b[i].d) * static_cast<float>(b[i].scales[j] & 0xF);
      if (d == 0) continue;
      const float dm = f16_to_f32(b[i].dmin) * static_cast<float>(b[i].scales[j] >> 4);
      for (int l = 0; l < 16; ++l)
        L[16 * j + l] = static_cast<uint8_t>(std::clamp(nearest_int((x[16 * j + l] + dm) / d), 0, 3));
    }
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        const uint8_t* q = L + 128 * h + l;
        b[i].qs[32 * h + l] = static_cast<uint8_t>(q[0] | (q[32] << 2) | (q[64] << 4) | (q[96] << 6));
      }
  }
}

void q_q4_k(const float* x, void* dst, int64_t n, const float*) {
  auto* b = static_cast<BlockQ4_K*>(dst);
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    uint8_t L[QK_K], Laux[32];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = make_qkx2_quants(32, 15, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -1.0f, 0.1f, 20, false);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    uint8_t* sc = b[i].scales;
    for (int j = 0; j < 8; ++j) {
      const uint8_t ls = static_cast<uint8_t>(std::min(63, nearest_int(inv_scale * scales[j])));
      const uint8_t lm = static_cast<uint8_t>(std::min(63, nearest_int(inv_min * mins[j])));
      if (j < 4) {
        sc[j] = ls;
        sc[j + 4] = lm;
      } else {
        sc[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
        sc[j - 4] = static_cast<uint8_t>(sc[j - 4] | ((ls >> 4) << 6));
        sc[j] = static_cast<uint8_t>(sc[j] | ((lm >> 4) << 6));
      }
    }
    b[i].d = f32_to_f16(max_scale / 63.0f);
    b[i].dmin = f32_to_f16(max_min / 63.0f);
    for (int j = 0; j < 8; ++j) {
      uint8_t s, m;
      get_scale_min_k4(j, sc, s, m);
      const float d = f16_to_f32(b[i].d) * s;
      if (d == 0) continue;
      const float dm = f16_to_f32(b[i].dmin) * m;
      for (int l = 0; l < 32; ++l)
        L[32 * j + l] = static_cast<uint8_t>(std::clamp(nearest_int((x[32 * j + l] + dm) / d), 0, 15));
    }
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        b[i].qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
  }
}

void q_q6_k(const float* x, void* dst, int64_t n, const float*) {
  auto* b = static_cast<BlockQ6_K*>(dst);
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    int8_t L[QK_K];
    float scales[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = make_qx_quants(16, 32, x + 16 * j, L + 16 * j);
      if (std::fabs(scales[j]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    std::memset(&b[i], 0, sizeof(BlockQ6_K));
    if (max_abs_scale < kGroupMaxEps) continue;
    const float iscale = -128.0f / max_scale;
    b[i].d = f32_to_f16(1 / iscale);
    for (int j = 0; j < 16; ++j) b[i].scales[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[j])));
    uint8_t U[QK_K] = {};
    for (int j = 0; j < 16; ++j) {
      const float d = f16_to_f32(b[i].d) * static_cast<float>(b[i].scales[j]);
      if (d == 0) {
        for (int l = 0; l < 16; ++l) U[16 * j + l] = 32;
        continue;
      }
      for (int l = 0; l < 16; ++l)
        U[16 * j + l] = static_cast<uint8_t>(std::clamp(nearest_int(x[16 * j + l] / d), -32, 31) + 32);
    }
    for (int h = 0; h < 2; ++h)
      for (int l = 0; l < 32; ++l) {
        const uint8_t* q = U + 128 * h + l;
        b[i].ql[64 * h + l] = static_cast<uint8_t>((q[0] & 0xF) | ((q[64] & 0xF) << 4));
        b[i].ql[64 * h + 32 + l] = static_cast<uint8_t>((q[32] & 0xF) | ((q[96] & 0xF) << 4));
        b[i].qh[32 * h + l] = static_cast<uint8_t>((q[0] >> 4) | ((q[32] >> 4) << 2) | ((q[64] >> 4) << 4) | ((q[96] >> 4) << 6));
      }
  }
}

}  // namespace

void quantize_row_q8_k(const float* x, void* dst, int64_t n) {
  auto* b = static_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / QK_K; ++i, x += QK_K) {
    float amax = 0;
    for (int l = 0; l < QK_K; ++l) amax = std::max(amax, std::fabs(x[l]));
    if (amax == 0) {
      std::memset(&b[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    // Symmetric [-127, 127] (never -128): the SIMD kernels negate activations
    // with sign_epi8, which cannot represent +128.
    const float iscale = 127.0f / amax;
    for (int l = 0; l < QK_K; ++l) b[i].qs[l] = static_cast<int8_t>(std::clamp(nearest_int(iscale * x[l]), -127, 127));
    for (int j = 0; j < 16; ++j) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += b[i].qs[16 * j + l];
      b[i].bsums[j] = static_cast<int16_t>(s);
    }
    b[i].d = 1 / iscale;
  }
}

namespace {
void q_q8_k(const float* x, void* dst, int64_t n, const float*) { quantize_row_q8_k(x, dst, n); }
}  // namespace

void register_k_types(std::vector<TypeOps>& out) {
  out.push_back({GgmlType::Q2_K, QK_K, sizeof(BlockQ2_K), deq_q2_k, q_q2_k});
  out.push_back({GgmlType::Q3_K, QK_K, sizeof(BlockQ3_K), deq_q3_k, nullptr});
  out.push_back({GgmlType::Q4_K, QK_K, sizeof(BlockQ4_K), deq_q4_k, q_q4_k});
  out.push_back({GgmlType::Q5_K, QK_K, sizeof(BlockQ5_K), deq_q5_k, nullptr});
  out.push_back({GgmlType::Q6_K, QK_K, sizeof(BlockQ6_K), deq_q6_k, q_q6_k});
  out.push_back({GgmlType::Q8_K, QK_K, sizeof(BlockQ8_K), deq_q8_k, q_q8_k});
}

}  // namespace ds4::quant
