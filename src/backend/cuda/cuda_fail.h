#pragma once
// Error messages of the CUDA kernels' host side, formatted in a .cpp file so
// that .cu files need not include fmt.
#include <cstddef>
#include <cstdint>

#include "util/ggml_type.h"

namespace ds4::cuda {
[[noreturn]] void fail_unsupported(const char* what, GgmlType t);
[[noreturn]] void fail_shape(const char* what, GgmlType t, int64_t n, int64_t block);
[[noreturn]] void fail_align(const char* what, GgmlType t, const void* p, int align);
[[noreturn]] void fail_rows_per_warp(int r);
[[noreturn]] void fail_limit(const char* what, int64_t n, int64_t max);
[[noreturn]] void fail_scratch(const char* what, size_t have, size_t need);
[[noreturn]] void fail_window(const char* what, int64_t lo, int64_t hi, int64_t n);
}  // namespace ds4::cuda
