#pragma once
// KV state of one CPU session (model-spec §9): per layer a raw sliding-window
// ring, and for compressed layers the compressor frontier and the compressed
// rows (plus the indexer's for CSA layers).
#include <cstdint>
#include <vector>

#include "backend/backend.h"

namespace ds4::backend::cpu {

struct CompressorState {
  int64_t ratio = 0;     // tokens per window
  int64_t dim = 0;       // d: width of an emitted row
  bool overlap = false;  // CSA: windows w-1 (first half) and w (second half) pool together
  // Frontier: `slots` rows of width c*d (c = 2 if overlap). Overlap: rows
  // [0, r) hold the previous window, [r, 2r) the current one.
  std::vector<float> kv, score;
  std::vector<float> rows;  // emitted rows, [n][dim]
  int64_t n_rows() const { return dim ? static_cast<int64_t>(rows.size()) / dim : 0; }
  int64_t width() const { return (overlap ? 2 : 1) * dim; }
};

struct LayerState {
  std::vector<float> raw;  // ring of sliding_window rows of head_dim; position p at slot p % window
  CompressorState attn, indexer;
};

// Bytes of a session's KV state at full context `ctx`, in f32 as the CPU keeps
// it: raw rings, compressor frontiers and every compressed row ctx can emit.
size_t state_bytes(const model::ModelConfig& c, int64_t ctx);

class CpuSession final : public SessionState {
 public:
  // Reserves room for every compressed row `ctx` tokens can emit, so the
  // session's memory is taken here and not while it runs.
  CpuSession(const model::ModelConfig& c, NumericsMode mode, int64_t ctx);
  int64_t position() const override { return pos; }
  int64_t capacity() const override { return ctx; }
  NumericsMode numerics() const override { return mode; }
  // Canonical layout, little-endian: "DS4S", u32 version 1, i64 position,
  // u8 numerics (0 exact, 1 faithful), u32 layers; per layer the raw ring,
  // then for the attention and the indexer compressor kv, score and rows,
  // each array as u64 float count + f32 values.
  std::vector<uint8_t> save() const override;
  void load(std::span<const uint8_t> bytes) override;

  int64_t pos = 0;
  int64_t ctx = 0;
  NumericsMode mode;
  std::vector<LayerState> layers;
};

}  // namespace ds4::backend::cpu
