#include "backend/cpu/layer_math.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/cpu/numerics.h"
#include "backend/cpu/ops.h"
#include "util/float16.h"
#include "util/thread_pool.h"

namespace ds4::backend::cpu {

void compressor_step(CompressorState& s, const CompressorParams& prm, int64_t p, const float* kv, const float* gate) {
  const int64_t r = s.ratio, d = s.dim, cw = s.width();
  const int64_t slot = p % r;
  const int64_t row = (s.overlap ? r : 0) + slot;
  float* kv_row = s.kv.data() + row * cw;
  float* sc_row = s.score.data() + row * cw;
  const float* ape = prm.ape + slot * cw;
  for (int64_t j = 0; j < cw; ++j) {
    kv_row[j] = kv[j];
    sc_row[j] = gate[j] + ape[j];
  }
  if ((p + 1) % r != 0) return;

  const int64_t window = (p + 1) / r - 1;
  std::vector<float> v(static_cast<size_t>(d));
  const int64_t cand = s.overlap ? 2 * r : r;
  for (int64_t j = 0; j < d; ++j) {
    // Overlap: rows [0, r) contribute their first half, rows [r, 2r) their second.
    auto col = [&](int64_t i) { return s.overlap && i >= r ? d + j : j; };
    float mx = -INFINITY;
    for (int64_t i = 0; i < cand; ++i) mx = std::max(mx, s.score[static_cast<size_t>(i * cw + col(i))]);
    float den = 0, num = 0;
    for (int64_t i = 0; i < cand; ++i) {
      const float e = std::exp(s.score[static_cast<size_t>(i * cw + col(i))] - mx);
      den += e;
      num += e * s.kv[static_cast<size_t>(i * cw + col(i))];
    }
    v[static_cast<size_t>(j)] = num / den;
  }
  rms_norm(v.data(), prm.norm, d, prm.rms_eps, v.data());
  prm.rope->apply(v.data() + d - prm.rope_dim, window * r);
  if (prm.mode == NumericsMode::faithful) {
    if (prm.kind == RowKind::attention) {
      fp8_simulate_64(std::span<float>(v.data(), static_cast<size_t>(prm.nope)));
      for (float& x : v) x = f16_to_f32(f32_to_f16(x));
    } else {
      indexer_qat(v);
    }
  }
  s.rows.insert(s.rows.end(), v.begin(), v.end());
  if (s.overlap) {
    // The window just closed becomes the "previous" window of the next one.
    std::copy(s.kv.begin() + r * cw, s.kv.begin() + 2 * r * cw, s.kv.begin());
    std::copy(s.score.begin() + r * cw, s.score.begin() + 2 * r * cw, s.score.begin());
  }
}

namespace {

// fn(begin, end) over [0, n), on the pool when there is one.
template <class F>
void for_range(ThreadPool* pool, int64_t n, int64_t grain, F&& fn) {
  if (pool && n > grain)
    pool->parallel_for(n, fn, grain);
  else
    fn(int64_t{0}, n);
}

// Dot product with 8 interleaved partial sums: the compiler vectorizes it
// (a single running sum it may not reorder), and the order is fixed, so every
// caller and thread count gets the same bits.
float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

std::vector<int64_t> indexer_select(const CompressorState& idx, const float* q, const float* w, int64_t heads,
                                    int64_t top_k, ThreadPool* pool) {
  const int64_t n = idx.n_rows(), d = idx.dim;
  std::vector<int64_t> sel(static_cast<size_t>(n));
  std::iota(sel.begin(), sel.end(), 0);
  if (n <= top_k) return sel;
  std::vector<float> score(static_cast<size_t>(n));
  for_range(pool, n, 16, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const float* k = idx.rows.data() + c * d;
      float s = 0;
      for (int64_t h = 0; h < heads; ++h) {
        s += w[h] * std::max(dot(q + h * d, k, d), 0.0f);
      }
      score[static_cast<size_t>(c)] = s;
    }
  });
  std::partial_sort(sel.begin(), sel.begin() + top_k, sel.end(), [&](int64_t a, int64_t b) {
    const float sa = score[static_cast<size_t>(a)], sb = score[static_cast<size_t>(b)];
    return sa > sb || (sa == sb && a < b);
  });
  sel.resize(static_cast<size_t>(top_k));
  std::sort(sel.begin(), sel.end());
  return sel;
}

void attend(const float* q, int64_t heads, int64_t dim, std::span<const float* const> keys, const float* sinks,
            float* out, ThreadPool* pool) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  for_range(pool, heads, 1, [&](int64_t h0, int64_t h1) {
    std::vector<float> s(keys.size());
    for (int64_t h = h0; h < h1; ++h) {
      const float* qh = q + h * dim;
      float mx = sinks[h];
      for (size_t j = 0; j < keys.size(); ++j) {
        s[j] = dot(qh, keys[j], dim) * scale;
        mx = std::max(mx, s[j]);
      }
      float den = std::exp(sinks[h] - mx);
      float* oh = out + h * dim;
      std::fill(oh, oh + dim, 0.0f);
      for (size_t j = 0; j < keys.size(); ++j) {
        const float e = std::exp(s[j] - mx);
        den += e;
        for (int64_t k = 0; k < dim; ++k) oh[k] += e * keys[j][k];
      }
      for (int64_t k = 0; k < dim; ++k) oh[k] /= den;
    }
  });
}

}  // namespace ds4::backend::cpu
