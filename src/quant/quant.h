#pragma once
// Type registry: one entry per GGML tensor type with its block geometry and the
// row kernels. "Any supported type for any tensor" is a lookup here; call sites
// never branch on the type themselves.
#include <cstdint>
#include <span>
#include <string_view>

#include "util/ggml_type.h"

namespace ds4 {
class ThreadPool;
}

namespace ds4::quant {

struct TypeOps {
  GgmlType type;
  int64_t block_size;
  size_t block_bytes;
  // n is a multiple of block_size.
  void (*dequantize_row)(const void* src, float* dst, int64_t n) = nullptr;
  // Optional (null when the type cannot be produced here). `imatrix` holds n
  // per-column importance weights or is null.
  void (*quantize_row)(const float* src, void* dst, int64_t n, const float* imatrix) = nullptr;
};

// The entry for `t`, or null when this build cannot dequantize it.
const TypeOps* find_ops(GgmlType t);
// The entry for `t`; throws ds4::Error "tensor 'NAME': type T is not supported".
const TypeOps& require_ops(GgmlType t, std::string_view tensor_name);

// Convenience wrappers over the registry; throw for unsupported types.
void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n);
void quantize_row(GgmlType t, const float* src, void* dst, int64_t n, const float* imatrix = nullptr);
size_t row_bytes(GgmlType t, int64_t n);

// y[r] = dot(row r of W, x) for r < rows. W is `rows` rows of `cols` values of
// type `wtype`, row r at byte r * row_bytes(wtype, cols); cols must be a
// multiple of the block size. Integer formats quantize x once (Q8_0 per 32 or
// Q8_K per 256) and use integer dots; float formats use x as is. With a pool,
// rows are split over its threads. Throws ds4::Error for a type without kernel.
void matvec(GgmlType wtype, const void* W, int64_t rows, int64_t cols, const float* x, float* y,
            ThreadPool* pool = nullptr);
// The same for n activation rows: X is n x cols, Y is n x rows (row-major), so
// Y[j * rows + r] = dot(row r of W, X row j). Each weight row is read once for
// all n activations (prefill).
void matmul(GgmlType wtype, const void* W, int64_t rows, int64_t cols, const float* X, int64_t n, float* Y,
            ThreadPool* pool = nullptr);

// One matvec of a batch: y[r] = dot(row r of W, x) for r < rows.
struct MatvecJob {
  GgmlType wtype;
  const void* W;
  int64_t rows, cols;
  const float* x;
  float* y;
};
// Every job's matvec in one pass over the pool: the rows of all jobs are split
// over its threads together, and jobs with the same x (and columns) share one
// quantized activation. Results equal one matvec call per job bit for bit. For
// decoding, where a layer's experts are many small matvecs: one pool call
// instead of one per matrix (each costs microseconds on many threads).
void matvec_batch(std::span<const MatvecJob> jobs, ThreadPool* pool = nullptr);

}  // namespace ds4::quant
