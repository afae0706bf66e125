// Integer matvec for the quantized weight types, with the activation quantized
// first, the way the CPU kernels do it (quant::quantize_row_q8_0 / q8_k).
//
// Why: the CPU reference (quant::matmul) rounds every activation vector to
// 8-bit integers before it meets a Q8_0 / K-quant / IQ weight. That rounding is
// part of what the model computes on the CPU, and it is larger than any
// summation-order difference, so a GPU that multiplied by f32 activations
// would disagree with the CPU by the activation rounding itself. Here the GPU
// quantizes to the same integers and scales (bit for bit), takes the same
// integer dot per block with __dp4a, and differs from the CPU only in the
// order in which the per-block float terms are added.
//
// Activation layout on the device (ActLayout): int8 q[cols], then float d per
// block (Q8_0: the f16-rounded scale the CPU stores, as float), then, for Q8_K,
// int32 sums of each 16 values (the CPU's bsums).
//
// Matvec layout: one warp per R rows; a row is split into "units" (a whole
// Q8_0 block, a quarter of a Q2_K block, an eighth of a Q4_K / IQ2_XXS block);
// lane l takes units l, l+32, ..., so a warp reads one contiguous stretch of
// the row per step. Each unit's integer sums are exact; the unit's float term
// is formed as the CPU forms a block's (scale products first, no FMA), and the
// lane adds its terms in order, then the warp reduces.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_fail.h"
#include "backend/cuda/cuda_quant.h"
#include "backend/cuda/kernel_common.cuh"
#include "backend/cuda/launch.cuh"
#include "backend/cuda/row_math.cuh"
#include "quant/iq_tables.h"
#include "quant/kernels.h"

namespace ds4::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kUnroll = 2;

using kc::aligned;
using kc::f16f;
using kc::ld_u128;
using kc::ld_u16;
using kc::ld_u32;

size_t align16(size_t n) { return (n + 15) / 16 * 16; }

// Where the parts of a quantized activation live inside its buffer.
struct Act {
  const int8_t* q;
  const float* d;
  const int32_t* bsums;
};

Act act_view(const void* buf, int64_t cols, int block) {
  const auto* b = static_cast<const uint8_t*>(buf);
  const size_t nb = static_cast<size_t>(cols / block);
  return {reinterpret_cast<const int8_t*>(b), reinterpret_cast<const float*>(b + align16(static_cast<size_t>(cols))),
          reinterpret_cast<const int32_t*>(b + align16(static_cast<size_t>(cols)) + align16(4 * nb))};
}

// ---- activation quantizers ------------------------------------------------------

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// quant::quantize_row_q8_0: d = amax / 127 (stored as f16), q = round-half-away(x / d)
// computed as x * (1 / d) with the unrounded d. One warp per block of 32.
// Row blockIdx.y of a batch: x + row * cols, output at dst + row * dst_stride.
// With sw.u set, the input value is SwiGLU(x, u) of the row (quantize_swiglu_rows).
struct SwiIn {
  const float* u = nullptr;  // [rows][x_stride], null: x as it is
  const float* wts = nullptr;  // per row, null: 1
  float clamp = 0;
};
__device__ __forceinline__ float act_in(const float* x, const SwiIn& sw, int64_t row_off, int64_t i) {
  return sw.u ? rm::swiglu_value(x[i], sw.u[row_off + i], sw.clamp, sw.wts ? sw.wts[blockIdx.y] : 1.0f) : x[i];
}

// Lane `lane` of a warp holding value v of Q8_0 block b: its quant into q[k]
// and (lane 0) the block's scale into d[b].
__device__ __forceinline__ void store_q8_0(float v, int lane, int64_t b, int64_t k, int8_t* q, float* d) {
  const float amax = warp_max(fabsf(v));
  const float dd = __fdiv_rn(amax, 127.0f);
  const float id = dd != 0.0f ? __fdiv_rn(1.0f, dd) : 0.0f;
  q[k] = static_cast<int8_t>(static_cast<int>(roundf(__fmul_rn(v, id))));
  if (lane == 0) d[b] = __half2float(__float2half_rn(dd));
}

__global__ void quantize_q8_0_kernel(const float* __restrict__ x, int64_t cols, int64_t x_stride,
                                     uint8_t* __restrict__ dst, size_t dst_stride, size_t d_offset, SwiIn sw) {
  pdl_enter();
  const int64_t nblocks = cols / 32;
  x += blockIdx.y * x_stride;
  auto* q = reinterpret_cast<int8_t*>(dst + blockIdx.y * dst_stride);
  auto* d = reinterpret_cast<float*>(dst + blockIdx.y * dst_stride + d_offset);
  const int64_t b = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (b >= nblocks) return;
  const int lane = threadIdx.x & 31;
  store_q8_0(act_in(x, sw, blockIdx.y * x_stride, b * 32 + lane), lane, b, b * 32 + lane, q, d);
}

// quant::quantize_row_q8_k: iscale = 127 / amax, q = clamp(round-half-even(iscale * x),
// -127, 127), d = 1 / iscale, bsums of each 16. One thread block of 256 per block.
// rms_norm_rows of row blockIdx.x (k_rms_norm's width, sum and expression)
// and the Q8_0 activation of the normed row (store_q8_0, as
// quantize_q8_0_kernel, one warp per block of 32) in one launch. The norm reads the
// whole row before its block sum's barrier, so y may be x.
__global__ void norm_q8_0_kernel(const float* x, const float* w, int64_t n, float eps, float* y,
                                 uint8_t* __restrict__ dst, size_t dst_stride, size_t d_offset) {
  pdl_enter();
  const float* xr = x + blockIdx.x * n;
  float* yr = y + blockIdx.x * n;
  const float inv = rm::rms_inv(xr, n, eps);
  auto* q = reinterpret_cast<int8_t*>(dst + blockIdx.x * dst_stride);
  auto* d = reinterpret_cast<float*>(dst + blockIdx.x * dst_stride + d_offset);
  const int lane = static_cast<int>(threadIdx.x & 31);
  const int64_t warps = blockDim.x >> 5;
  for (int64_t b = threadIdx.x >> 5; b < n / 32; b += warps) {
    const int64_t k = b * 32 + lane;
    const float v = rm::normed(xr, w, k, inv);
    yr[k] = v;
    store_q8_0(v, lane, b, k, q, d);
  }
}

__global__ void __launch_bounds__(256) quantize_q8_k_kernel(const float* __restrict__ x, int64_t cols,
                                                            int64_t x_stride, uint8_t* __restrict__ dst,
                                                            size_t dst_stride, size_t d_offset, size_t s_offset,
                                                            SwiIn sw) {
  pdl_enter();
  __shared__ float wmax[8];
  x += blockIdx.y * x_stride;
  auto* q = reinterpret_cast<int8_t*>(dst + blockIdx.y * dst_stride);
  auto* d = reinterpret_cast<float*>(dst + blockIdx.y * dst_stride + d_offset);
  auto* bsums = reinterpret_cast<int32_t*>(dst + blockIdx.y * dst_stride + s_offset);
  const int64_t b = blockIdx.x;
  const int t = threadIdx.x, lane = t & 31;
  const float v = act_in(x, sw, blockIdx.y * x_stride, b * 256 + t);
  float m = warp_max(fabsf(v));
  if (lane == 0) wmax[t >> 5] = m;
  __syncthreads();
  m = wmax[0];
#pragma unroll
  for (int i = 1; i < 8; ++i) m = fmaxf(m, wmax[i]);
  int qi = 0;
  float iscale = 0.0f;
  if (m != 0.0f) {
    iscale = __fdiv_rn(127.0f, m);
    qi = min(127, max(-127, __float2int_rn(__fmul_rn(iscale, v))));
  }
  q[b * 256 + t] = static_cast<int8_t>(qi);
  int s = qi;
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);  // within each 16 lanes
  if ((t & 15) == 0) bsums[b * 16 + (t >> 4)] = s;
  if (t == 0) d[b] = m != 0.0f ? __fdiv_rn(1.0f, iscale) : 0.0f;
}

// ---- weight types ---------------------------------------------------------------
// Each: QK values and BYTES bytes per block, PARTS units per block, AQK the
// activation's block (32 or 256), ALIGN the weight pointer alignment assumed.
//   Raw load(blk, p): the unit's weight bytes
//   float dot(ctx, raw, p, act, b): the unit's term (b = weight block index)

struct NoCtx {};

// Q8_0 (34 bytes / 32 values): blocks are only 2-byte aligned, so the unit reads
// the 9 aligned words that cover it and shifts the quants into place.
struct QQ8_0 {
  static constexpr int QK = 32, BYTES = 34, PARTS = 1, AQK = 32, ALIGN = 2;
  using Ctx = NoCtx;
  __device__ static Ctx init() { return {}; }
  struct Raw {
    uint32_t d, q[8];
  };
  __device__ static Raw load(const uint8_t* blk, int) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(blk);
    const auto* w = reinterpret_cast<const uint8_t*>(a & ~uintptr_t{3});
    const bool odd = (a & 3) != 0;  // block starts at byte 2 of a word
    uint32_t v[9];
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = ld_u32(w + 4 * k);
    // The last word only as far as the block goes: never past a buffer's end.
    v[8] = ld_u16(w + 32) | (odd ? ld_u16(w + 34) << 16 : 0u);
    Raw r;
    r.d = odd ? v[0] >> 16 : v[0] & 0xffffu;
#pragma unroll
    for (int k = 0; k < 8; ++k) r.q[k] = odd ? v[k + 1] : __funnelshift_r(v[k], v[k + 1], 16);
    return r;
  }
  __device__ static float dot(Ctx, const Raw& w, int, const Act& a, int64_t b) {
    const uint4 x0 = ld_u128(a.q + b * 32), x1 = ld_u128(a.q + b * 32 + 16);
    int s = __dp4a(static_cast<int>(w.q[0]), static_cast<int>(x0.x), 0);
    s = __dp4a(static_cast<int>(w.q[1]), static_cast<int>(x0.y), s);
    s = __dp4a(static_cast<int>(w.q[2]), static_cast<int>(x0.z), s);
    s = __dp4a(static_cast<int>(w.q[3]), static_cast<int>(x0.w), s);
    s = __dp4a(static_cast<int>(w.q[4]), static_cast<int>(x1.x), s);
    s = __dp4a(static_cast<int>(w.q[5]), static_cast<int>(x1.y), s);
    s = __dp4a(static_cast<int>(w.q[6]), static_cast<int>(x1.z), s);
    s = __dp4a(static_cast<int>(w.q[7]), static_cast<int>(x1.w), s);
    // CPU: f16(w.d) * f16(a.d) * float(sum), left to right.
    return __fmul_rn(__fmul_rn(f16f(w.d), __ldg(a.d + b)), static_cast<float>(s));
  }
};

// Q2_K (84 bytes / 256): unit p = 64 values, half h = p%2 of each 32-byte qs
// group n = p/2: bytes qs[32n + 16h .. +16], all four 2-bit planes j, i.e. the
// four 16-value scale groups 8n + 2j + h, whose sums bsums gives directly.
struct QQ2_K {
  static constexpr int QK = 256, BYTES = 84, PARTS = 4, AQK = 256, ALIGN = 4;
  using Ctx = NoCtx;
  __device__ static Ctx init() { return {}; }
  struct Raw {
    uint32_t q[4], sc_lo, sc_hi, dd;
  };
  __device__ static Raw load(const uint8_t* blk, int p) {
    const int n = p >> 1, h = p & 1;
    const uint8_t* qs = blk + 16 + 32 * n + 16 * h;
    return {{ld_u32(qs), ld_u32(qs + 4), ld_u32(qs + 8), ld_u32(qs + 12)}, ld_u32(blk + 8 * n), ld_u32(blk + 8 * n + 4),
            ld_u32(blk + 80)};
  }
  __device__ static float dot(Ctx, const Raw& w, int p, const Act& a, int64_t b) {
    const int n = p >> 1, h = p & 1;
    const int8_t* aq = a.q + b * 256 + 128 * n + 16 * h;
    const int32_t* bs = a.bsums + b * 16 + 8 * n + h;
    int isum = 0, summs = 0;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint4 x = ld_u128(aq + 32 * j);
      const int sh = 2 * j;
      int s = __dp4a(static_cast<int>((w.q[0] >> sh) & 0x03030303u), static_cast<int>(x.x), 0);
      s = __dp4a(static_cast<int>((w.q[1] >> sh) & 0x03030303u), static_cast<int>(x.y), s);
      s = __dp4a(static_cast<int>((w.q[2] >> sh) & 0x03030303u), static_cast<int>(x.z), s);
      s = __dp4a(static_cast<int>((w.q[3] >> sh) & 0x03030303u), static_cast<int>(x.w), s);
      // Scale byte 8n + 2j + h: word sc_lo holds j = 0, 1; sc_hi j = 2, 3.
      const uint32_t sc = (((j < 2) ? w.sc_lo : w.sc_hi) >> (8 * (2 * (j & 1) + h))) & 0xffu;
      isum += static_cast<int>(sc & 15u) * s;
      summs += static_cast<int>(sc >> 4) * __ldg(bs + 2 * j);
    }
    const float ad = __ldg(a.d + b);
    // CPU: y.d * f16(d) * isum - y.d * f16(dmin) * summs.
    return __fsub_rn(__fmul_rn(__fmul_rn(ad, f16f(w.dd & 0xffffu)), static_cast<float>(isum)),
                     __fmul_rn(__fmul_rn(ad, f16f(w.dd >> 16)), static_cast<float>(summs)));
  }
};

// Q4_K (144 bytes / 256): unit p = qs[16p .. 16p+16] (one 16-byte load): low
// nibbles are values 64g + 16hf + i with scale pair 2g, high nibbles 32 further
// on with pair 2g+1 (g = p/2, hf = p%2).
struct QQ4_K {
  static constexpr int QK = 256, BYTES = 144, PARTS = 8, AQK = 256, ALIGN = 16;
  using Ctx = NoCtx;
  __device__ static Ctx init() { return {}; }
  struct Raw {
    uint32_t dd, s0, s1, s2;
    uint4 q;
  };
  __device__ static Raw load(const uint8_t* blk, int p) {
    const uint4 head = ld_u128(blk);
    return {head.x, head.y, head.z, head.w, ld_u128(blk + 16 + 16 * p)};
  }
  // ggml's get_scale_min_k4 for pair j.
  __device__ static void scale_min(const Raw& r, int j, int& sc, int& m) {
    const int sh = 8 * (j & 3);
    const uint32_t a = (r.s0 >> sh) & 0xffu, b = (r.s1 >> sh) & 0xffu;
    if (j < 4) {
      sc = static_cast<int>(a & 63u);
      m = static_cast<int>(b & 63u);
    } else {
      const uint32_t c = (r.s2 >> sh) & 0xffu;
      sc = static_cast<int>((c & 15u) | ((a >> 6) << 4));
      m = static_cast<int>((c >> 4) | ((b >> 6) << 4));
    }
  }
  __device__ static float dot(Ctx, const Raw& w, int p, const Act& a, int64_t b) {
    const int g = p >> 1, hf = p & 1;
    const int8_t* aq = a.q + b * 256 + 64 * g + 16 * hf;
    const uint4 xl = ld_u128(aq), xh = ld_u128(aq + 32);
    const uint32_t q[4] = {w.q.x, w.q.y, w.q.z, w.q.w};
    const int xlo[4] = {static_cast<int>(xl.x), static_cast<int>(xl.y), static_cast<int>(xl.z), static_cast<int>(xl.w)};
    const int xhi[4] = {static_cast<int>(xh.x), static_cast<int>(xh.y), static_cast<int>(xh.z), static_cast<int>(xh.w)};
    int slo = 0, shi = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      slo = __dp4a(static_cast<int>(q[i] & 0x0f0f0f0fu), xlo[i], slo);
      shi = __dp4a(static_cast<int>((q[i] >> 4) & 0x0f0f0f0fu), xhi[i], shi);
    }
    int sc0, m0, sc1, m1;
    scale_min(w, 2 * g, sc0, m0);
    scale_min(w, 2 * g + 1, sc1, m1);
    const int32_t* bs = a.bsums + b * 16 + 4 * g + hf;
    const int isum = sc0 * slo + sc1 * shi;
    const int summ = m0 * __ldg(bs) + m1 * __ldg(bs + 2);
    const float ad = __ldg(a.d + b);
    return __fsub_rn(__fmul_rn(__fmul_rn(ad, f16f(w.dd & 0xffffu)), static_cast<float>(isum)),
                     __fmul_rn(__fmul_rn(ad, f16f(w.dd >> 16)), static_cast<float>(summ)));
  }
};

// IQ2_XXS (66 bytes / 256): unit p = values 32p..32p+32: four grid indices
// (aux0) and four 7-bit sign codes plus a 4-bit scale (aux1). Grid entries come
// from shared memory; a code's eight signs are the code plus its parity bit
// (ksigns_iq2xs, checked at upload), spread to one bit per byte by a multiply,
// so the unit reads four table entries instead of eight (the random table
// reads, not the weight bytes, bounded the decode matvec). A grid byte g whose
// sign bit s is set becomes -g as (g ^ 0xff) + 1, which never carries across
// bytes since grid bytes are at most 0x2b.
__device__ uint64_t g_iq2xxs_grid_q[256];

struct QIQ2_XXS {
  static constexpr int QK = 256, BYTES = 66, PARTS = 8, AQK = 256, ALIGN = 2;
  struct Ctx {
    const uint64_t* grid;
  };
  __device__ static Ctx init() {
    __shared__ uint64_t grid[256];
    for (int i = threadIdx.x; i < 256; i += blockDim.x) grid[i] = g_iq2xxs_grid_q[i];
    __syncthreads();
    return {grid};
  }
  struct Raw {
    uint32_t d, aux0, aux1;
  };
  __device__ static Raw load(const uint8_t* blk, int p) {
    const uint8_t* q = blk + 2 + 8 * p;
    return {ld_u16(blk), ld_u16(q) | (ld_u16(q + 2) << 16), ld_u16(q + 4) | (ld_u16(q + 6) << 16)};
  }
  // Bits 0-3 of s as bytes 0x00 / 0x01 (the shifted copies do not overlap).
  __device__ static uint32_t sign_bytes(uint32_t s4) { return (s4 * 0x00204081u) & 0x01010101u; }
  __device__ static int signed_word(uint32_t g, uint32_t ones) { return static_cast<int>((g ^ (ones * 0xffu)) + ones); }
  __device__ static float dot(Ctx c, const Raw& w, int p, const Act& a, int64_t b) {
    const int8_t* aq = a.q + b * 256 + 32 * p;
    const uint4 x0 = ld_u128(aq), x1 = ld_u128(aq + 16);
    const int xv[8] = {static_cast<int>(x0.x), static_cast<int>(x0.y), static_cast<int>(x0.z), static_cast<int>(x0.w),
                       static_cast<int>(x1.x), static_cast<int>(x1.y), static_cast<int>(x1.z), static_cast<int>(x1.w)};
    int s = 0;
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const uint64_t g = c.grid[(w.aux0 >> (8 * l)) & 0xffu];
      const uint32_t code = (w.aux1 >> (7 * l)) & 127u;
      const uint32_t signs = code | ((__popc(code) & 1u) << 7);
      s = __dp4a(signed_word(static_cast<uint32_t>(g), sign_bytes(signs & 15u)), xv[2 * l], s);
      s = __dp4a(signed_word(static_cast<uint32_t>(g >> 32), sign_bytes(signs >> 4)), xv[2 * l + 1], s);
    }
    const int bsum = s * static_cast<int>(2 * (w.aux1 >> 28) + 1);
    // CPU: f16(d) * y.d * 0.125 * float(bsum), left to right.
    return __fmul_rn(__fmul_rn(__fmul_rn(f16f(w.d), __ldg(a.d + b)), 0.125f), static_cast<float>(bsum));
  }
};

// ---- kernel ---------------------------------------------------------------------

template <class T, int R>
__global__ void __launch_bounds__(kThreads) mvq_kernel(const uint8_t* __restrict__ w, int64_t row_bytes, int64_t rows,
                                                       int64_t nblocks, Act act, size_t act_stride,
                                                       float* __restrict__ y, int64_t y_stride,
                                                       const int32_t* __restrict__ index, int64_t index_stride) {
  if (!index) kc::prefetch_warp_rows<R, kThreads>(w, row_bytes, rows);
  const typename T::Ctx ctx = T::init();  // before any return: it may __syncthreads
  pdl_enter();
  // Batch entry blockIdx.y: its matrix (chosen on the device, e.g. an expert
  // picked by routing), its activation and its output.
  if (index) w += static_cast<int64_t>(__ldg(index + blockIdx.y)) * index_stride;
  if (act_stride) {
    const size_t off = blockIdx.y * act_stride;
    act.q = reinterpret_cast<const int8_t*>(reinterpret_cast<const uint8_t*>(act.q) + off);
    act.d = reinterpret_cast<const float*>(reinterpret_cast<const uint8_t*>(act.d) + off);
    act.bsums = reinterpret_cast<const int32_t*>(reinterpret_cast<const uint8_t*>(act.bsums) + off);
  }
  y += blockIdx.y * y_stride;
  // Q8_0 weights meet Q8_0 activations block for block; K/IQ weights meet
  // Q8_K blocks of the same 256 values.
  kc::warp_rows<T, R, kThreads, kUnroll>(w, row_bytes, rows, nblocks * T::PARTS, y,
                                         [&](const typename T::Raw(&raw)[R], int64_t b, int p, float(&acc)[R]) {
#pragma unroll
                                           for (int r = 0; r < R; ++r)
                                             acc[r] = __fadd_rn(acc[r], T::dot(ctx, raw[r], p, act, b));
                                         });
}

// N activations against the same R weight rows per warp: each weight byte is
// read once for all N (a batch's rows: decode steps of several sequences, a
// prefill chunk). acc[r][n] takes the same units in the same order as
// mvq_kernel's acc[r], and the same warp reduction, so each activation's result
// is bit for bit what a matvec_q8 of it alone gives. Activation n < nact goes
// to yp[n]; the others are not written.
template <class T, int R, int N>
__device__ __forceinline__ void mvq_rows_body(const typename T::Ctx& ctx, const uint8_t* __restrict__ w,
                                              int64_t row_bytes, int64_t rows, int64_t nunits, const Act (&a)[N],
                                              int nact, float* const (&yp)[N]) {
  const int lane = threadIdx.x & 31;
  const int64_t row0 = ((static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x) >> 5) * R;
  if (row0 >= rows) return;
  const uint8_t* wr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) wr[r] = w + (row0 + r < rows ? row0 + r : rows - 1) * row_bytes;
  float acc[R][N];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int n = 0; n < N; ++n) acc[r][n] = 0.0f;
  for (int64_t u0 = lane; u0 < nunits; u0 += 32 * kUnroll) {
    typename T::Raw raw[kUnroll][R];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t u = u0 + 32 * k;
      if (u < nunits) {
#pragma unroll
        for (int r = 0; r < R; ++r) raw[k][r] = T::load(wr[r] + u / T::PARTS * T::BYTES, static_cast<int>(u % T::PARTS));
      }
    }
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t u = u0 + 32 * k;
      if (u < nunits) {
        const int64_t b = u / T::PARTS;
        const int p = static_cast<int>(u % T::PARTS);
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int n = 0; n < N; ++n) acc[r][n] = __fadd_rn(acc[r][n], T::dot(ctx, raw[k][r], p, a[n], b));
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int n = 0; n < N; ++n) {
      const float v = kc::warp_sum(acc[r][n]);
      if (lane == 0 && row0 + r < rows && n < nact) yp[n][row0 + r] = v;
    }
}

__device__ __forceinline__ Act act_at(Act act, size_t off) {
  act.q = reinterpret_cast<const int8_t*>(reinterpret_cast<const uint8_t*>(act.q) + off);
  act.d = reinterpret_cast<const float*>(reinterpret_cast<const uint8_t*>(act.d) + off);
  act.bsums = reinterpret_cast<const int32_t*>(reinterpret_cast<const uint8_t*>(act.bsums) + off);
  return act;
}

// matvec_q8_rows: activation n at act + n * act_stride, result at y + n * y_stride.
template <class T, int R, int N>
__global__ void __launch_bounds__(kThreads) mvq_multi_kernel(const uint8_t* __restrict__ w, int64_t row_bytes,
                                                             int64_t rows, int64_t nblocks, Act act, size_t act_stride,
                                                             int nact, float* __restrict__ y, int64_t y_stride) {
  kc::prefetch_warp_rows<R, kThreads>(w, row_bytes, rows);
  // The lookup tables are constant: loaded while the predecessor finishes.
  const typename T::Ctx ctx = T::init();  // before any return: it may __syncthreads
  pdl_enter();
  Act a[N];
  float* yp[N];
#pragma unroll
  for (int n = 0; n < N; ++n) {
    // Activations past nact repeat the last one; their sums are dropped.
    a[n] = act_at(act, static_cast<size_t>(n < nact ? n : nact - 1) * act_stride);
    yp[n] = y + n * y_stride;
  }
  mvq_rows_body<T, R, N>(ctx, w, row_bytes, rows, nblocks * T::PARTS, a, nact, yp);
}

// matvec_q8_grouped: slot j (blockIdx.y) is choice k = j % K of row i = j / K,
// naming expert sel[j]. The first slot to name an expert multiplies it with
// the activations of every slot that names it, in chunks of up to NMAX, so
// each chosen expert is read once per chunk; later slots naming the same
// expert return at once. Slot j's activation is at act + i * act_row_stride +
// k * act_k_stride, its result at y + j * y_stride.
//
// A chunk of c activations runs the body instantiated for the smallest of
// 1, 2, 4, 8 that holds c: the body's work grows with its N (it forms every
// activation's dot), so a decode step, where each expert has one slot, must
// not pay for eight. The host picks NMAX from the number of rows (an expert
// has at most one slot per row unless a row names it twice, and the chunk
// loop covers that case too), which also keeps the single-row kernel's
// register count that of the N = 1 body. Each activation's sum takes the same
// units in the same order whatever N is, so results do not depend on it.
template <class T, int N, int R>
__device__ __forceinline__ void grouped_chunk(const typename T::Ctx& ctx, const uint8_t* w, const int32_t* sel, int e,
                                              int& s0, int nslots, int K, int64_t row_bytes, int64_t rows,
                                              int64_t nunits, const Act& act, size_t act_row_stride,
                                              size_t act_k_stride, float* y, int64_t y_stride) {
  Act a[N];
  float* yp[N];
  int cnt = 0, last = s0;
  for (; s0 < nslots && cnt < N; ++s0) {
    if (__ldg(sel + s0) != e) continue;
    last = s0;
    a[cnt] = act_at(act, static_cast<size_t>(s0 / K) * act_row_stride + static_cast<size_t>(s0 % K) * act_k_stride);
    yp[cnt] = y + static_cast<int64_t>(s0) * y_stride;
    ++cnt;
  }
  for (int c = cnt; c < N; ++c) {
    a[c] = a[0];
    yp[c] = y + static_cast<int64_t>(last) * y_stride;
  }
  mvq_rows_body<T, R, N>(ctx, w, row_bytes, rows, nunits, a, cnt, yp);
}

template <class T, int NMAX>
__global__ void __launch_bounds__(kThreads) mvq_grouped_kernel(const uint8_t* __restrict__ base, int64_t mat_stride,
                                                               const int32_t* __restrict__ sel, int nslots, int K,
                                                               int64_t row_bytes, int64_t rows, int64_t nblocks, Act act,
                                                               size_t act_row_stride, size_t act_k_stride,
                                                               float* __restrict__ y, int64_t y_stride) {
  // The lookup tables are constant: loaded while the predecessor finishes.
  const typename T::Ctx ctx = T::init();  // before any return: it may __syncthreads
  pdl_enter();
  const int j = static_cast<int>(blockIdx.y);
  const int32_t e = __ldg(sel + j);
  for (int i = 0; i < j; ++i)
    if (__ldg(sel + i) == e) return;  // an earlier slot does this expert
  int left = 0;
  for (int i = j; i < nslots; ++i) left += __ldg(sel + i) == e;
  const uint8_t* w = base + static_cast<int64_t>(e) * mat_stride;
  const int64_t nunits = nblocks * T::PARTS;
  // The single-row kernel gives a warp two weight rows, as matvec_q8 does on
  // tall matrices: twice the loads in flight per lane for the short rows of
  // an expert's down projection (its grid has half the warps).
  constexpr int R = NMAX == 1 ? 2 : 1;
  for (int s0 = j; left > 0;) {
    const int c = left < NMAX ? left : NMAX;
    if (NMAX == 1 || c == 1)
      grouped_chunk<T, 1, R>(ctx, w, sel, e, s0, nslots, K, row_bytes, rows, nunits, act, act_row_stride, act_k_stride, y,
                          y_stride);
    else if (NMAX == 2 || c == 2)
      grouped_chunk<T, (NMAX < 2 ? 1 : 2), R>(ctx, w, sel, e, s0, nslots, K, row_bytes, rows, nunits, act, act_row_stride,
                                         act_k_stride, y, y_stride);
    else if (NMAX == 4 || c <= 4)
      grouped_chunk<T, (NMAX < 4 ? 1 : 4), R>(ctx, w, sel, e, s0, nslots, K, row_bytes, rows, nunits, act, act_row_stride,
                                         act_k_stride, y, y_stride);
    else
      grouped_chunk<T, NMAX, R>(ctx, w, sel, e, s0, nslots, K, row_bytes, rows, nunits, act, act_row_stride, act_k_stride,
                             y, y_stride);
    left -= c;
  }
}

// matvec_q8_list: matrix blockIdx.y of the list, one weight row per warp;
// blocks past a shorter matrix's rows return at once.
struct MatList {
  const uint8_t* w[kMatvecListMax];
  int64_t rows[kMatvecListMax];
  float* y[kMatvecListMax];
};

template <class T>
__global__ void __launch_bounds__(kThreads) mvq_list_kernel(MatList L, int64_t row_bytes, int64_t nblocks, Act act) {
  const unsigned m = blockIdx.y;
  kc::prefetch_warp_rows<1, kThreads>(L.w[m], row_bytes, L.rows[m]);
  const typename T::Ctx ctx = T::init();  // before any return: it may __syncthreads
  pdl_enter();
  kc::warp_rows<T, 1, kThreads, kUnroll>(L.w[m], row_bytes, L.rows[m], nblocks * T::PARTS, L.y[m],
                                         [&](const typename T::Raw(&raw)[1], int64_t b, int p, float(&acc)[1]) {
                                           acc[0] = __fadd_rn(acc[0], T::dot(ctx, raw[0], p, act, b));
                                         });
}

unsigned grid_for(int64_t threads) { return kc::grid_for(threads, kThreads); }

template <class T>
void mvq_list(GgmlType t, const MatvecTarget* targets, int n, int64_t cols, const void* act, cudaStream_t s) {
  if (n < 1 || n > kMatvecListMax) fail_shape("matvec_q8_list targets", t, n, 1);
  if (cols % T::QK || cols % T::AQK) fail_shape("matvec_q8_list", t, cols, T::AQK > T::QK ? T::AQK : T::QK);
  if (!aligned(act, 16)) fail_align("matvec_q8_list activation", t, act, 16);
  MatList L{};
  int64_t most = 0;
  for (int i = 0; i < n; ++i) {
    if (!aligned(targets[i].w, T::ALIGN)) fail_align("matvec_q8_list weights", t, targets[i].w, T::ALIGN);
    L.w[i] = static_cast<const uint8_t*>(targets[i].w);
    L.rows[i] = targets[i].rows;
    L.y[i] = targets[i].y;
    most = targets[i].rows > most ? targets[i].rows : most;
  }
  if (most <= 0 || cols <= 0) return;
  const int64_t rb = cols / T::QK * T::BYTES, nb = cols / T::QK;
  ds4::cuda::launch(&mvq_list_kernel<T>, dim3(grid_for(most * 32), static_cast<unsigned>(n)), kThreads, 0, s, L, rb, nb,
                    act_view(act, cols, T::AQK));
  DS4_CUDA_CHECK_LAUNCH("mvq_list_kernel");
}

struct TablesTag {};

void upload_tables() {
  kc::once_per_device<TablesTag>([] {
    static_assert(sizeof(quant::iq2xxs_grid) == 256 * sizeof(uint64_t));
    DS4_CUDA_CHECK(cudaMemcpyToSymbol(g_iq2xxs_grid_q, quant::iq2xxs_grid, sizeof(quant::iq2xxs_grid)));
    // QIQ2_XXS computes a sign code's bits as the code plus its parity.
    for (int i = 0; i < 128; ++i)
      if (quant::ksigns_iq2xs[i] != (i | ((__builtin_popcount(static_cast<unsigned>(i)) & 1) << 7)))
        fail_unsupported("IQ2_XXS sign table (not code + parity)", GgmlType::IQ2_XXS);
  });
}

struct Batch {
  int n = 1;              // matrices (gridDim.y)
  size_t act_stride = 0;  // bytes between activations (0: one for all)
  int64_t y_stride = 0;   // floats between outputs
};

template <class T>
void mvq(GgmlType t, const void* w, int64_t rows, int64_t cols, const void* act, float* y, cudaStream_t s,
         const int32_t* index, int64_t index_stride, Batch bt) {
  if (cols % T::QK || cols % T::AQK) fail_shape("matvec_q8", t, cols, T::AQK > T::QK ? T::AQK : T::QK);
  if (!aligned(w, T::ALIGN)) fail_align("matvec_q8 weights", t, w, T::ALIGN);
  if (!aligned(act, 16)) fail_align("matvec_q8 activation", t, act, 16);
  if (index && index_stride % T::ALIGN)
    fail_align("matvec_q8 matrix stride", t, reinterpret_cast<const void*>(index_stride), T::ALIGN);
  if (rows <= 0 || cols <= 0) return;
  const auto* wb = static_cast<const uint8_t*>(w);
  const int64_t rb = cols / T::QK * T::BYTES, nb = cols / T::QK;
  if (bt.n < 1 || bt.n > 65535) fail_shape("matvec_q8 batch", t, bt.n, 1);
  if (bt.act_stride % 16) fail_align("matvec_q8 activation stride", t, reinterpret_cast<const void*>(bt.act_stride), 16);
  const Act a = act_view(act, cols, T::AQK);
  const auto n = static_cast<unsigned>(bt.n);
  if (rows >= 1024) {
    ds4::cuda::launch(&mvq_kernel<T, 2>, dim3(grid_for((rows + 1) / 2 * 32), n), kThreads, 0, s, wb, rb, rows, nb, a,
                      bt.act_stride, y, bt.y_stride, index, index_stride);
  } else {
    ds4::cuda::launch(&mvq_kernel<T, 1>, dim3(grid_for(rows * 32), n), kThreads, 0, s, wb, rb, rows, nb, a,
                      bt.act_stride, y, bt.y_stride, index, index_stride);
  }
  DS4_CUDA_CHECK_LAUNCH("mvq_kernel");
}

// Up to kMultiMax activations per launch; more go in several launches.
constexpr int kMultiMax = 8;

template <class T, int N>
void launch_multi(const uint8_t* wb, int64_t rb, int64_t rows, int64_t nb, Act a, size_t act_stride, int nact, float* y,
                  int64_t y_stride, cudaStream_t s) {
  // One row per warp keeps the accumulators (R x N) in registers.
  ds4::cuda::launch(&mvq_multi_kernel<T, 1, N>, grid_for(rows * 32), kThreads, 0, s, wb, rb, rows, nb, a, act_stride,
                    nact, y, y_stride);
  DS4_CUDA_CHECK_LAUNCH("mvq_multi_kernel");
}

template <class T>
void mvq_multi(GgmlType t, const void* w, int64_t rows, int64_t cols, const void* act, size_t act_stride, int64_t nact,
               float* y, int64_t y_stride, cudaStream_t s) {
  if (cols % T::QK || cols % T::AQK) fail_shape("matvec_q8_rows", t, cols, T::AQK > T::QK ? T::AQK : T::QK);
  if (!aligned(w, T::ALIGN)) fail_align("matvec_q8_rows weights", t, w, T::ALIGN);
  if (!aligned(act, 16)) fail_align("matvec_q8_rows activation", t, act, 16);
  if (act_stride % 16) fail_align("matvec_q8_rows activation stride", t, reinterpret_cast<const void*>(act_stride), 16);
  if (rows <= 0 || cols <= 0 || nact <= 0) return;
  const auto* wb = static_cast<const uint8_t*>(w);
  const int64_t rb = cols / T::QK * T::BYTES, nb = cols / T::QK;
  for (int64_t n0 = 0; n0 < nact; n0 += kMultiMax) {
    const int n = static_cast<int>(nact - n0 < kMultiMax ? nact - n0 : kMultiMax);
    Act a = act_view(static_cast<const uint8_t*>(act) + static_cast<size_t>(n0) * act_stride, cols, T::AQK);
    float* yn = y + n0 * y_stride;
    if (n == 1) launch_multi<T, 1>(wb, rb, rows, nb, a, act_stride, n, yn, y_stride, s);
    else if (n == 2) launch_multi<T, 2>(wb, rb, rows, nb, a, act_stride, n, yn, y_stride, s);
    else if (n <= 4) launch_multi<T, 4>(wb, rb, rows, nb, a, act_stride, n, yn, y_stride, s);
    else launch_multi<T, kMultiMax>(wb, rb, rows, nb, a, act_stride, n, yn, y_stride, s);
  }
}

template <class T>
void mvq_grouped(GgmlType t, const void* base, int64_t stride, const int32_t* sel, int64_t nrows, int K, int64_t rows,
                 int64_t cols, const void* act, size_t act_row_stride, size_t act_k_stride, float* y, int64_t y_stride,
                 cudaStream_t s) {
  if (cols % T::QK || cols % T::AQK) fail_shape("matvec_q8_grouped", t, cols, T::AQK > T::QK ? T::AQK : T::QK);
  if (!aligned(base, T::ALIGN) || stride % T::ALIGN) fail_align("matvec_q8_grouped weights", t, base, T::ALIGN);
  if (!aligned(act, 16) || act_row_stride % 16 || act_k_stride % 16)
    fail_align("matvec_q8_grouped activation", t, act, 16);
  if (rows <= 0 || cols <= 0 || nrows <= 0 || K <= 0) return;
  const int64_t nslots = nrows * K;
  if (nslots > 65535) fail_shape("matvec_q8_grouped slots", t, nslots, 1);
  const int64_t rb = cols / T::QK * T::BYTES, nb = cols / T::QK;
  const Act a = act_view(act, cols, T::AQK);
  const auto* bp = static_cast<const uint8_t*>(base);
  const auto ns = static_cast<unsigned>(nslots);
  const int n = static_cast<int>(nslots);
  // At most one slot per row names an expert (the kernel's chunk loop covers a
  // row naming one twice), so the row count bounds the chunk size worth having.
  if (nrows == 1)  // two weight rows per warp (see mvq_grouped_kernel)
    ds4::cuda::launch(&mvq_grouped_kernel<T, 1>, dim3(grid_for((rows + 1) / 2 * 32), ns), kThreads, 0, s, bp, stride,
                      sel, n, K, rb, rows, nb, a, act_row_stride, act_k_stride, y, y_stride);
  else if (nrows == 2)
    ds4::cuda::launch(&mvq_grouped_kernel<T, 2>, dim3(grid_for(rows * 32), ns), kThreads, 0, s, bp, stride, sel, n, K,
                      rb, rows, nb, a, act_row_stride, act_k_stride, y, y_stride);
  else if (nrows <= 4)
    ds4::cuda::launch(&mvq_grouped_kernel<T, 4>, dim3(grid_for(rows * 32), ns), kThreads, 0, s, bp, stride, sel, n, K,
                      rb, rows, nb, a, act_row_stride, act_k_stride, y, y_stride);
  else
    ds4::cuda::launch(&mvq_grouped_kernel<T, kMultiMax>, dim3(grid_for(rows * 32), ns), kThreads, 0, s, bp, stride, sel,
                      n, K, rb, rows, nb, a, act_row_stride, act_k_stride, y, y_stride);
  DS4_CUDA_CHECK_LAUNCH("mvq_grouped_kernel");
}

void mvq_any(GgmlType t, const void* w, int64_t rows, int64_t cols, const void* act, float* y, cudaStream_t s,
             const int32_t* index, int64_t index_stride, Batch bt = {}) {
  switch (t) {
    case GgmlType::Q8_0: return mvq<QQ8_0>(t, w, rows, cols, act, y, s, index, index_stride, bt);
    case GgmlType::Q2_K: return mvq<QQ2_K>(t, w, rows, cols, act, y, s, index, index_stride, bt);
    case GgmlType::Q4_K: return mvq<QQ4_K>(t, w, rows, cols, act, y, s, index, index_stride, bt);
    case GgmlType::IQ2_XXS:
      upload_tables();
      return mvq<QIQ2_XXS>(t, w, rows, cols, act, y, s, index, index_stride, bt);
    default: fail_unsupported("matvec_q8", t);
  }
}

}  // namespace

namespace detail {
void upload_q8_tables() { upload_tables(); }
}  // namespace detail

GgmlType activation_type(GgmlType weight) {
  switch (weight) {
    case GgmlType::Q8_0:
    case GgmlType::Q2_K:
    case GgmlType::Q4_K:
    case GgmlType::IQ2_XXS: {
      // The CPU kernel table decides; every ISA's kernel for a type takes the
      // same activation type, so the scalar table answers for all of them.
      const quant::DotKernel* k = quant::scalar_kernel(weight);
      return k ? k->act : GgmlType::F32;
    }
    default: return GgmlType::F32;
  }
}

size_t activation_bytes(GgmlType act, int64_t cols) {
  const auto n = static_cast<size_t>(cols);
  switch (act) {
    case GgmlType::Q8_0: return align16(n) + align16(4 * (n / 32));
    case GgmlType::Q8_K: return align16(n) + align16(4 * (n / 256)) + align16(4 * (n / 16));
    default: return 4 * n;
  }
}

void quantize_activation(GgmlType act, const float* x, int64_t cols, void* dst, cudaStream_t s) {
  quantize_activation_rows(act, x, cols, 1, dst, s);
}

void quantize_activation_rows(GgmlType act, const float* x, int64_t cols, int64_t nrows, void* dst, cudaStream_t s) {
  quantize_activation_strided(act, x, cols, cols, nrows, dst, s);
}

namespace {
void quantize_any(GgmlType act, const float* x, int64_t cols, int64_t x_stride, int64_t nrows, void* dst,
                  cudaStream_t s, SwiIn sw);
}  // namespace

void quantize_activation_strided(GgmlType act, const float* x, int64_t cols, int64_t x_stride, int64_t nrows,
                                 void* dst, cudaStream_t s) {
  quantize_any(act, x, cols, x_stride, nrows, dst, s, SwiIn{});
}

void quantize_swiglu_rows(GgmlType act, const float* g, const float* u, int64_t ff, int64_t nrows, float clamp,
                          const float* wts, void* dst, cudaStream_t s) {
  quantize_any(act, g, ff, ff, nrows, dst, s, SwiIn{u, wts, clamp});
}

namespace {
void quantize_any(GgmlType act, const float* x, int64_t cols, int64_t x_stride, int64_t nrows, void* dst,
                  cudaStream_t s, SwiIn sw) {
  if (!aligned(dst, 16)) fail_align("quantize_activation output", act, dst, 16);
  if (x_stride < cols) fail_shape("quantize_activation row stride", act, x_stride, 1);
  if (cols <= 0 || nrows <= 0) return;
  if (nrows > 65535) fail_shape("quantize_activation rows", act, nrows, 1);
  auto* b = static_cast<uint8_t*>(dst);
  const size_t stride = activation_bytes(act, cols);
  const size_t d_off = align16(static_cast<size_t>(cols));
  const auto rows = static_cast<unsigned>(nrows);
  switch (act) {
    case GgmlType::Q8_0: {
      if (cols % 32) fail_shape("quantize_activation", act, cols, 32);
      ds4::cuda::launch(&quantize_q8_0_kernel, dim3(grid_for(cols), rows), kThreads, 0, s, x, cols, x_stride, b, stride,
                        d_off, sw);
      DS4_CUDA_CHECK_LAUNCH("quantize_q8_0_kernel");
      return;
    }
    case GgmlType::Q8_K: {
      if (cols % 256) fail_shape("quantize_activation", act, cols, 256);
      const int64_t nb = cols / 256;
      if (nb > 0x7fffffff) fail_shape("quantize_activation (too many blocks)", act, cols, 256);
      const size_t s_off = d_off + align16(4 * static_cast<size_t>(nb));
      ds4::cuda::launch(&quantize_q8_k_kernel, dim3(static_cast<unsigned>(nb), rows), 256, 0, s, x, cols, x_stride, b,
                        stride, d_off, s_off, sw);
      DS4_CUDA_CHECK_LAUNCH("quantize_q8_k_kernel");
      return;
    }
    default: fail_unsupported("quantize_activation", act);
  }
}
}  // namespace

void matvec_q8(GgmlType t, const void* w, int64_t rows, int64_t cols, const void* act, float* y, cudaStream_t s) {
  mvq_any(t, w, rows, cols, act, y, s, nullptr, 0);
}

void rms_norm_quantize_q8_0(const float* x, const float* w, int64_t rows, int64_t n, float eps, float* y, void* dst,
                            cudaStream_t s) {
  if (!aligned(dst, 16)) fail_align("rms_norm_quantize_q8_0 output", GgmlType::Q8_0, dst, 16);
  if (n % 32) fail_shape("rms_norm_quantize_q8_0", GgmlType::Q8_0, n, 32);
  if (rows > 0x7fffffff) fail_shape("rms_norm_quantize_q8_0 rows", GgmlType::Q8_0, rows, 1);
  if (rows <= 0 || n <= 0) return;
  ds4::cuda::launch(&norm_q8_0_kernel, static_cast<unsigned>(rows), rm::rms_threads(rows, n), 0, s, x, w, n, eps, y,
                    static_cast<uint8_t*>(dst), activation_bytes(GgmlType::Q8_0, n),
                    align16(static_cast<size_t>(n)));
  DS4_CUDA_CHECK_LAUNCH("norm_q8_0_kernel");
}

void matvec_q8_rows(GgmlType t, const void* w, int64_t rows, int64_t cols, const void* act, size_t act_stride,
                    int64_t nact, float* y, int64_t y_stride, cudaStream_t s) {
  // One activation: the single-row kernel (its two-rows-per-warp form is
  // faster on tall matrices); each row's sum is the same either way.
  if (nact == 1) return mvq_any(t, w, rows, cols, act, y, s, nullptr, 0);
  switch (t) {
    case GgmlType::Q8_0: return mvq_multi<QQ8_0>(t, w, rows, cols, act, act_stride, nact, y, y_stride, s);
    case GgmlType::Q2_K: return mvq_multi<QQ2_K>(t, w, rows, cols, act, act_stride, nact, y, y_stride, s);
    case GgmlType::Q4_K: return mvq_multi<QQ4_K>(t, w, rows, cols, act, act_stride, nact, y, y_stride, s);
    case GgmlType::IQ2_XXS:
      upload_tables();
      return mvq_multi<QIQ2_XXS>(t, w, rows, cols, act, act_stride, nact, y, y_stride, s);
    default: fail_unsupported("matvec_q8_rows", t);
  }
}

void matvec_q8_grouped(GgmlType t, const void* base, int64_t stride_bytes, const int32_t* d_sel, int64_t nrows, int K,
                       int64_t rows, int64_t cols, const void* act, size_t act_row_stride, size_t act_k_stride,
                       float* y, int64_t y_stride, cudaStream_t s) {
  switch (t) {
    case GgmlType::Q8_0:
      return mvq_grouped<QQ8_0>(t, base, stride_bytes, d_sel, nrows, K, rows, cols, act, act_row_stride, act_k_stride,
                                y, y_stride, s);
    case GgmlType::Q2_K:
      return mvq_grouped<QQ2_K>(t, base, stride_bytes, d_sel, nrows, K, rows, cols, act, act_row_stride, act_k_stride,
                                y, y_stride, s);
    case GgmlType::Q4_K:
      return mvq_grouped<QQ4_K>(t, base, stride_bytes, d_sel, nrows, K, rows, cols, act, act_row_stride, act_k_stride,
                                y, y_stride, s);
    case GgmlType::IQ2_XXS:
      upload_tables();
      return mvq_grouped<QIQ2_XXS>(t, base, stride_bytes, d_sel, nrows, K, rows, cols, act, act_row_stride,
                                   act_k_stride, y, y_stride, s);
    default: fail_unsupported("matvec_q8_grouped", t);
  }
}

void matvec_q8_list(GgmlType t, const MatvecTarget* targets, int n, int64_t cols, const void* act, cudaStream_t s) {
  switch (t) {
    case GgmlType::Q8_0: return mvq_list<QQ8_0>(t, targets, n, cols, act, s);
    case GgmlType::Q2_K: return mvq_list<QQ2_K>(t, targets, n, cols, act, s);
    case GgmlType::Q4_K: return mvq_list<QQ4_K>(t, targets, n, cols, act, s);
    case GgmlType::IQ2_XXS:
      upload_tables();
      return mvq_list<QIQ2_XXS>(t, targets, n, cols, act, s);
    default: fail_unsupported("matvec_q8_list", t);
  }
}

void matvec_q8_indexed(GgmlType t, const void* base, int64_t stride_bytes, const int32_t* d_index, int64_t rows,
                       int64_t cols, const void* act, float* y, cudaStream_t s) {
  mvq_any(t, base, rows, cols, act, y, s, d_index, stride_bytes);
}

void matvec_q8_batched(GgmlType t, const void* base, int64_t stride_bytes, const int32_t* d_index, int nmat,
                       int64_t rows, int64_t cols, const void* act, size_t act_stride, float* y, int64_t y_stride,
                       cudaStream_t s) {
  mvq_any(t, base, rows, cols, act, y, s, d_index, stride_bytes, Batch{nmat, act_stride, y_stride});
}

}  // namespace ds4::cuda
