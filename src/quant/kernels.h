#pragma once
// Row dot-product kernels behind quant::matvec/matmul. For each weight type
// there is a scalar reference and, where written, SIMD versions of the same
// contract; tests compare them. Integer kernels take the activation already
// quantized to `act` (Q8_0: per-32 int8, Q8_K: per-256 int8 with sums of 16);
// float kernels take the float activation (act = F32).
#include <cstddef>
#include <cstdint>

#include "util/ggml_type.h"

namespace ds4::quant {

enum class Isa { Scalar = 0, Avx2 = 1, Avx512 = 2, Neon = 3 };
const char* isa_name(Isa isa);

// dot of one weight row of n values with one activation row (n % block == 0).
using DotFn = float (*)(int64_t n, const void* w, const void* act);

// dots of one weight row with nact activation rows, act_stride bytes apart:
// out[j] = dot(n, w, act + j * act_stride), bit for bit. The weight row is
// unpacked once for all of them (prompt prefill, experts serving several
// tokens), where dot unpacks it once per activation row.
using DotNFn = void (*)(int64_t n, const void* w, const void* act, size_t act_stride, int nact, float* out);

// dots of nw weight rows (w_stride bytes apart) with nact activation rows:
// out[r * nact + j] = dot(n, w + r * w_stride, act + j * act_stride), bit for
// bit, for nw <= 4. A tile of weight rows and activation rows, so each loaded
// activation block serves several weight rows as each weight block serves
// several activation rows (prefill's products); null where a type has none.
using DotNMFn = void (*)(int64_t n, const void* w, size_t w_stride, int nw, const void* act, size_t act_stride,
                         int nact, float* out);
constexpr int kDotNMRows = 4;  // most weight rows one dotnm call takes

// A kernel's own byte order for its quantized activation, applied in place to
// each quantized row of n values before the dots: lets a kernel read the
// activation in the order its unpacked weights come out, where reordering
// either side per weight row would cost shuffles. It may only move bytes
// within each activation block (matvec applies it block by block).
using ActOrderFn = void (*)(void* act, int64_t n);

struct DotKernel {
  GgmlType act;  // F32, Q8_0 or Q8_K
  DotFn dot;
  DotNFn dotn = nullptr;      // null: matmul calls dot per activation row
  ActOrderFn order = nullptr;  // null: act's own layout
  DotNMFn dotnm = nullptr;     // null: matmul calls dotn per weight row
};

// The kernel of `t` for `isa`, or null when there is none or this CPU lacks it.
const DotKernel* find_kernel(GgmlType t, Isa isa);
// The fastest kernel this CPU runs for `t` (null if the type has no kernel).
// DS4_QUANT_ISA=scalar|avx2|avx512 in the environment caps the choice.
const DotKernel* best_kernel(GgmlType t);
bool cpu_has(Isa isa);
// Caps best_kernel's choice from now on, as DS4_QUANT_ISA does at start-up
// (Avx512: no cap). For tests that compare the kernels of two ISAs in one
// process; not meant to change while matmuls run on other threads.
void set_isa_cap(Isa cap);

// Activation quantizers (n % block == 0), portable reference versions.
void quantize_row_q8_0(const float* x, void* dst, int64_t n);
void quantize_row_q8_k(const float* x, void* dst, int64_t n);

// SIMD activation quantizers: byte for byte the references above (the CUDA
// backend reproduces those bytes too). matvec quantizes the activation once per
// call; for a Flash expert (2048-4096 columns) the scalar versions cost several
// microseconds, a sizable share of a ~25 us matvec.
using ActQuantFn = void (*)(const float* x, void* dst, int64_t n);
// The quantizer for activation type act (Q8_0 or Q8_K) of `isa`, or null.
ActQuantFn find_act_quant(GgmlType act, Isa isa);
// The fastest one this CPU runs (the reference where none is written),
// capped by DS4_QUANT_ISA like best_kernel.
ActQuantFn best_act_quant(GgmlType act);

// x (n values) as kernel k takes it: quantized to k.act by the fastest
// quantizer and put in k's order (F32: copied). dst holds row_bytes(k.act, n),
// or 4 n bytes for F32.
void quantize_activation(const DotKernel& k, const float* x, void* dst, int64_t n);

// Per-ISA tables, filled by the kernel files (null entries = not written).
const DotKernel* scalar_kernel(GgmlType t);
const DotKernel* avx2_kernel(GgmlType t);
const DotKernel* avx512_kernel(GgmlType t);
const DotKernel* neon_kernel(GgmlType t);
ActQuantFn avx2_act_quant(GgmlType act);
ActQuantFn avx512_act_quant(GgmlType act);

}  // namespace ds4::quant
