#include "backend/cpu/layer_math.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "backend/cpu/numerics.h"
#include "backend/cpu/ops.h"
#include "util/float16.h"
#include "util/thread_pool.h"

namespace ds4::backend::cpu {

// The attention and indexer loops also get a 256-bit build, picked at load
// where the CPU has AVX2 (GCC target clones). The compiler's vectors of
// dot's 8 partial sums and of the element-wise updates do the same float
// operations lane by lane (AVX2 brings no FMA, and ISO C++ keeps a * b + c
// unfused), so both builds give the same bits.
#if defined(__x86_64__) && defined(__GNUC__)
#define DS4_AVX2_CLONES [[gnu::target_clones("avx2", "default")]]
#else
#define DS4_AVX2_CLONES
#endif

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
[[gnu::always_inline]] inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// dot(a[g], b, n) for g < 4 at once: four independent chains of partial
// sums (one alone waits on its own adds), each in dot's order exactly.
[[gnu::always_inline]] inline void dot4(const float* const a[4], const float* b, int64_t n, float out[4]) {
  float acc[4][8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int g = 0; g < 4; ++g)
      for (int k = 0; k < 8; ++k) acc[g][k] += a[g][i + k] * b[i + k];
  for (int g = 0; g < 4; ++g) {
    const float* c = acc[g];
    float s = ((c[0] + c[4]) + (c[1] + c[5])) + ((c[2] + c[6]) + (c[3] + c[7]));
    for (int64_t t = i; t < n; ++t) s += a[g][t] * b[t];
    out[g] = s;
  }
}

}  // namespace

namespace {

// Indexer scores of compressed rows [c0, c1): sum over heads, in order, of
// w[h] * relu(q_h . k_c); four heads' dots at a time (dot4, each in dot's
// order), so the blocking changes no bit.
[[gnu::always_inline]] inline void score_rows_body(const float* q, const float* w, int64_t heads, const float* rows,
                                                   int64_t d, int64_t c0, int64_t c1, float* score) {
  for (int64_t c = c0; c < c1; ++c) {
    const float* k = rows + c * d;
    float s = 0;
    int64_t h = 0;
    for (; h + 4 <= heads; h += 4) {
      const float* qs[4] = {q + h * d, q + (h + 1) * d, q + (h + 2) * d, q + (h + 3) * d};
      float v[4];
      dot4(qs, k, d, v);
      for (int g = 0; g < 4; ++g) s += w[h + g] * std::max(v[g], 0.0f);
    }
    for (; h < heads; ++h) s += w[h] * std::max(dot(q + h * d, k, d), 0.0f);
    score[c] = s;
  }
}
DS4_AVX2_CLONES void score_rows(const float* q, const float* w, int64_t heads, const float* rows, int64_t d,
                                int64_t c0, int64_t c1, float* score) {
  score_rows_body(q, w, heads, rows, d, c0, c1, score);
}

}  // namespace

std::vector<int64_t> indexer_select(const CompressorState& idx, const float* q, const float* w, int64_t heads,
                                    int64_t top_k, ThreadPool* pool) {
  const int64_t n = idx.n_rows(), d = idx.dim;
  std::vector<int64_t> sel(static_cast<size_t>(n));
  std::iota(sel.begin(), sel.end(), 0);
  if (n <= top_k) return sel;
  std::vector<float> score(static_cast<size_t>(n));
  for_range(pool, n, 16, [&](int64_t c0, int64_t c1) { score_rows(q, w, heads, idx.rows.data(), d, c0, c1, score.data()); });
  std::partial_sort(sel.begin(), sel.begin() + top_k, sel.end(), [&](int64_t a, int64_t b) {
    const float sa = score[static_cast<size_t>(a)], sb = score[static_cast<size_t>(b)];
    return sa > sb || (sa == sb && a < b);
  });
  sel.resize(static_cast<size_t>(top_k));
  std::sort(sel.begin(), sel.end());
  return sel;
}

namespace {

// Heads [h0, h0 + nh) of sink attention over nk keys; s: nh * nk scratch.
// The heads share their keys (one KV row per position), so the block walks
// the keys once: each key is loaded while it is in L1 for all of them, and
// their dots run side by side. Each head's sums keep the order of a head
// alone (its dot, then the keys in order), so the blocking changes no bit.
[[gnu::always_inline]] inline void attend_heads(const float* q, int64_t h0, int64_t nh, int64_t dim,
                                                const float* const* keys, int64_t nk, const float* sinks, float scale,
                                                float* s, float* out) {
  constexpr int64_t kMax = 8;
  float mx[kMax], den[kMax];
  for (int64_t g = 0; g < nh; ++g) mx[g] = sinks[h0 + g];
  for (int64_t j = 0; j < nk; ++j) {
    int64_t g = 0;
    for (; g + 4 <= nh; g += 4) {
      const float* qs[4] = {q + (h0 + g) * dim, q + (h0 + g + 1) * dim, q + (h0 + g + 2) * dim, q + (h0 + g + 3) * dim};
      float v[4];
      dot4(qs, keys[j], dim, v);
      for (int t = 0; t < 4; ++t) {
        const float x = v[t] * scale;
        s[(g + t) * nk + j] = x;
        mx[g + t] = std::max(mx[g + t], x);
      }
    }
    for (; g < nh; ++g) {
      const float v = dot(q + (h0 + g) * dim, keys[j], dim) * scale;
      s[g * nk + j] = v;
      mx[g] = std::max(mx[g], v);
    }
  }
  for (int64_t g = 0; g < nh; ++g) {
    den[g] = std::exp(sinks[h0 + g] - mx[g]);
    std::fill(out + (h0 + g) * dim, out + (h0 + g + 1) * dim, 0.0f);
  }
  for (int64_t j = 0; j < nk; ++j) {
    const float* kj = keys[j];
    for (int64_t g = 0; g < nh; ++g) {
      const float e = std::exp(s[g * nk + j] - mx[g]);
      den[g] += e;
      float* oh = out + (h0 + g) * dim;
      for (int64_t k = 0; k < dim; ++k) oh[k] += e * kj[k];
    }
  }
  for (int64_t g = 0; g < nh; ++g) {
    float* oh = out + (h0 + g) * dim;
    for (int64_t k = 0; k < dim; ++k) oh[k] /= den[g];
  }
}

DS4_AVX2_CLONES void attend_heads_any(const float* q, int64_t h0, int64_t nh, int64_t dim, const float* const* keys,
                                      int64_t nk, const float* sinks, float scale, float* s, float* out) {
  attend_heads(q, h0, nh, dim, keys, nk, sinks, scale, s, out);
}

}  // namespace

void attend(const float* q, int64_t heads, int64_t dim, std::span<const float* const> keys, const float* sinks,
            float* out, ThreadPool* pool) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
  constexpr int64_t kHeads = 8;
  const auto nk = static_cast<int64_t>(keys.size());
  for_range(pool, (heads + kHeads - 1) / kHeads, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> s(static_cast<size_t>(kHeads * nk));
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t h0 = b * kHeads;
      attend_heads_any(q, h0, std::min(kHeads, heads - h0), dim, keys.data(), nk, sinks, scale, s.data(), out);
    }
  });
}

}  // namespace ds4::backend::cpu
