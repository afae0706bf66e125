// ISA tables for architectures this build has no kernels for.
#include "quant/kernels.h"

namespace ds4::quant {
#if !defined(__x86_64__)
const DotKernel* avx2_kernel(GgmlType) { return nullptr; }
const DotKernel* avx512_kernel(GgmlType) { return nullptr; }
ActQuantFn avx2_act_quant(GgmlType) { return nullptr; }
ActQuantFn avx512_act_quant(GgmlType) { return nullptr; }
#endif
#if !defined(__aarch64__)
const DotKernel* neon_kernel(GgmlType) { return nullptr; }
#endif
}  // namespace ds4::quant
