#include "backend/cuda/cuda_fail.h"

#include "util/error.h"

namespace ds4::cuda {

void fail_unsupported(const char* what, GgmlType t) { fail("CUDA {}: type {} is not supported", what, ggml_type_name(t)); }

void fail_shape(const char* what, GgmlType t, int64_t n, int64_t block) {
  fail("CUDA {} {}: length {} is not a multiple of {}", what, ggml_type_name(t), n, block);
}

void fail_align(const char* what, GgmlType t, const void* p, int align) {
  fail("CUDA {} ({}): pointer {} is not {}-byte aligned", what, ggml_type_name(t), p, align);
}

void fail_limit(const char* what, int64_t n, int64_t max) { fail("CUDA {}: {} is more than the {} it handles", what, n, max); }

void fail_scratch(const char* what, size_t have, size_t need) {
  fail("CUDA {}: scratch of {} bytes, {} needed", what, have, need);
}

void fail_window(const char* what, int64_t lo, int64_t hi, int64_t n) {
  fail("CUDA {}: expert window [{}, {}) is not inside [0, {})", what, lo, hi, n);
}

void fail_rows_per_warp(int r) { fail("CUDA matvec: {} rows per warp (1, 2, 4, or -1 for a block per row)", r); }

}  // namespace ds4::cuda
