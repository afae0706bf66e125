#include "model/random_blocks.h"

#include <cmath>
#include <cstddef>
#include <cstring>
#include <vector>

#include "quant/blocks.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/float16.h"

namespace ds4::model {
namespace {

// Where a type keeps its f16 scale fields, and the min scale relative to d that
// makes the elements' expected value zero: for x = d*sc*q - dmin*m with sc, q
// and m uniform over their ranges, E[x] = 0 when dmin = d * E[q].
struct Layout {
  GgmlType t;
  size_t d_at;
  int dmin_at;     // -1: no min
  float dmin_rel;  // dmin = dmin_rel * d
};
constexpr Layout kLayouts[] = {
    {GgmlType::Q8_0, 0, -1, 0},
    {GgmlType::Q2_K, offsetof(quant::BlockQ2_K, d), static_cast<int>(offsetof(quant::BlockQ2_K, dmin)), 1.5f},
    {GgmlType::Q4_K, offsetof(quant::BlockQ4_K, d), static_cast<int>(offsetof(quant::BlockQ4_K, dmin)), 7.5f},
    // Any bit pattern is valid: grid indices and sign indices cover all codes,
    // and the sign patterns make the mean zero.
    {GgmlType::IQ2_XXS, 0, -1, 0},
};

const Layout* layout(GgmlType t) {
  for (const auto& l : kLayouts)
    if (l.t == t) return &l;
  return nullptr;
}

bool is_float(GgmlType t) { return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16; }

void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

void random_bytes(SplitMix& g, uint8_t* dst, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t r = g.next();
    std::memcpy(dst + i, &r, 8);
  }
  if (i < n) {
    const uint64_t r = g.next();
    std::memcpy(dst + i, &r, n - i);
  }
}

void fill_quant(const Layout& L, size_t bb, uint16_t d, uint16_t dmin, uint64_t seed, uint8_t* dst, int64_t n_blocks) {
  SplitMix g(seed);
  random_bytes(g, dst, bb * static_cast<size_t>(n_blocks));
  for (int64_t b = 0; b < n_blocks; ++b) {
    uint8_t* blk = dst + static_cast<size_t>(b) * bb;
    put16(blk + L.d_at, d);
    if (L.dmin_at >= 0) put16(blk + L.dmin_at, dmin);
    if (L.t == GgmlType::Q8_0) {
      // Quantizers never emit -128 (|q| <= 127), and SIMD kernels may rely on it.
      auto* q = reinterpret_cast<int8_t*>(blk + 2);
      for (int k = 0; k < quant::QK; ++k) q[k] = q[k] == -128 ? int8_t{-127} : q[k];
    }
  }
}

}  // namespace

uint64_t mix_seed(uint64_t a, uint64_t b, uint64_t c) {
  SplitMix g(a ^ 0x5851f42d4c957f2dULL);
  uint64_t h = g.next() ^ b;
  SplitMix g2(h);
  h = g2.next() ^ c;
  SplitMix g3(h);
  return g3.next();
}

bool RandomBlocks::supports(GgmlType t) { return is_float(t) || layout(t) != nullptr; }

RandomBlocks::RandomBlocks(GgmlType t, float rms) : t_(t), rms_(rms) {
  if (!supports(t)) fail("synth: no direct random generator for type {}", ggml_type_name(t));
  if (!(rms > 0) || !std::isfinite(rms)) fail("synth: bad weight scale {}", rms);
  const quant::TypeOps& ops = quant::require_ops(t, "synth");
  block_size_ = ops.block_size;
  block_bytes_ = ops.block_bytes;
  const float a = rms * std::sqrt(3.0f);  // uniform on [-a, a] has this rms
  if (t == GgmlType::F16 || t == GgmlType::BF16) {
    for (int i = 0; i < 4096; ++i) {
      const float v = a * (static_cast<float>(2 * i + 1) / 4096.0f - 1.0f);
      table_[i] = t == GgmlType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
    }
    return;
  }
  if (t == GgmlType::F32) return;
  // Calibrate: the rms of the elements with unit scale fields, measured on a
  // fixed sample, so `rms` needs no per-type formula.
  const Layout& L = *layout(t);
  constexpr int64_t kSample = 4096;
  std::vector<uint8_t> blocks(block_bytes_ * kSample);
  fill_quant(L, block_bytes_, f32_to_f16(1.0f), f32_to_f16(L.dmin_rel), 12345, blocks.data(), kSample);
  std::vector<float> v(static_cast<size_t>(kSample * block_size_));
  ops.dequantize_row(blocks.data(), v.data(), kSample * block_size_);
  double s2 = 0;
  for (float x : v) s2 += double{x} * x;
  const double unit_rms = std::sqrt(s2 / static_cast<double>(v.size()));
  d_ = f32_to_f16(static_cast<float>(rms / unit_rms));
  dmin_ = f32_to_f16(L.dmin_rel * f16_to_f32(d_));
  if (!(f16_to_f32(d_) > 0)) fail("synth: weight scale {} underflows the {} block scale", rms, ggml_type_name(t));
}

void RandomBlocks::fill(uint64_t seed, uint8_t* dst, int64_t n_blocks) const {
  if (t_ == GgmlType::F16 || t_ == GgmlType::BF16) {
    // 12 random bits per element pick one of 4096 evenly spaced levels.
    SplitMix g(seed);
    auto* out = reinterpret_cast<uint16_t*>(dst);
    int64_t i = 0;
    for (; i + 5 <= n_blocks; i += 5) {
      uint64_t r = g.next();
      for (int k = 0; k < 5; ++k, r >>= 12) out[i + k] = table_[r & 4095];
    }
    uint64_t r = g.next();
    for (; i < n_blocks; ++i, r >>= 12) out[i] = table_[r & 4095];
    return;
  }
  if (t_ == GgmlType::F32) {
    SplitMix g(seed);
    const float a = rms_ * std::sqrt(3.0f);
    for (int64_t i = 0; i < n_blocks; ++i) {
      const float u = static_cast<float>(g.next() >> 40) * 0x1.0p-24f;  // [0, 1)
      const float v = a * (2.0f * u - 1.0f);
      std::memcpy(dst + 4 * i, &v, 4);
    }
    return;
  }
  fill_quant(*layout(t_), block_bytes_, d_, dmin_, seed, dst, n_blocks);
}

}  // namespace ds4::model
