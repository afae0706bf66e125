#include "backend/cpu/session.h"

#include <cmath>
#include <cstring>
#include <utility>

#include "util/error.h"

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

size_t state_bytes(const model::ModelConfig& c, int64_t ctx) {
  size_t floats = 0;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    floats += static_cast<size_t>(c.sliding_window) * c.head_dim;
    const uint32_t r = c.compress_ratios[l];
    auto comp = [&](int64_t dim, bool overlap) {
      const int64_t width = (overlap ? 2 : 1) * dim;
      floats += 2 * static_cast<size_t>((overlap ? 2 : 1) * r * width);  // kv + score frontier
      floats += static_cast<size_t>(ctx / r * dim);                       // emitted rows
    };
    if (r != 0) comp(c.head_dim, r == 4);
    if (r == 4) comp(c.indexer_head_dim, true);
  }
  return floats * sizeof(float);
}

CpuSession::CpuSession(const model::ModelConfig& c, NumericsMode m, int64_t context) : ctx(context), mode(m) {
  if (ctx <= 0) fail("session: context size must be > 0 (got {})", ctx);
  layers.resize(c.n_layer);
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    LayerState& L = layers[l];
    L.raw.assign(static_cast<size_t>(c.sliding_window) * c.head_dim, 0.0f);
    const uint32_t r = c.compress_ratios[l];
    if (r != 0) init_compressor(L.attn, r, c.head_dim, r == 4);
    if (r == 4) init_compressor(L.indexer, r, c.indexer_head_dim, true);
    for (CompressorState* s : {&L.attn, &L.indexer})
      if (s->dim) s->rows.reserve(static_cast<size_t>(ctx / s->ratio * s->dim));
  }
}

namespace {

template <typename T>
void put(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

void put_floats(std::vector<uint8_t>& out, const std::vector<float>& v) {
  put<uint64_t>(out, v.size());
  const size_t at = out.size();
  out.resize(at + v.size() * sizeof(float));
  if (!v.empty()) std::memcpy(out.data() + at, v.data(), v.size() * sizeof(float));
}

struct Reader {
  std::span<const uint8_t> b;
  size_t at = 0;
  template <typename T>
  T get() {
    if (b.size() - at < sizeof(T)) fail("session state: truncated at byte {}", at);
    T v;
    std::memcpy(&v, b.data() + at, sizeof(T));
    at += sizeof(T);
    return v;
  }
  // `want`: the size this session's shape needs (rows grow, so any for them).
  void floats(std::vector<float>& v, bool any_size) {
    const auto n = get<uint64_t>();
    if (!any_size && n != v.size()) fail("session state: array of {} floats at byte {}, expected {}", n, at, v.size());
    if (n > (b.size() - at) / sizeof(float)) fail("session state: truncated at byte {}", at);
    v.resize(n);
    if (n) std::memcpy(v.data(), b.data() + at, n * sizeof(float));
    at += n * sizeof(float);
  }
};

}  // namespace

std::vector<uint8_t> CpuSession::save() const {
  // Sized up front: a 32K-token Flash state is ~0.5 GB, and growing the
  // vector by doubling copied it several times over (bench_checkpoint).
  size_t total = 4 + 4 + 8 + 1 + 4;
  for (const LayerState& L : layers) {
    total += 8 + L.raw.size() * sizeof(float);
    for (const CompressorState* c : {&L.attn, &L.indexer})
      total += 3 * 8 + (c->kv.size() + c->score.size() + c->rows.size()) * sizeof(float);
  }
  std::vector<uint8_t> out{'D', 'S', '4', 'S'};
  out.reserve(total);
  put<uint32_t>(out, 1);
  put<int64_t>(out, pos);
  put<uint8_t>(out, mode == NumericsMode::exact ? 0 : 1);
  put<uint32_t>(out, static_cast<uint32_t>(layers.size()));
  for (const LayerState& L : layers) {
    put_floats(out, L.raw);
    for (const CompressorState* c : {&L.attn, &L.indexer}) {
      put_floats(out, c->kv);
      put_floats(out, c->score);
      put_floats(out, c->rows);
    }
  }
  return out;
}

void CpuSession::load(std::span<const uint8_t> bytes) {
  Reader r{bytes};
  if (bytes.size() < 4 || std::memcmp(bytes.data(), "DS4S", 4) != 0) fail("session state: bad magic");
  r.at = 4;
  if (const auto v = r.get<uint32_t>(); v != 1) fail("session state: unsupported version {}", v);
  const auto p = r.get<int64_t>();
  if (p < 0 || p > ctx) fail("session state: position {} does not fit this session's context of {} tokens", p, ctx);
  const auto m = r.get<uint8_t>() == 0 ? NumericsMode::exact : NumericsMode::faithful;
  if (m != mode) fail("session state: saved with other numerics");
  if (const auto n = r.get<uint32_t>(); n != layers.size())
    fail("session state: {} layers, the model has {}", n, layers.size());
  // Filled on a copy, so a bad file leaves this session as it was.
  std::vector<LayerState> ls = layers;
  for (LayerState& L : ls) {
    r.floats(L.raw, false);
    for (CompressorState* c : {&L.attn, &L.indexer}) {
      r.floats(c->kv, false);
      r.floats(c->score, false);
      // Room for the whole context before the rows arrive, so they are copied once.
      if (c->dim) c->rows.reserve(static_cast<size_t>(ctx / c->ratio * c->dim));
      r.floats(c->rows, true);
      if (c->dim ? c->rows.size() % static_cast<size_t>(c->dim) != 0 : !c->rows.empty())
        fail("session state: compressed rows are not a whole number of rows");
      if (c->dim) {
        const auto cap = static_cast<size_t>(ctx / c->ratio * c->dim);
        if (c->rows.size() > cap)
          fail("session state: {} compressed rows do not fit this session's context of {} tokens",
               c->rows.size() / static_cast<size_t>(c->dim), ctx);
      }
    }
  }
  if (r.at != bytes.size()) fail("session state: {} trailing bytes", bytes.size() - r.at);
  layers = std::move(ls);
  pos = p;
}

}  // namespace ds4::backend::cpu
