#pragma once
// Pieces of one layer's token stream that carry state: the compressor step,
// the lightning indexer's row selection and sink attention.
#include <cstdint>
#include <span>
#include <vector>

#include "backend/cpu/rope.h"
#include "backend/cpu/session.h"

namespace ds4 {
class ThreadPool;
}

namespace ds4::backend::cpu {

enum class RowKind { attention, indexer };

struct CompressorParams {
  const float* ape = nullptr;   // [ratio][width]
  const float* norm = nullptr;  // [dim]
  float rms_eps = 0;
  int64_t nope = 0;  // attention rows: dims before the rope tail
  int64_t rope_dim = 0;
  const Rope* rope = nullptr;
  RowKind kind = RowKind::attention;
  NumericsMode mode = NumericsMode::exact;
};

// Feeds token at position p (its compressor projections kv and gate, each
// `width` wide). When p closes a window, pools it, normalises, ropes and (in
// faithful mode) rounds the new row, then appends it to s.rows.
void compressor_step(CompressorState& s, const CompressorParams& prm, int64_t p, const float* kv, const float* gate);

// Indices of the compressed rows token p attends to in a CSA layer: all n rows
// when n <= top_k, else the top_k by indexer score (lowest index wins ties),
// in ascending order. q: heads x head_dim (already roped/QAT'd); w: per-head
// weights (already scaled). Rows are scored on `pool` when given; each row's
// score is summed by one thread in head order, so any thread count gives the
// same selection.
std::vector<int64_t> indexer_select(const CompressorState& idx, const float* q, const float* w, int64_t heads,
                                    int64_t top_k, ThreadPool* pool = nullptr);

// Sink attention of every head of q (heads x dim) over `keys` (K = V). Heads
// are spread over `pool` when given; each head is computed by one thread in
// the same order, so results do not depend on the thread count.
void attend(const float* q, int64_t heads, int64_t dim, std::span<const float* const> keys, const float* sinks,
            float* out, ThreadPool* pool = nullptr);

}  // namespace ds4::backend::cpu
