#include "backend/cpu/session.h"

#include <cmath>

namespace ds4::backend::cpu {
namespace {

void init_compressor(CompressorState& s, int64_t ratio, int64_t dim, bool overlap) {
  s.ratio = ratio;
  s.dim = dim;
  s.overlap = overlap;
  const auto n = static_cast<size_t>((overlap ? 2 : 1) * ratio * s.width());
  s.kv.assign(n, 0.0f);
  // -inf gates: a window-(-1) candidate of the first CSA window gets weight 0.
  s.score.assign(n, -INFINITY);
}

}  // namespace

CpuSession::CpuSession(const model::ModelConfig& c, NumericsMode m) : mode(m) {
  layers.resize(c.n_layer);
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    LayerState& L = layers[l];
    L.raw.assign(static_cast<size_t>(c.sliding_window) * c.head_dim, 0.0f);
    const uint32_t r = c.compress_ratios[l];
    if (r != 0) init_compressor(L.attn, r, c.head_dim, r == 4);
    if (r == 4) init_compressor(L.indexer, r, c.indexer_head_dim, true);
  }
}

}  // namespace ds4::backend::cpu
