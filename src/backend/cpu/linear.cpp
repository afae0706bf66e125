#include "backend/cpu/linear.h"

#include <algorithm>
#include <vector>

#include "quant/quant.h"

#include "util/error.h"

namespace ds4::backend::cpu {

void dequantize_row(const model::Weight& w, int64_t r, float* out) {
  if (r < 0 || r >= w.rows()) fail("{}: row {} out of range (rows {})", w.name, r, w.rows());
  w.ops->dequantize_row(w.row(r), out, w.cols());
}

model::Weight row_slice(const model::Weight& w, int64_t row0, int64_t nrows) {
  model::Weight s = w;
  s.ne = {w.cols(), nrows};
  s.data = w.row(row0);
  return s;
}

void matmul(const model::Weight& w, const float* x, int64_t x_stride, int64_t n, float* y, int64_t y_stride,
            ThreadPool* pool) {
  const int64_t cols = w.cols(), rows = w.rows();
  if (n <= 0) return;
  if (x_stride == cols && y_stride == rows) {
    quant::matmul(w.type, w.data, rows, cols, x, n, y, pool);
    return;
  }
  // Strided operands (a group's slice of the heads, a column block of the
  // output): gather, multiply, scatter.
  thread_local std::vector<float> xb, yb;
  xb.resize(static_cast<size_t>(n * cols));
  yb.resize(static_cast<size_t>(n * rows));
  for (int64_t t = 0; t < n; ++t) std::copy(x + t * x_stride, x + t * x_stride + cols, xb.begin() + t * cols);
  quant::matmul(w.type, w.data, rows, cols, xb.data(), n, yb.data(), pool);
  for (int64_t t = 0; t < n; ++t) std::copy(yb.begin() + t * rows, yb.begin() + (t + 1) * rows, y + t * y_stride);
}

quant::MatvecJob matvec_job(const model::Weight& w, const float* x, float* y) {
  return {w.type, w.data, w.rows(), w.cols(), x, y};
}

}  // namespace ds4::backend::cpu
