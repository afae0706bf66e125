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
// Output head: pre[i] = sigmoid(m[i] * scale[0] + base[i]) + eps.
void hc_head_pre(const float* m, const float* scale, const float* base, int hc, float eps, float* pre, cudaStream_t s);
// y[d] = sum_i pre[i] X[i*D + d].
void hc_collapse(const float* X, const float* pre, int hc, int64_t D, float* y, cudaStream_t s);
// X'_j = post_j out + sum_i comb[i][j] X_i, in place.
void hc_expand(float* X, const float* out, const float* post, const float* comb, int hc, int64_t D, cudaStream_t s);
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

// Compressor frontier write: kv_row = kv, score_row = gate + ape_slot (width cw).
void comp_store(float* kv_row, float* score_row, const float* kv, const float* gate, const float* ape_slot, int64_t cw,
                cudaStream_t s);
// Softmax pooling of a closed window into v[d] (overlap: rows [0, r) give
// their first half, rows [r, 2r) their second).
void comp_pool(const float* kv, const float* score, int64_t r, int64_t d, bool overlap, float* v, cudaStream_t s);

// score[c] = sum_h w[h] * max(q_h . k_c, 0) over n rows of d.
void indexer_scores(const float* rows, int64_t n, int64_t d, const float* q, const float* w, int heads, float* score,
                    cudaStream_t s);
// The k highest scores of n (lowest index wins ties), indices ascending, into
// sel[k]; flags: n ints of scratch.
void topk_select(const float* score, int64_t n, int64_t k, int* flags, int32_t* sel, cudaStream_t s);

// Sink attention of H heads of q over: the raw ring (window slots of dim, the
// n_raw positions p - n_raw + 1 .. p at slot j % window) then compressed rows,
// either the first n_comp rows or rows sel[0 .. n_comp) when sel is set.
void attend(const float* q, int H, int64_t dim, const float* raw, int64_t window, int64_t p, int64_t n_raw,
            const float* comp, int64_t n_comp, const int32_t* sel, const float* sinks, float* out, cudaStream_t s);

// MoE routing (model-spec §7): s_e = sqrt(softplus(logit_e)); hash_ids (K
// expert ids, device) or top-K of s + bias (lowest index wins ties); weights
// s / sum (when norm) * wscale. sel[K], w[K].
void route(const float* logits, int E, int K, const int32_t* hash_ids, const float* bias, bool norm, float wscale,
           int32_t* sel, float* w, cudaStream_t s);
// g = silu(min(g, c)) * clamp(u, -c, c) * (wk ? *wk : 1), n values.
void swiglu(float* g, const float* u, int64_t n, float clamp, const float* wk, cudaStream_t s);
// swiglu over `rows` rows of ff values, row r weighted by wts[r] (null: 1).
void swiglu_rows(float* g, const float* u, int64_t ff, int64_t rows, float clamp, const float* wts, cudaStream_t s);
// y += x_0 + x_1 + ... + x_{rows-1} (x_r = x + r * n), added in row order.
void add_rows(float* y, const float* x, int64_t n, int rows, cudaStream_t s);

}  // namespace ds4::cuda::fwd
