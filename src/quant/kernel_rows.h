#pragma once
// dot and dotn entry points for a SIMD kernel written once as a template over
// the number of activation rows (rows<NA>(n, w, act, act_stride, out), NA =
// 1..4): dot is the 1-row instance, so dot and dotn agree bit for bit, and
// dotn takes the rows 4 at a time (more would spill the per-row accumulators).
// No target attribute here: these only call the kernels, which carry theirs.
#include <cstddef>
#include <cstdint>

#include "util/float16.h"
#include "util/ggml_type.h"

namespace ds4::quant {

// Value i of a float weight row (F32, F16 or BF16): the scalar tail of the
// SIMD float kernels, which every ISA's kernel sums the same way.
template <GgmlType T>
inline float float_weight(const void* w, int64_t i) {
  static_assert(T == GgmlType::F32 || T == GgmlType::F16 || T == GgmlType::BF16);
  if constexpr (T == GgmlType::F32) return static_cast<const float*>(w)[i];
  else if constexpr (T == GgmlType::F16) return f16_to_f32(static_cast<const uint16_t*>(w)[i]);
  else return bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
}

using RowsFn = void (*)(int64_t n, const void* w, const void* act, size_t act_stride, float* out);

template <RowsFn R1, RowsFn R2, RowsFn R3, RowsFn R4>
struct RowKernels {
  static float dot(int64_t n, const void* w, const void* a) {
    float r;
    R1(n, w, a, 0, &r);
    return r;
  }
  static void dotn(int64_t n, const void* w, const void* a, size_t stride, int nact, float* out) {
    const auto* act = static_cast<const uint8_t*>(a);
    for (; nact >= 4; nact -= 4, act += 4 * stride, out += 4) R4(n, w, act, stride, out);
    if (nact == 3) R3(n, w, act, stride, out);
    else if (nact == 2) R2(n, w, act, stride, out);
    else if (nact == 1) R1(n, w, act, stride, out);
  }
};

}  // namespace ds4::quant
