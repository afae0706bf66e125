// IQ2_XXS quantizer. Each group of 8 values is stored as |x| ~ s * g where g is
// one of 256 codebook points (elements in {1,3,5} times a unit, after mapping
// the format's 8/25/43 bytes to levels 0/1/2), plus 7 sign bits (the 8th sign is
// implied by even parity). Per 32 values a 4-bit scale, per 256 an f16 scale.
//
// The search follows ggml's algorithm: per 32 values, sweep 13 trial scales; at
// each, round every value to its level, and when the 8-level tuple is not a
// codebook point, replace it by the best (weighted squared error) among its
// nearest codebook neighbours; keep the scale with the best weighted
// least-squares fit. Odd sign parity is fixed by flipping the sign of the
// least important value. This file is our own implementation of that scheme.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "quant/blocks.h"
#include "quant/iq_tables.h"
#include "quant/quant_util.h"
#include "util/float16.h"

namespace ds4::quant {
namespace {

constexpr int kMaxQ = 3;  // levels 0..2, stored value 2*level + 1

struct Iq2xxsCodebook {
  int8_t level[256][8];             // codebook point k as levels 0..2
  std::vector<int16_t> map;         // packed levels (2 bits each) -> index or -1
  std::vector<std::vector<uint16_t>> neighbours;  // packed levels -> nearest points

  Iq2xxsCodebook() : map(1 << 16, -1), neighbours(1 << 16) {
    for (int k = 0; k < 256; ++k) {
      int u = 0;
      for (int i = 0; i < 8; ++i) {
        const uint8_t v = iq2xxs_grid[k][i];
        level[k][i] = static_cast<int8_t>(v == 8 ? 0 : v == 25 ? 1 : 2);
        u |= level[k][i] << (2 * i);
      }
      map[u] = static_cast<int16_t>(k);
    }
    // For every off-grid tuple of levels 0..2: all codebook points at the two
    // smallest distances (squared, in units of the stored 2l+1 values), sorted
    // by distance then index.
    std::vector<std::pair<int, int>> dist(256);
    for (int u = 0; u < (1 << 16); ++u) {
      bool valid = true;
      for (int i = 0; i < 8; ++i) valid &= ((u >> (2 * i)) & 3) <= 2;
      if (!valid || map[u] >= 0) continue;
      for (int k = 0; k < 256; ++k) {
        int d2 = 0;
        for (int i = 0; i < 8; ++i) {
          const int diff = 2 * (level[k][i] - ((u >> (2 * i)) & 3));
          d2 += diff * diff;
        }
        dist[k] = {d2, k};
      }
      std::sort(dist.begin(), dist.end());
      int distinct = 1;
      for (size_t j = 0; j < dist.size(); ++j) {
        if (j > 0 && dist[j].first > dist[j - 1].first && ++distinct > 2) break;
        neighbours[u].push_back(static_cast<uint16_t>(dist[j].second));
      }
    }
  }
};

const Iq2xxsCodebook& codebook() {
  static const Iq2xxsCodebook cb;
  return cb;
}

int pack_levels(const int8_t* L) {
  int u = 0;
  for (int i = 0; i < 8; ++i) u |= L[i] << (2 * i);
  return u;
}

// Best codebook neighbour of an off-grid tuple at `scale`; rewrites L.
int best_neighbour(const Iq2xxsCodebook& cb, int u, const float* xval, const float* waux, float scale, int8_t* L) {
  float best = FLT_MAX;
  int index = -1;
  for (uint16_t k : cb.neighbours[u]) {
    float d2 = 0;
    for (int i = 0; i < 8; ++i) {
      const float diff = scale * static_cast<float>(2 * cb.level[k][i] + 1) - xval[i];
      d2 += waux[i] * diff * diff;
    }
    if (d2 < best) {
      best = d2;
      index = k;
    }
  }
  for (int i = 0; i < 8; ++i) L[i] = cb.level[index][i];
  return index;
}

// Initial scale for values in [0, nmax] by weighted least squares over a few
// candidate rounding scales (only sets the range of the search below).
float initial_scale(int n, int nmax, const float* x, const float* w) {
  float mx = 0;
  for (int i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  if (mx == 0) return 0;
  float best_err = FLT_MAX, best_scale = mx / static_cast<float>(nmax);
  for (int is = -4; is <= 4; ++is) {
    const float iscale = (static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / mx;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const float l = static_cast<float>(std::min(nmax, nearest_int(iscale * x[i])));
      sumlx += w[i] * x[i] * l;
      suml2 += w[i] * l * l;
    }
    if (suml2 <= 0) continue;
    const float s = sumlx / suml2;
    float err = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = x[i] - s * static_cast<float>(std::min(nmax, nearest_int(iscale * x[i])));
      err += w[i] * diff * diff;
    }
    if (err < best_err) {
      best_err = err;
      best_scale = s;
    }
  }
  return best_scale;
}

}  // namespace

void quantize_row_iq2_xxs(const float* x, void* dst, int64_t n, const float* imatrix) {
  const Iq2xxsCodebook& cb = codebook();
  auto* blocks = static_cast<BlockIQ2_XXS*>(dst);
  for (int64_t ibl = 0; ibl < n / QK_K; ++ibl) {
    const float* xbl = x + QK_K * ibl;
    const float* qw = imatrix ? imatrix + QK_K * ibl : nullptr;
    float sumx2 = 0;
    for (int i = 0; i < QK_K; ++i) sumx2 += xbl[i] * xbl[i];
    const float sigma2 = sumx2 / QK_K;

    uint32_t q2[16] = {};
    float scales[8];
    float max_scale = 0;
    for (int ib = 0; ib < 8; ++ib) {
      const float* xb = xbl + 32 * ib;
      float weight[32], waux[32], xval[32];
      int8_t L[32] = {}, Laux[32];
      uint8_t signs[4];
      for (int i = 0; i < 32; ++i) {
        weight[i] = qw ? qw[32 * ib + i] * std::sqrt(sigma2 + xb[i] * xb[i]) : xb[i] * xb[i];
        waux[i] = std::sqrt(weight[i]);
      }
      for (int k = 0; k < 4; ++k) {
        int nflip = 0;
        uint8_t s = 0;
        for (int i = 0; i < 8; ++i) {
          const int j = 8 * k + i;
          xval[j] = std::fabs(xb[j]);
          if (xb[j] < 0) {
            ++nflip;
            s = static_cast<uint8_t>(s | (1u << i));
          }
        }
        if (nflip % 2) {  // parity must be even: flip the cheapest value
          int imin = 0;
          float mn = weight[8 * k] * xb[8 * k] * xb[8 * k];
          for (int i = 1; i < 8; ++i) {
            const float ax = weight[8 * k + i] * xb[8 * k + i] * xb[8 * k + i];
            if (ax < mn) {
              mn = ax;
              imin = i;
            }
          }
          xval[8 * k + imin] = -xval[8 * k + imin];
          s = static_cast<uint8_t>(s ^ (1u << imin));
        }
        signs[k] = s & 127;
      }
      const float mx = *std::max_element(xval, xval + 32);
      if (mx < kGroupMaxEps) {
        scales[ib] = 0;
        continue;
      }
      float scale = initial_scale(32, kMaxQ + 1, xval, weight);
      const float eff_max = scale * kMaxQ;
      float best = 0;
      bool on_grid[4] = {}, on_grid_aux[4];
      for (int is = -6; is <= 6; ++is) {
        const float id = (2 * kMaxQ - 1 + static_cast<float>(is) * 0.1f) / eff_max;
        const float this_scale = 1 / id;
        for (int k = 0; k < 4; ++k) {
          for (int i = 0; i < 8; ++i)
            Laux[8 * k + i] = static_cast<int8_t>(std::clamp(nearest_int(0.5f * (id * xval[8 * k + i] - 1)), 0, kMaxQ - 1));
          const int u = pack_levels(Laux + 8 * k);
          on_grid_aux[k] = cb.map[u] >= 0;
          if (!on_grid_aux[k]) best_neighbour(cb, u, xval + 8 * k, waux + 8 * k, this_scale, Laux + 8 * k);
        }
        float sumqx = 0, sumq2 = 0;
        for (int i = 0; i < 32; ++i) {
          const float q = static_cast<float>(2 * Laux[i] + 1);
          sumqx += weight[i] * xval[i] * q;
          sumq2 += weight[i] * q * q;
        }
        if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
          scale = sumqx / sumq2;
          best = scale * sumqx;
          std::copy(Laux, Laux + 32, L);
          std::copy(on_grid_aux, on_grid_aux + 4, on_grid);
        }
      }
      // Re-round the off-grid groups at the final scale, then refit the scale.
      const bool any_off = !(on_grid[0] && on_grid[1] && on_grid[2] && on_grid[3]);
      if (any_off && scale > 0) {
        const float id = 1 / scale;
        for (int k = 0; k < 4; ++k) {
          if (on_grid[k]) continue;
          for (int i = 0; i < 8; ++i)
            L[8 * k + i] = static_cast<int8_t>(std::clamp(nearest_int(0.5f * (id * xval[8 * k + i] - 1)), 0, kMaxQ - 1));
          const int u = pack_levels(L + 8 * k);
          if (cb.map[u] < 0) best_neighbour(cb, u, xval + 8 * k, waux + 8 * k, scale, L + 8 * k);
        }
        float sumqx = 0, sumq2 = 0;
        for (int i = 0; i < 32; ++i) {
          const float q = static_cast<float>(2 * L[i] + 1);
          sumqx += weight[i] * xval[i] * q;
          sumq2 += weight[i] * q * q;
        }
        if (sumq2 > 0) scale = sumqx / sumq2;
      }
      if (scale < 0) {  // cannot store a negative scale: flip all signs instead
        scale = -scale;
        for (int k = 0; k < 4; ++k) signs[k] = static_cast<uint8_t>(~signs[k] & 127);
      }
      // The search modelled the codebook as exact 1:3:5 levels; the stored
      // bytes are 8:25:43. Refit the sub-block scale against the real bytes so
      // the 4-bit scale is chosen for what the dequantizer will produce.
      float sxg = 0, sgg = 0;
      for (int k = 0; k < 4; ++k) {
        const int u = pack_levels(L + 8 * k);
        const int idx = cb.map[u];
        q2[2 * ib] |= static_cast<uint32_t>(idx) << (8 * k);
        q2[2 * ib + 1] |= static_cast<uint32_t>(signs[k]) << (7 * k);
        for (int i = 0; i < 8; ++i) {
          const float g = static_cast<float>(iq2xxs_grid[idx][i]);
          sxg += weight[8 * k + i] * xval[8 * k + i] * g;
          sgg += weight[8 * k + i] * g * g;
        }
      }
      scales[ib] = sgg > 0 ? std::max(0.0f, sxg / sgg) : 0.0f;
      max_scale = std::max(max_scale, scales[ib]);
    }
    BlockIQ2_XXS& out = blocks[ibl];
    if (max_scale == 0) {
      std::memset(&out, 0, sizeof(out));
      continue;
    }
    // Stored value = d * (0.5 + s) / 4 * byte: the per-byte factor of scale
    // s is d (0.5 + s) / 4, so the largest sub-block scale maps to s = 15.
    const float d = max_scale * 4 / 15.5f;
    out.d = f32_to_f16(d);
    const float dq = f16_to_f32(out.d);
    for (int ib = 0; ib < 8; ++ib) {
      const int l = dq > 0 ? std::clamp(nearest_int(4 * scales[ib] / dq - 0.5f), 0, 15) : 0;
      q2[2 * ib + 1] |= static_cast<uint32_t>(l) << 28;
    }
    std::memcpy(out.qs, q2, sizeof(q2));
  }
}

}  // namespace ds4::quant
