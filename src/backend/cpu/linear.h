#pragma once
// The one place the CPU backend multiplies by a weight of any registry type.
// Switching to quant::matvec/matmul kernels is a change inside linear.cpp.
#include <cstdint>

#include "model/weights.h"
#include "quant/quant.h"

namespace ds4 {
class ThreadPool;
}

namespace ds4::backend::cpu {

// y[t*y_stride + r] = sum_c W[r][c] * x[t*x_stride + c], for t < n and every row
// r of w (w.rows() rows of w.cols() columns). Each (t, r) result is computed the
// same way whatever n is, so prefill and decode agree bit for bit.
// Runs on `pool` when given. Integer weight types quantize x per block (as the
// quant kernels do); float types use x as is.
void matmul(const model::Weight& w, const float* x, int64_t x_stride, int64_t n, float* y, int64_t y_stride,
            ThreadPool* pool = nullptr);

// y = w x as one job of a quant::matvec_batch (several y = W x in one pass over
// the pool, each bit for bit what matmul gives for that weight alone).
quant::MatvecJob matvec_job(const model::Weight& w, const float* x, float* y);

// Rows [row0, row0 + nrows) of w as a weight of their own.
model::Weight row_slice(const model::Weight& w, int64_t row0, int64_t nrows);

// One row of w (e.g. an embedding lookup) as float.
void dequantize_row(const model::Weight& w, int64_t r, float* out);

}  // namespace ds4::backend::cpu
