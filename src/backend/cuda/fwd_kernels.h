#pragma once
// Forward-pass kernels of the CUDA backend besides the weight matvecs
// (model-spec §4-§8). Each mirrors one function of the CPU reference
// (backend/cpu/ops, layer_math, numerics, rope) in f32; where the CPU fixes an
// order (indexer head sums, Hadamard butterflies, Sinkhorn) the kernel keeps it
// so that ties and roundings land where the CPU's do. Plain C++ API: device
// pointers, work queued on `s`, nothing waited for.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace ds4::cuda::fwd {

// y[r] = x[r] * w / sqrt(mean(x[r]^2) + eps) for `rows` rows of n (w may be null;
// in place allowed). Sum of squares in double, as the CPU.
void rms_norm_rows(const float* x, const float* w, int64_t rows, int64_t n, float eps, float* y, cudaStream_t s);
// X[i*D + d] = e[d] for every HC copy i.
void hc_fill(const float* e, int hc, int64_t D, float* X, cudaStream_t s);
// HC coefficients from mixer output m (model-spec §5.2), Sinkhorn included.
void hc_split(const float* m, const float* scale, const float* base, int hc, float eps, int iters, float* pre,
              float* post, float* comb, cudaStream_t s);
// hc_split of `rows` rows at once: row r's mixer output at m + r * m_stride,
// its coefficients at pre/post + r * hc and comb + r * hc * hc.
void hc_split_rows(const float* m, int64_t m_stride, int64_t rows, const float* scale, const float* base, int hc,
                   float eps, int iters, float* pre, float* post, float* comb, cudaStream_t s);
// Output head: pre[i] = sigmoid(m[i] * scale[0] + base[i]) + eps.
void hc_head_pre(const float* m, const float* scale, const float* base, int hc, float eps, float* pre, cudaStream_t s);
// y[d] = sum_i pre[i] X[i*D + d]; with rows > 1, for each row r of a batch
// (X + r*hc*D, pre + r*hc, y + r*D).
void hc_collapse(const float* X, const float* pre, int hc, int64_t D, float* y, cudaStream_t s, int64_t rows = 1);
// X'_j = post_j out + sum_i comb[i][j] X_i, in place; rows as hc_collapse
// (out + r*D, post + r*hc, comb + r*hc*hc).
void hc_expand(float* X, const float* out, const float* post, const float* comb, int hc, int64_t D, cudaStream_t s,
               int64_t rows = 1);
// moe_sum(out, ye, ys, D, K, rows) then hc_expand(X, out, ...) with the same
// arithmetic, out never stored (the FFN's end when nothing reads out between).
void hc_expand_moe(float* X, const float* ye, const float* ys, int K, const float* post, const float* comb, int hc,
                   int64_t D, int64_t rows, cudaStream_t s);
// Interleaved-pair RoPE of `heads` tails: x + h*stride holds 2*pairs values.
void rope(float* x, int64_t stride, int heads, const float* inv_freq, int pairs, int64_t pos, bool inverse,
          cudaStream_t s);
// Faithful KV row: FP8 (e4m3, blocks of 64) on the first `nope` values, then
// f16 rounding of all n.
void kv_round(float* x, int64_t nope, int64_t n, cudaStream_t s);
// Indexer QAT (Hadamard + FP4 per 32) of `rows` rows of d (d a power of two).
void indexer_qat(float* x, int64_t rows, int64_t d, cudaStream_t s);
void scale(float* x, int64_t n, float a, cudaStream_t s);
// y += x
void add(float* y, const float* x, int64_t n, cudaStream_t s);
// Directional steering of one row (docs/steering.md): y -= s * d * (d . y),
// the dot product in double as the CPU computes it.
void steer_row(float* y, const float* d, int64_t n, float s, cudaStream_t st);

// score[c] = sum_h w[h] * max(q_h . k_c, 0) over n rows of d.
void indexer_scores(const float* rows, int64_t n, int64_t d, const float* q, const float* w, int heads, float* score,
                    cudaStream_t s);
// The k highest scores of n (lowest index wins ties), indices ascending, into
// sel[k] (k <= n).
void topk_select(const float* score, int64_t n, int64_t k, int32_t* sel, cudaStream_t s);

// Sink attention of H heads of q over: the raw ring (window slots of dim, the
// n_raw positions p - n_raw + 1 .. p at slot j % window) then compressed rows,
// either the first n_comp rows or rows sel[0 .. n_comp) when sel is set.
// The keys are split between blocks when there are many; `scratch` holds
// their partial results: attend_scratch_floats(H, dim) floats.
void attend(const float* q, int H, int64_t dim, const float* raw, int64_t window, int64_t p, int64_t n_raw,
            const float* comp, int64_t n_comp, const int32_t* sel, const float* sinks, float* out, float* scratch,
            cudaStream_t s);
int64_t attend_scratch_floats(int H, int64_t dim);

// ---- the stateful middle over the rows of a pass -------------------------------
// Up to kMaxRows rows (tokens of one or several sequences) in one launch each.
// Per-row parameters travel by value in the launch, so nothing is copied to the
// device for them. Each row's numbers are exactly those of the single-row
// functions above with its parameters (a row alone, or in any batch).
inline constexpr int kMaxRows = 32;

struct Positions {
  int n = 0;
  int64_t pos[kMaxRows];
};
struct Tokens {
  int n = 0;
  int32_t tok[kMaxRows];
};
// rope() of row i (x + i * row_stride) at position pos[i].
void rope_rows(float* x, int64_t row_stride, int64_t stride, int heads, const float* inv_freq, int pairs,
               const Positions& p, bool inverse, cudaStream_t s);

// The raw KV rows of a pass into their ring slots: row i (src + i * hd) is
// normalised by w into dst[i], its last 2 * pairs values rotated at pos[i],
// and for faithful rows rounded as kv_round(dst[i], nope, hd): exactly
// rms_norm_rows + rope + kv_round of that row alone, in one launch.
struct KvRows {
  int n = 0;
  float* dst[kMaxRows];
  int64_t pos[kMaxRows];
  bool faithful[kMaxRows];
};
void kv_rows(const float* src, int64_t hd, const float* w, float eps, int64_t nope, const float* inv_freq, int pairs,
             const KvRows& rows, cudaStream_t s);

// One row's indexer: its query and head weights (q + i * q_stride, w + i *
// w_stride), the first n compressed rows to score (n == 0: the row skips the
// indexer), where its scores and its top-k selection go.
struct IdxRow {
  int64_t n = 0;
  const float* rows = nullptr;
  float* score = nullptr;
  int32_t* sel = nullptr;
};
struct IdxRows {
  int n = 0;
  IdxRow r[kMaxRows];
};
void indexer_scores_rows(const IdxRows& rows, int64_t d, const float* q, int64_t q_stride, const float* w,
                         int64_t w_stride, int heads, cudaStream_t s);
// topk_select of each row that has n > 0 (k <= n).
void topk_rows(const IdxRows& rows, int64_t k, cudaStream_t s);

// One row's attention: its position, the n_raw newest ring slots of `raw` (a
// ring of AttnRows::ring slots, position p at slot p % ring), then n_comp
// compressed rows of `comp` (rows sel[0 .. n_comp) when sel is set).
struct AttnRow {
  int64_t pos = 0, n_raw = 0, n_comp = 0;
  const float* raw = nullptr;
  const float* comp = nullptr;
  const int32_t* sel = nullptr;
};
struct AttnRows {
  int n = 0;
  int64_t ring = 0;
  AttnRow r[kMaxRows];
};
// q and out: row i at + i * H * dim. scratch: attend_rows_scratch_floats.
void attend_rows(const float* q, int H, int64_t dim, const AttnRows& rows, const float* sinks, float* out,
                 float* scratch, cudaStream_t s);
int64_t attend_rows_scratch_floats(int H, int64_t dim);

// The compressor steps of a middle group's rows, one launch per compressor:
// each segment is one session's consecutive rows (positions p0 .. p0 + n - 1,
// their kv/gate projections `in_stride` floats apart), walked in order by one
// block exactly as comp_store, then at a closing window comp_pool,
// rms_norm_rows (weight `norm`), rope of the last rope_dim values at the
// window's first position, and for faithful rows indexer_qat (indexer) or
// kv_round (attention), then the overlap shift: the same arithmetic, launch
// for launch, as the per-row steps.
struct CompSeg {
  float* fkv = nullptr;    // frontier kv [(overlap ? 2r : r)][cw]
  float* fscore = nullptr;  // frontier scores, same shape
  float* rows = nullptr;    // compressed rows [cap][d]; this segment appends from n_rows on
  const float* kv = nullptr;
  const float* gate = nullptr;
  int64_t p0 = 0, n_rows = 0;
  int n = 0;
  bool faithful = false;
};
struct CompRows {
  int n = 0;  // segments
  CompSeg s[kMaxRows];
};
struct CompShape {
  int64_t ratio = 0, d = 0, in_stride = 0, nope = 0;
  bool overlap = false, indexer = false;
  const float* ape = nullptr;   // [ratio][cw]
  const float* norm = nullptr;  // [d]
  const float* inv_freq = nullptr;
  int pairs = 0;
  float eps = 0;
};
void comp_rows(const CompShape& shape, const CompRows& segs, cudaStream_t s);

// MoE routing (model-spec §7): s_e = sqrt(softplus(logit_e)); hash_ids (K
// expert ids, device) or top-K of s + bias (lowest index wins ties); weights
// s / sum (when norm) * wscale. sel[K], w[K].
void route(const float* logits, int E, int K, const int32_t* hash_ids, const float* bias, bool norm, float wscale,
           int32_t* sel, float* w, cudaStream_t s);
// route() of each row of a pass (logits + i * E, sel and w + i * K); a
// hash-routed layer's ids of row i are row toks.tok[i] of hash_table (K
// wide), none when hash_table is null.
void route_rows(const float* logits, int E, int K, const int32_t* hash_table, const Tokens& toks, const float* bias,
                bool norm, float wscale, int32_t* sel, float* w, cudaStream_t s);
// g = silu(min(g, c)) * clamp(u, -c, c) * (wk ? *wk : 1), n values.
void swiglu(float* g, const float* u, int64_t n, float clamp, const float* wk, cudaStream_t s);
// swiglu over `rows` rows of ff values, row r weighted by wts[r] (null: 1).
void swiglu_rows(float* g, const float* u, int64_t ff, int64_t rows, float clamp, const float* wts, cudaStream_t s);
// y += x_0 + x_1 + ... + x_{rows-1} (x_r = x + r * n), added in row order.
// out[i] = sum_k ye[i][k] + ys[i] (ys may be null) for n rows of D, K experts
// each: the routed experts' outputs and the shared expert's, summed in order.
void moe_sum(float* out, const float* ye, const float* ys, int64_t D, int K, int64_t n, cudaStream_t s);
void add_rows(float* y, const float* x, int64_t n, int rows, cudaStream_t s);

}  // namespace ds4::cuda::fwd
