#include "backend/cpu/linear.h"

#include <vector>

#include "util/error.h"

namespace ds4::backend::cpu {
namespace {

float dot(const float* a, const float* b, int64_t n) {
  // Eight partial sums: vectorisable without -ffast-math, fixed order.
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= n; k += 8)
    for (int j = 0; j < 8; ++j) s[j] += a[k + j] * b[k + j];
  float r = ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7]));
  for (; k < n; ++k) r += a[k] * b[k];
  return r;
}

}  // namespace

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

void matmul(const model::Weight& w, const float* x, int64_t x_stride, int64_t n, float* y, int64_t y_stride) {
  const int64_t cols = w.cols(), rows = w.rows();
  thread_local std::vector<float> buf;
  if (static_cast<int64_t>(buf.size()) < cols) buf.resize(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr;
    if (w.type == GgmlType::F32) {
      wr = reinterpret_cast<const float*>(w.row(r));
    } else {
      w.ops->dequantize_row(w.row(r), buf.data(), cols);
      wr = buf.data();
    }
    for (int64_t t = 0; t < n; ++t) y[t * y_stride + r] = dot(wr, x + t * x_stride, cols);
  }
}

}  // namespace ds4::backend::cpu
