#pragma once
// Quantized-weight kernels for decode: fused dequantize + matrix-vector product
// (y = W x, W row-major with `rows` rows of `cols` elements in a GGML type, each
// weight byte read once) and dequantize-to-f32. Plain C++ API: all pointers are
// device pointers from cudaMalloc; work is queued on `stream` and not waited for.
//
// Numerics: dequantize_device is bit-identical to quant::dequantize_row (same
// operation order, no fused multiply-adds). matvec accumulates in f32 with FMA;
// per-scale-group sums are factored (d * sum(q x) - m * sum(x)) so it differs
// from the exact dot by rounding only (bounds in tests/gpu/test_gpu_quant.cpp).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "util/ggml_type.h"

namespace ds4::cuda {

// Types with both kernels: F32, F16, BF16, Q8_0, Q2_K, Q4_K, IQ2_XXS.
bool quant_supported(GgmlType t);

// Uploads the lookup tables some kernels read (IQ2_XXS grid and signs) to the
// current device, once. Kernels call it themselves on first use; a caller that
// must not see a synchronous copy later (a forward pass on its own stream, a
// CUDA graph capture) calls it up front.
void prepare_tables();

// Requirements (a ds4::Error otherwise): cols a multiple of the type's block
// size; dW aligned to the type's natural alignment (2 bytes for Q8_0/IQ2_XXS,
// 4 for Q2_K and F32 rows, 16 for Q4_K; cudaMalloc'd memory always is) and dx
// to 16 bytes.
void matvec(GgmlType t, const void* dW, int64_t rows, int64_t cols, const float* dx, float* dy, cudaStream_t stream = nullptr);

// matvec of matrix number *d_index (read on the device) of `base`, matrices
// `stride_bytes` apart: an expert chosen by routing that ran on the GPU.
void matvec_indexed(GgmlType t, const void* base, int64_t stride_bytes, const int32_t* d_index, int64_t rows, int64_t cols,
                    const float* x, float* y, cudaStream_t stream = nullptr);

// n elements (a multiple of the block size) from src to f32 dst.
void dequantize_device(GgmlType t, const void* dsrc, float* ddst, int64_t n, cudaStream_t stream = nullptr);

// ---- integer path: activations quantized as the CPU quantizes them ----------
// The CPU's kernels (quant::matmul) multiply Q8_0 weights by Q8_0-quantized
// activations and K/IQ weights by Q8_K-quantized ones; the GPU does the same
// so both compute the same model. activation_type(w) is that choice (F32 for
// float weights); quantize_activation writes quant::quantize_row_q8_0/q8_k's
// integers and scales, bit for bit, in a GPU layout (int8 q[cols], float d per
// block, int32 sums per 16 for Q8_K) of activation_bytes(act, cols) bytes;
// matvec_q8 takes such an activation (dst 16-byte aligned). Integer sums are
// exact; only the order of the per-block float terms differs from the CPU.
GgmlType activation_type(GgmlType weight);
size_t activation_bytes(GgmlType act, int64_t cols);
void quantize_activation(GgmlType act, const float* x, int64_t cols, void* dst, cudaStream_t stream = nullptr);
// Weight types: Q8_0 (with a Q8_0 activation), Q2_K, Q4_K, IQ2_XXS (Q8_K).
void matvec_q8(GgmlType t, const void* dW, int64_t rows, int64_t cols, const void* act, float* dy,
               cudaStream_t stream = nullptr);
void matvec_q8_indexed(GgmlType t, const void* base, int64_t stride_bytes, const int32_t* d_index, int64_t rows,
                       int64_t cols, const void* act, float* dy, cudaStream_t stream = nullptr);
// nrows activations at once: row i is x + i * cols, written to
// dst + i * activation_bytes(act, cols).
void quantize_activation_rows(GgmlType act, const float* x, int64_t cols, int64_t nrows, void* dst,
                              cudaStream_t stream = nullptr);
// The same for rows x_stride floats apart (x_stride >= cols).
void quantize_activation_strided(GgmlType act, const float* x, int64_t cols, int64_t x_stride, int64_t nrows,
                                 void* dst, cudaStream_t stream = nullptr);
// fwd::rms_norm_rows(x, w, rows, n, eps, y) and quantize_activation_rows(Q8_0,
// y, n, rows, dst) in one launch, the same bits as the two (n a multiple of
// 32; y may be x).
void rms_norm_quantize_q8_0(const float* x, const float* w, int64_t rows, int64_t n, float eps, float* y, void* dst,
                            cudaStream_t stream = nullptr);
// quantize_activation_rows of SwiGLU(g, u) * wts[row] (wts null: 1), rows of
// ff values: the values swiglu_rows would leave in g, quantized in the same
// launch (g itself is left as it is).
void quantize_swiglu_rows(GgmlType act, const float* g, const float* u, int64_t ff, int64_t nrows, float clamp,
                          const float* wts, void* dst, cudaStream_t stream = nullptr);
// One weight matrix times nact activations (a batch's rows): activation i at
// act + i * act_stride bytes (a multiple of 16), its result at
// dy + i * y_stride. Each weight byte is read once per (up to 8) activations,
// and each result is bit for bit matvec_q8 of that activation alone.
void matvec_q8_rows(GgmlType t, const void* dW, int64_t rows, int64_t cols, const void* act, size_t act_stride,
                    int64_t nact, float* dy, int64_t y_stride, cudaStream_t stream = nullptr);
// Several weights of one type and column count times one activation, in one
// launch: target i's result is matvec_q8(t, w, rows, cols, act, y) of its own
// w, rows and y, bit for bit. For the small projections of a decode step that
// share an input (a layer's q_a, kv, compressor and indexer weights): alone,
// each is a launch too small to fill the GPU.
struct MatvecTarget {
  const void* w = nullptr;
  int64_t rows = 0;
  float* y = nullptr;
};
inline constexpr int kMatvecListMax = 8;
void matvec_q8_list(GgmlType t, const MatvecTarget* targets, int n, int64_t cols, const void* act,
                    cudaStream_t stream = nullptr);
// The float-weight form (F32, F16, BF16 weights; f32 input x): target i's
// result is matvec(t, w, rows, cols, x, y) bit for bit, where
// matvec_list_ok(t, rows, cols) says matvec takes its warp-per-rows form for
// that shape (the form the list shares). A decode step's compressor and
// indexer projections are such weights.
bool matvec_list_ok(GgmlType t, int64_t rows, int64_t cols);
void matvec_list(GgmlType t, const MatvecTarget* targets, int n, int64_t cols, const float* x,
                 cudaStream_t stream = nullptr);
// nmat products in one launch (MoE experts): product i takes matrix
// d_index[i] of base (matrices stride_bytes apart), the activation at
// act + i * act_stride bytes (act_stride 0: the same one for all, else a
// multiple of 16) and writes dy + i * y_stride.
void matvec_q8_batched(GgmlType t, const void* base, int64_t stride_bytes, const int32_t* d_index, int nmat,
                       int64_t rows, int64_t cols, const void* act, size_t act_stride, float* dy, int64_t y_stride,
                       cudaStream_t stream = nullptr);

// The routed experts of nrows rows at once, grouped by expert: sel holds K
// expert ids per row (device; slot j = row j / K, choice j % K). Each distinct
// expert is read once per (up to 8) slots that chose it and multiplied with
// each such slot's activation, at act + row * act_row_stride + choice *
// act_k_stride bytes (multiples of 16; act_k_stride 0: one activation per
// row); slot j's result goes to dy + j * y_stride. Each result is bit for bit
// matvec_q8 of that expert and activation. nrows * K <= 65535.
void matvec_q8_grouped(GgmlType t, const void* base, int64_t stride_bytes, const int32_t* d_sel, int64_t nrows, int K,
                       int64_t rows, int64_t cols, const void* act, size_t act_row_stride, size_t act_k_stride,
                       float* dy, int64_t y_stride, cudaStream_t stream = nullptr);

// ---- tensor-core products (mmq_kernels.cu): many activations at once --------
// What matvec_q8_rows computes (activation i at act + i * act_stride bytes,
// result at dy + i * y_stride), on int8 MMA tiles of 64 weight rows by up to
// 64 activations: for a prefill chunk or a wide batch. Same integers as the
// matvec; K/IQ blocks form one float term per 256 values where the matvec
// forms one per unit, so results agree to rounding (tests/gpu bound both by
// the same double-precision reference).
void matmul_q8(GgmlType t, const void* dW, int64_t rows, int64_t cols, const void* act, size_t act_stride,
               int64_t nact, float* dy, int64_t y_stride, cudaStream_t stream = nullptr);
// Float weights (F32, F16, BF16) times n f32 rows (row i at x + i * x_stride,
// its result at y + i * y_stride), each weight tile read once per 64 rows:
// f32 FMAs over k in ascending order, in column slices for weights of few
// rows (gemm_float.cu). scratch: device memory of at least
// matmul_float_scratch(rows, cols, n) bytes (0 for most shapes);
// matmul_float_scratch_bound(n) covers every shape.
size_t matmul_float_scratch(int64_t rows, int64_t cols, int64_t n);
size_t matmul_float_scratch_bound(int64_t n);
void matmul_float(GgmlType t, const void* dW, int64_t rows, int64_t cols, const float* x, int64_t x_stride, int64_t n,
                  float* dy, int64_t y_stride, float* scratch, size_t scratch_bytes, cudaStream_t stream = nullptr);
// The routed experts of nrows rows, as matvec_q8_grouped lays them out
// (slot j = row j / K, choice j % K), with the slots sorted by expert on the
// device first so that each expert's slots form MMA columns. scratch: device
// memory of matmul_q8_grouped_scratch(n_expert, nrows * K) bytes.
//
// window: the experts [lo, hi) this launch computes, base pointing at expert
// lo's matrix (a part of the experts held elsewhere, e.g. copied in from host
// memory a part at a time); slots that chose another expert are left as they
// are. The default, {0, -1}, is every expert. A slot's result does not depend
// on the window it is computed in.
struct ExpertWindow {
  int64_t lo = 0, hi = -1;
};
size_t matmul_q8_grouped_scratch(int64_t n_expert, int64_t nslots);
void matmul_q8_grouped(GgmlType t, const void* base, int64_t stride_bytes, int64_t n_expert, const int32_t* d_sel,
                       int64_t nrows, int K, int64_t rows, int64_t cols, const void* act, size_t act_row_stride,
                       size_t act_k_stride, float* dy, int64_t y_stride, void* scratch, size_t scratch_bytes,
                       cudaStream_t stream = nullptr, ExpertWindow window = {});

// The HC pre-mix of `rows` rows in one launch, for float mixer weights (F32,
// F16, BF16; hc_pre_fusable): for row r of X ([rows][hc * D]), u = X_r / rms(X_r)
// (no norm weight), mix_r = W u (W: [mix_rows][hc * D]), the Sinkhorn split of
// mix_r into pre/post/comb ([rows][hc], [rows][hc], [rows][hc][hc]) and
// y_r = sum_i pre_i X_r,i ([rows][D]). The norm's sum, the Sinkhorn split and
// the collapse are the separate kernels' operations (rms_norm_rows of fewer
// than 64 rows, hc_split_rows, hc_collapse); the dot is formed over column
// slices on many blocks and scaled by the norm once, so mix differs from
// matvec on the normed row by float rounding only. A row's result does not
// depend on the other rows. The blocks of a row hand over through
// counters[part_rows] (device memory, zero before the first launch; each
// launch leaves them at zero) and partial sums in part
// (hc_pre_scratch_bytes(hc, D, mix_rows, part_rows)); passes of more than
// part_rows rows run in groups. Needs hc * hc <= 32.
struct HcPreArgs {
  const float* X = nullptr;
  int hc = 0;
  int64_t D = 0;
  float rms_eps = 0;
  const float* scale = nullptr;  // [3]
  const float* base = nullptr;   // [mix_rows]
  float hc_eps = 0;
  int iters = 0;
  float* mix = nullptr;  // [rows][mix_rows]
  float* pre = nullptr;
  float* post = nullptr;
  float* comb = nullptr;
  float* y = nullptr;
  unsigned* counters = nullptr;  // [part_rows]
  double* part = nullptr;        // hc_pre_scratch_bytes(hc, D, mix_rows, part_rows)
  int64_t part_rows = 0;
};
int64_t hc_pre_scratch_bytes(int64_t hc, int64_t D, int64_t mix_rows, int64_t rows);
bool hc_pre_fusable(GgmlType t, int hc);
void hc_pre_fused(GgmlType t, const void* dW, int64_t mix_rows, int64_t rows, const HcPreArgs& a,
                  cudaStream_t stream = nullptr);

namespace detail {
void upload_q8_tables();  // q8_kernels.cu's part of prepare_tables()
inline constexpr int kBlockPerRow = -1;
// matvec with an explicit number of rows per warp (1, 2 or 4, or kBlockPerRow:
// a thread block per row), for the benchmark that chooses matvec's default.
void matvec_rows_per_warp(int rows_per_warp, GgmlType t, const void* dW, int64_t rows, int64_t cols, const float* dx,
                          float* dy, cudaStream_t stream);
}  // namespace detail

}  // namespace ds4::cuda
