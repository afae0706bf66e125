// GPU quant kernels against the CPU registry.
//
// Dequantize: the GPU output equals quant::dequantize_row bit for bit, on random
// valid blocks (every byte random except the f16 scales, which are random
// finite values: moderate ones, and "extreme" ones spanning subnormals to 65504).
//
// Matvec: y = W x on the GPU against the CPU registry's dequantized rows dotted
// with x in double precision. Bound, per row: |y_gpu - y_ref| <= k * u * S with
// u = 2^-24 and S = sum_i (|a_i| + |b_i|) |x_i|, where w_i = a_i - b_i is the
// weight's split into its scaled quant a = d*sc*q and its offset b = dmin*m
// (b = 0 for types without offsets). The kernel rounds each product/sum at most
// k = cols/32 + 32 times along any path (per-lane chains of at most cols/32
// unit partials, at most 16 FMAs inside a unit, a few scale products and 5
// shuffle levels), and for k*u << 1 the classic bound gamma_k <= 1.01 k u holds
// for every term's relative error. The offset term enters S because the kernel
// factors d*sc*sum(q x) - dmin*m*sum(x) per group, whose rounding scales with
// |a| and |b|, not with |a - b|.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "backend/cuda/cuda_buffer.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_quant.h"
#include "quant/blocks.h"
#include "quant/kernels.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/float16.h"
#include "util/ggml_type.h"

namespace ds4 {
namespace {

using cuda::DeviceBuffer;

constexpr GgmlType kTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16,   GgmlType::Q8_0,
                               GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS};

struct Geometry {
  int64_t qk;
  size_t bytes;
};

Geometry geometry(GgmlType t) {
  const auto info = ggml_type_info(ggml_type_id(t));
  if (!info) throw Error("unknown type");
  return {info->block_size, info->block_bytes};
}

// Offsets of the f16 scale fields in a block (the only bytes that must be
// constrained for a valid block: a NaN/inf scale is not a valid weight).
// `dmin` is the offset scale of K-quants (-1: none).
struct ScaleFields {
  std::vector<size_t> f16;
  int dmin = -1;
  int d = -1;
};

ScaleFields scale_fields(GgmlType t) {
  switch (t) {
    case GgmlType::Q8_0: return {{0}, -1, 0};
    case GgmlType::Q2_K: return {{80, 82}, 82, 80};
    case GgmlType::Q4_K: return {{0, 2}, 2, 0};
    case GgmlType::IQ2_XXS: return {{0}, -1, 0};
    default: return {};
  }
}

uint16_t finite_f16(std::mt19937_64& rng, bool extreme) {
  if (extreme) {
    for (;;) {  // any finite pattern: zeros, subnormals, up to +-65504
      const auto h = static_cast<uint16_t>(rng());
      if ((h & 0x7c00u) != 0x7c00u) return h;
    }
  }
  // Scales as real files have them: magnitudes 1e-3..3e-2, either sign.
  std::uniform_real_distribution<float> mag(1e-3f, 3e-2f);
  const float v = (rng() & 1) ? -mag(rng) : mag(rng);
  return f32_to_f16(v);
}

// Random valid data for n elements of type t.
std::vector<uint8_t> random_data(GgmlType t, int64_t n, bool extreme, std::mt19937_64& rng) {
  const Geometry g = geometry(t);
  std::vector<uint8_t> data(static_cast<size_t>(n / g.qk) * g.bytes);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  auto put16 = [&](size_t off, uint16_t h) { std::memcpy(data.data() + off, &h, 2); };
  switch (t) {
    case GgmlType::F32:
      for (int64_t i = 0; i < n; ++i) {
        uint32_t bits;
        if (extreme) {
          do bits = static_cast<uint32_t>(rng());
          while ((bits & 0x7f800000u) == 0x7f800000u);
        } else {
          bits = std::bit_cast<uint32_t>(uni(rng));
        }
        std::memcpy(data.data() + 4 * i, &bits, 4);
      }
      break;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) put16(2 * i, extreme ? finite_f16(rng, true) : f32_to_f16(uni(rng)));
      break;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        if (extreme) {
          do h = static_cast<uint16_t>(rng());
          while ((h & 0x7f80u) == 0x7f80u);
        } else {
          h = f32_to_bf16(uni(rng));
        }
        put16(2 * i, h);
      }
      break;
    default: {
      for (auto& b : data) b = static_cast<uint8_t>(rng());
      const ScaleFields sf = scale_fields(t);
      for (size_t blk = 0; blk < data.size() / g.bytes; ++blk)
        for (size_t off : sf.f16) put16(blk * g.bytes + off, finite_f16(rng, extreme));
    }
  }
  return data;
}

// Every GPU test needs a device. Without one the test fails: a skipped GPU test
// would read as a pass in a summary. (A macro: ASSERT must return from the test.)
#define REQUIRE_DEVICE() \
  ASSERT_GT(cuda::device_count(), 0) << "no CUDA device: run the GPU tests on a GPU machine (scripts/gpu-check)"

void sync() { DS4_CUDA_CHECK(cudaDeviceSynchronize()); }

std::string type_str(GgmlType t) { return std::string(ggml_type_name(t)); }

// ---- dequantize: bit-exact ----------------------------------------------------

struct DeqCase {
  GgmlType type;
  int64_t n;
  bool extreme;
};

class GpuDequantize : public ::testing::TestWithParam<DeqCase> {};

TEST_P(GpuDequantize, BitExactVsCpuRegistry) {
  REQUIRE_DEVICE();
  const DeqCase c = GetParam();
  ASSERT_NE(quant::find_ops(c.type), nullptr) << "CPU registry lacks " << type_str(c.type) << ": the oracle is missing";
  std::mt19937_64 rng(0x5eed0000u + ggml_type_id(c.type) * 7 + (c.extreme ? 1 : 0) + static_cast<uint64_t>(c.n));
  const auto data = random_data(c.type, c.n, c.extreme, rng);
  std::vector<float> want(static_cast<size_t>(c.n)), got(static_cast<size_t>(c.n));
  quant::dequantize_row(c.type, data.data(), want.data(), c.n);

  DeviceBuffer dsrc(data.size()), ddst(got.size() * 4);
  dsrc.upload(data.data(), data.size());
  DS4_CUDA_CHECK(cudaMemset(ddst.get(), 0xff, ddst.size()));  // NaN fill: an unwritten value cannot match
  cuda::dequantize_device(c.type, dsrc.get(), ddst.as<float>(), c.n);
  sync();
  ddst.download(got.data(), got.size() * 4);

  int64_t mismatches = 0, first = -1;
  for (int64_t i = 0; i < c.n; ++i)
    if (std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(want[i])) {
      if (first < 0) first = i;
      ++mismatches;
    }
  ASSERT_EQ(mismatches, 0) << type_str(c.type) << ": " << mismatches << " of " << c.n << " values differ; first at " << first
                           << " (block " << first / geometry(c.type).qk << "): gpu " << got[first] << " (0x" << std::hex
                           << std::bit_cast<uint32_t>(got[first]) << ") cpu " << want[first] << " (0x"
                           << std::bit_cast<uint32_t>(want[first]) << ")";
}

std::vector<DeqCase> deq_cases() {
  std::vector<DeqCase> v;
  for (GgmlType t : kTypes)
    for (bool extreme : {false, true}) {
      v.push_back({t, 256 * 1031, extreme});  // odd number of 256-blocks
      const int64_t qk = geometry(t).qk;
      if (qk == 1) v.push_back({t, 256 * 1031 + 5, extreme});  // float types: the scalar path
    }
  return v;
}

INSTANTIATE_TEST_SUITE_P(AllTypes, GpuDequantize, ::testing::ValuesIn(deq_cases()), [](const auto& p) {
  return type_str(p.param.type) + "_n" + std::to_string(p.param.n) + (p.param.extreme ? "_extreme" : "_moderate");
});

// ---- matvec: within the rounding bound -----------------------------------------

struct MvCase {
  GgmlType type;
  int64_t rows, cols;
  int rows_per_warp;  // 0: the default choice of cuda::matvec
};

class GpuMatvec : public ::testing::TestWithParam<MvCase> {};

// The two parts of each weight (see the header): a = w with the offset scale
// zeroed, b = -(w with the quant scale zeroed); for types without an offset,
// a = w and b = 0.
void weight_parts(GgmlType t, const uint8_t* row, int64_t cols, std::vector<float>& a, std::vector<float>& b) {
  const ScaleFields sf = scale_fields(t);
  a.resize(static_cast<size_t>(cols));
  b.assign(static_cast<size_t>(cols), 0.0f);
  if (sf.dmin < 0) {
    quant::dequantize_row(t, row, a.data(), cols);
    return;
  }
  const Geometry g = geometry(t);
  std::vector<uint8_t> tmp(row, row + static_cast<size_t>(cols / g.qk) * g.bytes);
  for (size_t blk = 0; blk < tmp.size() / g.bytes; ++blk) std::memset(tmp.data() + blk * g.bytes + sf.dmin, 0, 2);
  quant::dequantize_row(t, tmp.data(), a.data(), cols);
  tmp.assign(row, row + tmp.size());
  for (size_t blk = 0; blk < tmp.size() / g.bytes; ++blk) std::memset(tmp.data() + blk * g.bytes + sf.d, 0, 2);
  quant::dequantize_row(t, tmp.data(), b.data(), cols);
}

// The double-precision dot of one weight row (type t, `cols` values) with x,
// and the S of the bound above for it.
struct RowRef {
  double ref = 0, s = 0;
};

template <class X>
RowRef row_reference(GgmlType t, const uint8_t* row, int64_t cols, X&& x) {
  std::vector<float> wr(static_cast<size_t>(cols)), pa, pb;
  quant::dequantize_row(t, row, wr.data(), cols);
  weight_parts(t, row, cols, pa, pb);
  RowRef r;
  for (int64_t i = 0; i < cols; ++i) {
    const double xi = x(i);
    r.ref += static_cast<double>(wr[static_cast<size_t>(i)]) * xi;
    r.s += (std::fabs(static_cast<double>(pa[static_cast<size_t>(i)])) + std::fabs(static_cast<double>(pb[static_cast<size_t>(i)]))) *
           std::fabs(xi);
  }
  return r;
}

TEST_P(GpuMatvec, WithinRoundingBoundOfDoubleDot) {
  REQUIRE_DEVICE();
  const MvCase c = GetParam();
  ASSERT_NE(quant::find_ops(c.type), nullptr) << "CPU registry lacks " << type_str(c.type) << ": the oracle is missing";
  std::mt19937_64 rng(0xa11ce000u + ggml_type_id(c.type) * 131 + static_cast<uint64_t>(c.rows * 7 + c.cols));
  const auto w = random_data(c.type, c.rows * c.cols, false, rng);
  std::vector<float> x(static_cast<size_t>(c.cols));
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (auto& v : x) v = uni(rng);

  DeviceBuffer dw(w.size()), dx(x.size() * 4), dy(static_cast<size_t>(c.rows) * 4);
  dw.upload(w.data(), w.size());
  dx.upload(x.data(), x.size() * 4);
  DS4_CUDA_CHECK(cudaMemset(dy.get(), 0xff, dy.size()));
  if (c.rows_per_warp)
    cuda::detail::matvec_rows_per_warp(c.rows_per_warp, c.type, dw.get(), c.rows, c.cols, dx.as<float>(), dy.as<float>(),
                                       nullptr);
  else
    cuda::matvec(c.type, dw.get(), c.rows, c.cols, dx.as<float>(), dy.as<float>());
  sync();
  std::vector<float> y(static_cast<size_t>(c.rows));
  dy.download(y.data(), y.size() * 4);

  const size_t rb = quant::row_bytes(c.type, c.cols);
  const double u = std::ldexp(1.0, -24), k = static_cast<double>(c.cols / 32 + 32);
  double worst = 0;  // largest |err| / (u * S) over the rows: how much of the bound was used
  int64_t bad = 0;
  for (int64_t r = 0; r < c.rows; ++r) {
    const uint8_t* row = w.data() + static_cast<size_t>(r) * rb;
    const auto [ref, s] = row_reference(c.type, row, c.cols, [&](int64_t i) { return double{x[static_cast<size_t>(i)]}; });
    const double err = std::fabs(static_cast<double>(y[r]) - ref);
    if (!(err <= k * u * s)) {  // also catches NaN (an unwritten row)
      if (bad++ < 5)
        ADD_FAILURE() << type_str(c.type) << " " << c.rows << "x" << c.cols << " row " << r << ": gpu " << y[r] << " ref "
                      << ref << " err " << err << " > bound " << k * u * s;
    }
    if (s > 0) worst = std::max(worst, err / (u * s));
  }
  EXPECT_EQ(bad, 0) << bad << " rows outside the bound";
  std::printf("  %-8s %6lldx%-6lld rpw %d: max err %.2f u*S (bound %.0f u*S)\n", type_str(c.type).c_str(),
              static_cast<long long>(c.rows), static_cast<long long>(c.cols), c.rows_per_warp, worst, k);
}

std::vector<MvCase> mv_cases() {
  std::vector<MvCase> v;
  for (GgmlType t : kTypes) {
    const int64_t qk = std::max<int64_t>(geometry(t).qk, 1);
    // Odd row counts and odd block counts (rows that start only 2-aligned for
    // Q8_0/IQ2_XXS, scalar paths for the float types).
    constexpr int64_t kSmall[][2] = {{1, 1}, {3, 3}, {17, 9}, {65, 16}, {1023, 8}};  // rows, blocks
    for (const auto& rb : kSmall) v.push_back({t, rb[0], rb[1] * qk, 0});
    for (int rpw : {1, 2, 4}) v.push_back({t, 67, 2048, rpw});
    // Few long rows (the HC mixer: 24 x 4*4096): a block per row, by default
    // and asked for explicitly.
    v.push_back({t, 24, 16384, 0});
    v.push_back({t, 5, 4096, cuda::detail::kBlockPerRow});
    // Flash-sized: rows x cols.
    constexpr int64_t kFlash[][2] = {{4096, 2048}, {2048, 4096}, {4096, 32768}};
    for (const auto& rc : kFlash) v.push_back({t, rc[0], rc[1], 0});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(AllTypes, GpuMatvec, ::testing::ValuesIn(mv_cases()), [](const auto& p) {
  const MvCase& c = p.param;
  return type_str(c.type) + "_" + std::to_string(c.rows) + "x" + std::to_string(c.cols) +
         (c.rows_per_warp > 0   ? "_rpw" + std::to_string(c.rows_per_warp)
          : c.rows_per_warp < 0 ? std::string("_block_per_row")
                                : std::string());
});

// ---- integer path: activation quantization (bit-exact) and matvec_q8 ------------
// quantize_activation must give the CPU's integers and scales exactly (they are
// part of what the model computes); matvec_q8's integer sums are exact, so it
// may differ from the double-precision dot of the dequantized weight and the
// quantized activation by float rounding only: per row |y - ref| <= k u S with
// S = sum_i (|a_i| + |b_i|) |xq_i| (weight parts as above, xq the quantized
// activation's values) and k = cols/32 + 32, the same budget as the f32 path.
// The CPU's own scalar kernel is held to the same bound, as a check of it.

struct ActCase {
  GgmlType act;
  int64_t cols;
};

// Random activations with the hard cases mixed in: an all-zero block, blocks
// whose x * (1/d) lands exactly on .5 (Q8_0 rounds half away from zero, Q8_K
// to even), tiny and huge magnitudes.
std::vector<float> random_activation(int64_t cols, int block, std::mt19937_64& rng) {
  std::vector<float> x(static_cast<size_t>(cols));
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (auto& v : x) v = uni(rng);
  const int64_t nb = cols / block;
  for (int64_t b = 0; b < nb; ++b) {
    float* xb = x.data() + b * block;
    switch (b % 6) {
      case 1: std::fill(xb, xb + block, 0.0f); break;
      case 2:  // amax 127: d = 1 (Q8_0) / iscale = 1 (Q8_K), so k + 0.5 is a tie
        for (int i = 0; i < block; ++i) xb[i] = static_cast<float>(static_cast<int>(rng() % 200) - 100) + 0.5f;
        xb[0] = 127.0f;
        break;
      case 3:
        for (int i = 0; i < block; ++i) xb[i] *= 1e-30f;
        break;
      case 4:
        for (int i = 0; i < block; ++i) xb[i] *= 1e4f;
        break;
      default: break;
    }
  }
  return x;
}

// The CPU quantizer's output, split into q / d / bsums like the GPU layout.
struct CpuAct {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int32_t> bsums;
  std::vector<uint8_t> raw;  // the CPU blocks themselves (for the CPU kernels)
};

CpuAct cpu_quantize(GgmlType act, const std::vector<float>& x) {
  const auto cols = static_cast<int64_t>(x.size());
  CpuAct c;
  c.q.resize(x.size());
  if (act == GgmlType::Q8_0) {
    c.raw.resize(static_cast<size_t>(cols / 32) * 34);
    quant::quantize_row_q8_0(x.data(), c.raw.data(), cols);
    for (int64_t b = 0; b < cols / 32; ++b) {
      uint16_t h;
      std::memcpy(&h, c.raw.data() + b * 34, 2);
      c.d.push_back(f16_to_f32(h));
      std::memcpy(c.q.data() + b * 32, c.raw.data() + b * 34 + 2, 32);
    }
  } else {
    c.raw.resize(static_cast<size_t>(cols / 256) * sizeof(quant::BlockQ8_K));
    quant::quantize_row_q8_k(x.data(), c.raw.data(), cols);
    const auto* blk = reinterpret_cast<const quant::BlockQ8_K*>(c.raw.data());
    for (int64_t b = 0; b < cols / 256; ++b) {
      c.d.push_back(blk[b].d);
      std::memcpy(c.q.data() + b * 256, blk[b].qs, 256);
      for (int j = 0; j < 16; ++j) c.bsums.push_back(blk[b].bsums[j]);
    }
  }
  return c;
}

class GpuActivation : public ::testing::TestWithParam<ActCase> {};

TEST_P(GpuActivation, BitExactVsCpuQuantizer) {
  REQUIRE_DEVICE();
  const ActCase c = GetParam();
  const int block = c.act == GgmlType::Q8_0 ? 32 : 256;
  std::mt19937_64 rng(0xac7000u + static_cast<uint64_t>(c.cols) + ggml_type_id(c.act));
  const auto x = random_activation(c.cols, block, rng);
  const CpuAct want = cpu_quantize(c.act, x);

  const size_t bytes = cuda::activation_bytes(c.act, c.cols);
  DeviceBuffer dx(x.size() * 4), da(bytes);
  dx.upload(x.data(), x.size() * 4);
  DS4_CUDA_CHECK(cudaMemset(da.get(), 0x55, bytes));
  cuda::quantize_activation(c.act, dx.as<float>(), c.cols, da.get());
  sync();
  std::vector<uint8_t> got(bytes);
  da.download(got.data(), bytes);

  const size_t qb = (x.size() + 15) / 16 * 16, nb = static_cast<size_t>(c.cols / block);
  int64_t bad_q = 0, bad_d = 0, bad_s = 0;
  for (size_t i = 0; i < x.size(); ++i) bad_q += static_cast<int8_t>(got[i]) != want.q[i];
  for (size_t b = 0; b < nb; ++b) {
    float d;
    std::memcpy(&d, got.data() + qb + 4 * b, 4);
    bad_d += std::bit_cast<uint32_t>(d) != std::bit_cast<uint32_t>(want.d[b]);
  }
  if (c.act == GgmlType::Q8_K) {
    const size_t sb = qb + (4 * nb + 15) / 16 * 16;
    for (size_t j = 0; j < want.bsums.size(); ++j) {
      int32_t v;
      std::memcpy(&v, got.data() + sb + 4 * j, 4);
      bad_s += v != want.bsums[j];
    }
  }
  EXPECT_EQ(bad_q, 0) << type_str(c.act) << ": " << bad_q << " of " << x.size() << " quants differ";
  EXPECT_EQ(bad_d, 0) << type_str(c.act) << ": " << bad_d << " of " << nb << " scales differ";
  EXPECT_EQ(bad_s, 0) << type_str(c.act) << ": " << bad_s << " block sums differ";
}

INSTANTIATE_TEST_SUITE_P(Both, GpuActivation,
                         ::testing::Values(ActCase{GgmlType::Q8_0, 32}, ActCase{GgmlType::Q8_0, 32 * 1031},
                                           ActCase{GgmlType::Q8_K, 256}, ActCase{GgmlType::Q8_K, 256 * 67}),
                         [](const auto& p) { return type_str(p.param.act) + "_" + std::to_string(p.param.cols); });

constexpr GgmlType kIntTypes[] = {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS};

class GpuMatvecQ8 : public ::testing::TestWithParam<MvCase> {};

TEST_P(GpuMatvecQ8, WithinRoundingBoundOfDoubleDot) {
  REQUIRE_DEVICE();
  const MvCase c = GetParam();
  const GgmlType act = cuda::activation_type(c.type);
  ASSERT_TRUE(act == GgmlType::Q8_0 || act == GgmlType::Q8_K) << type_str(c.type) << " has no integer activation";
  const quant::DotKernel* cpu = quant::scalar_kernel(c.type);
  ASSERT_NE(cpu, nullptr);
  ASSERT_EQ(cpu->act, act) << "GPU and CPU disagree on the activation type of " << type_str(c.type);
  std::mt19937_64 rng(0x1d8000u + ggml_type_id(c.type) * 131 + static_cast<uint64_t>(c.rows * 7 + c.cols));
  const auto w = random_data(c.type, c.rows * c.cols, false, rng);
  std::vector<float> x(static_cast<size_t>(c.cols));
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (auto& v : x) v = uni(rng);
  const CpuAct qa = cpu_quantize(act, x);
  const int block = act == GgmlType::Q8_0 ? 32 : 256;

  DeviceBuffer dw(w.size()), dx(x.size() * 4), da(cuda::activation_bytes(act, c.cols)), dy(static_cast<size_t>(c.rows) * 4);
  dw.upload(w.data(), w.size());
  dx.upload(x.data(), x.size() * 4);
  DS4_CUDA_CHECK(cudaMemset(dy.get(), 0xff, dy.size()));
  cuda::quantize_activation(act, dx.as<float>(), c.cols, da.get());
  cuda::matvec_q8(c.type, dw.get(), c.rows, c.cols, da.get(), dy.as<float>());
  sync();
  std::vector<float> y(static_cast<size_t>(c.rows));
  dy.download(y.data(), y.size() * 4);

  const size_t rb = quant::row_bytes(c.type, c.cols);
  const double u = std::ldexp(1.0, -24), k = static_cast<double>(c.cols / 32 + 32);
  double worst = 0, worst_cpu = 0;
  int64_t bad = 0, bad_cpu = 0;
  for (int64_t r = 0; r < c.rows; ++r) {
    const uint8_t* row = w.data() + static_cast<size_t>(r) * rb;
    const auto [ref, s] = row_reference(c.type, row, c.cols, [&](int64_t i) {
      return static_cast<double>(qa.q[static_cast<size_t>(i)]) * qa.d[static_cast<size_t>(i / block)];
    });
    const double err = std::fabs(static_cast<double>(y[r]) - ref);
    if (!(err <= k * u * s)) {  // also catches NaN (an unwritten row)
      if (bad++ < 5)
        ADD_FAILURE() << type_str(c.type) << " " << c.rows << "x" << c.cols << " row " << r << ": gpu " << y[r] << " ref "
                      << ref << " err " << err << " > bound " << k * u * s;
    }
    const double ycpu = cpu->dot(c.cols, row, qa.raw.data());
    const double err_cpu = std::fabs(ycpu - ref);
    if (!(err_cpu <= k * u * s)) ++bad_cpu;
    if (s > 0) {
      worst = std::max(worst, err / (u * s));
      worst_cpu = std::max(worst_cpu, err_cpu / (u * s));
    }
  }
  EXPECT_EQ(bad, 0) << bad << " rows outside the bound";
  EXPECT_EQ(bad_cpu, 0) << bad_cpu << " rows of the CPU scalar kernel outside the bound (the oracle itself)";
  std::printf("  %-8s %6lldx%-6lld q8: max err gpu %.2f, cpu %.2f u*S (bound %.0f u*S)\n", type_str(c.type).c_str(),
              static_cast<long long>(c.rows), static_cast<long long>(c.cols), worst, worst_cpu, k);
}

std::vector<MvCase> mvq_cases() {
  std::vector<MvCase> v;
  for (GgmlType t : kIntTypes) {
    const int64_t qk = geometry(t).qk;
    constexpr int64_t kSmall[][2] = {{1, 1}, {3, 3}, {17, 9}, {65, 16}, {1023, 8}, {1025, 2}};  // rows, blocks
    for (const auto& rb : kSmall) v.push_back({t, rb[0], rb[1] * qk, 0});
    constexpr int64_t kFlash[][2] = {{4096, 2048}, {2048, 4096}, {4096, 32768}};
    for (const auto& rc : kFlash) v.push_back({t, rc[0], rc[1], 0});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(IntTypes, GpuMatvecQ8, ::testing::ValuesIn(mvq_cases()), [](const auto& p) {
  return type_str(p.param.type) + "_" + std::to_string(p.param.rows) + "x" + std::to_string(p.param.cols);
});

TEST(GpuMatvecQ8Indexed, PicksTheMatrixNamedOnTheDevice) {
  REQUIRE_DEVICE();
  // Three 2-row IQ2_XXS matrices; index 2 selected on the device must give the
  // same result as matvec_q8 on the third matrix directly.
  const GgmlType t = GgmlType::IQ2_XXS;
  const int64_t rows = 5, cols = 512;
  std::mt19937_64 rng(77);
  const auto w = random_data(t, 3 * rows * cols, false, rng);
  std::vector<float> x(static_cast<size_t>(cols));
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (auto& v : x) v = uni(rng);
  const int64_t stride = static_cast<int64_t>(quant::row_bytes(t, cols)) * rows;
  const int32_t idx = 2;
  DeviceBuffer dw(w.size()), dx(x.size() * 4), da(cuda::activation_bytes(GgmlType::Q8_K, cols)), di(4), y1(rows * 4),
      y2(rows * 4);
  dw.upload(w.data(), w.size());
  dx.upload(x.data(), x.size() * 4);
  di.upload(&idx, 4);
  cuda::quantize_activation(GgmlType::Q8_K, dx.as<float>(), cols, da.get());
  cuda::matvec_q8_indexed(t, dw.get(), stride, di.as<int32_t>(), rows, cols, da.get(), y1.as<float>());
  cuda::matvec_q8(t, dw.as<uint8_t>() + 2 * stride, rows, cols, da.get(), y2.as<float>());
  sync();
  std::vector<float> a(rows), b(rows);
  y1.download(a.data(), rows * 4);
  y2.download(b.data(), rows * 4);
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(std::bit_cast<uint32_t>(a[r]), std::bit_cast<uint32_t>(b[r])) << r;
}

TEST(GpuMatvecQ8Batched, EqualsOneLaunchPerMatrix) {
  REQUIRE_DEVICE();
  // Four products in one launch (expert ids 2, 0, 2, 1 of three Q2_K and
  // IQ2_XXS matrices, each with its own activation row, quantized in one
  // batch) must equal quantizing and multiplying one at a time, bit for bit.
  for (GgmlType t : {GgmlType::Q2_K, GgmlType::IQ2_XXS, GgmlType::Q8_0}) {
    const GgmlType act = cuda::activation_type(t);
    const int64_t rows = 1030, cols = 1024;  // rows >= 1024: the two-rows-per-warp kernel
    const int n = 4;
    std::mt19937_64 rng(1234 + ggml_type_id(t));
    const auto w = random_data(t, 3 * rows * cols, false, rng);
    std::vector<float> x(static_cast<size_t>(n * cols));
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    for (auto& v : x) v = uni(rng);
    const int32_t ids[n] = {2, 0, 2, 1};
    const int64_t stride = static_cast<int64_t>(quant::row_bytes(t, cols)) * rows;
    const size_t ab = cuda::activation_bytes(act, cols);
    DeviceBuffer dw(w.size()), dx(x.size() * 4), di(sizeof ids), da(ab * n), da1(ab), y(rows * n * 4), y1(rows * 4);
    dw.upload(w.data(), w.size());
    dx.upload(x.data(), x.size() * 4);
    di.upload(ids, sizeof ids);
    cuda::quantize_activation_rows(act, dx.as<float>(), cols, n, da.get());
    cuda::matvec_q8_batched(t, dw.get(), stride, di.as<int32_t>(), n, rows, cols, da.get(), ab, y.as<float>(), rows);
    std::vector<float> got(static_cast<size_t>(rows * n)), one(static_cast<size_t>(rows));
    std::vector<uint8_t> qa_all(ab * n), qa_one(ab);
    sync();
    y.download(got.data(), got.size() * 4);
    da.download(qa_all.data(), qa_all.size());
    for (int i = 0; i < n; ++i) {
      cuda::quantize_activation(act, dx.as<float>() + i * cols, cols, da1.get());
      cuda::matvec_q8(t, dw.as<uint8_t>() + ids[i] * stride, rows, cols, da1.get(), y1.as<float>());
      sync();
      y1.download(one.data(), one.size() * 4);
      da1.download(qa_one.data(), ab);
      EXPECT_EQ(std::memcmp(qa_one.data(), qa_all.data() + i * ab, ab), 0) << type_str(t) << " activation row " << i;
      EXPECT_EQ(std::memcmp(one.data(), got.data() + i * rows, one.size() * 4), 0) << type_str(t) << " product " << i;
    }
  }
}

// ---- errors ----------------------------------------------------------------------

TEST(GpuErrors, CudaFailureNamesCallFileLineAndCause) {
  REQUIRE_DEVICE();
  try {
    DeviceBuffer huge(size_t{1} << 62);
    FAIL() << "a 4 EiB cudaMalloc succeeded";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cudaMalloc"), std::string::npos) << m;
    EXPECT_NE(m.find("cuda_buffer.cpp:"), std::string::npos) << m;
    EXPECT_NE(m.find("out of memory"), std::string::npos) << m;
  }
  // The failure was reported once: the next kernel launch must not inherit it
  // as its own (the runtime's "last error" is cleared when it is thrown).
  DeviceBuffer src(256 * 4), dst(256 * 4);
  EXPECT_NO_THROW({
    cuda::dequantize_device(GgmlType::F32, src.get(), dst.as<float>(), 256);
    sync();
  });
}

TEST(GpuErrors, UnsupportedTypeAndBadShapeAreErrors) {
  REQUIRE_DEVICE();
  DeviceBuffer w(1 << 16), x(1 << 16), y(1 << 16);
  EXPECT_FALSE(cuda::quant_supported(GgmlType::Q5_K));
  try {
    cuda::matvec(GgmlType::Q5_K, w.get(), 1, 256, x.as<float>(), y.as<float>());
    FAIL() << "Q5_K matvec did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("Q5_K is not supported"), std::string::npos) << e.what();
  }
  try {
    cuda::matvec(GgmlType::Q4_K, w.get(), 1, 100, x.as<float>(), y.as<float>());
    FAIL() << "Q4_K matvec with 100 columns did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a multiple of 256"), std::string::npos) << e.what();
  }
  try {
    cuda::matvec(GgmlType::Q4_K, w.as<uint8_t>() + 4, 1, 256, x.as<float>(), y.as<float>());
    FAIL() << "misaligned Q4_K weights did not throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("16-byte aligned"), std::string::npos) << e.what();
  }
  for (GgmlType t : kTypes) EXPECT_TRUE(cuda::quant_supported(t)) << type_str(t);
}

}  // namespace
}  // namespace ds4

namespace ds4 {
namespace {
TEST(GpuMatvecQ8Rows, EachRowEqualsItsOwnMatvec) {
  REQUIRE_DEVICE();
  // A batch's rows through one weight read (matvec_q8_rows: 1, 2, 3, 4, 7, 8
  // and 11 activations, the last in two launches), quantized from strided rows,
  // must equal quantizing and multiplying each activation alone, bit for bit:
  // prefill, decode and batched decode rest on that. Also the CPU's scalar dot
  // within f32 rounding, so the batch cannot equal a wrong matvec_q8.
  for (GgmlType t : {GgmlType::Q2_K, GgmlType::IQ2_XXS, GgmlType::Q8_0, GgmlType::Q4_K}) {
    const GgmlType act = cuda::activation_type(t);
    for (int64_t rows : {int64_t{5}, int64_t{1030}}) {
      const int64_t cols = 1024, xs = cols + 256;  // input rows 1280 floats apart
      std::mt19937_64 rng(99 + ggml_type_id(t) + static_cast<uint64_t>(rows));
      const auto w = random_data(t, rows * cols, false, rng);
      const size_t ab = cuda::activation_bytes(act, cols);
      for (int n : {1, 2, 3, 4, 7, 8, 11}) {
        std::vector<float> x(static_cast<size_t>(n * xs));
        std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
        for (auto& v : x) v = uni(rng);
        DeviceBuffer dw(w.size()), dx(x.size() * 4), da(ab * static_cast<size_t>(n)), da1(ab),
            y(static_cast<size_t>(rows * n) * 4), y1(static_cast<size_t>(rows) * 4);
        dw.upload(w.data(), w.size());
        dx.upload(x.data(), x.size() * 4);
        cuda::quantize_activation_strided(act, dx.as<float>(), cols, xs, n, da.get());
        cuda::matvec_q8_rows(t, dw.get(), rows, cols, da.get(), ab, n, y.as<float>(), rows);
        std::vector<float> got(static_cast<size_t>(rows * n)), one(static_cast<size_t>(rows));
        sync();
        y.download(got.data(), got.size() * 4);
        std::vector<float> wf(static_cast<size_t>(cols));
        float worst = 0;
        for (int i = 0; i < n; ++i) {
          cuda::quantize_activation(act, dx.as<float>() + i * xs, cols, da1.get());
          cuda::matvec_q8(t, dw.get(), rows, cols, da1.get(), y1.as<float>());
          sync();
          y1.download(one.data(), one.size() * 4);
          EXPECT_EQ(std::memcmp(one.data(), got.data() + i * rows, one.size() * 4), 0)
              << type_str(t) << " rows " << rows << " n " << n << " activation " << i;
          // Against the f32 product of the dequantized weights: within the
          // activation's 8-bit rounding (loose; the bitwise check is the test).
          for (int64_t r = 0; r < rows; r += 97) {
            quant::dequantize_row(t, w.data() + static_cast<size_t>(r) * quant::row_bytes(t, cols), wf.data(), cols);
            double ref = 0, mag = 0;
            for (int64_t c = 0; c < cols; ++c) {
              ref += double(wf[static_cast<size_t>(c)]) * double(x[static_cast<size_t>(i * xs + c)]);
              mag += std::fabs(double(wf[static_cast<size_t>(c)]) * double(x[static_cast<size_t>(i * xs + c)]));
            }
            worst = std::max(worst, static_cast<float>(std::fabs(ref - got[static_cast<size_t>(i * rows + r)]) / (mag + 1e-6)));
          }
        }
        EXPECT_LT(worst, 0.05f) << type_str(t) << " rows " << rows << " n " << n;
      }
    }
  }
}
}  // namespace
}  // namespace ds4

namespace ds4 {
namespace {
TEST(GpuMatvecQ8Grouped, EachSlotEqualsItsOwnMatvec) {
  REQUIRE_DEVICE();
  // nrows x K = 3 choices among 5 experts, one activation per row (gate/up
  // form) and one per slot (down form): each slot's result must equal
  // matvec_q8 of its expert and activation, bit for bit. 13 rows share
  // experts among up to 13 slots (more than one chunk of 8); 1, 2 and 3 rows
  // take the kernels made for decode steps (chunks of 1, 2 and 4), and a row
  // naming one expert twice makes even the single-row kernel do two chunks.
  for (GgmlType t : {GgmlType::Q2_K, GgmlType::IQ2_XXS, GgmlType::Q8_0, GgmlType::Q4_K})
  for (int64_t nrows : {1, 2, 3, 13}) {
    const GgmlType act = cuda::activation_type(t);
    const int64_t rows = 300, cols = 512;
    const int K = 3, E = 5;
    std::mt19937_64 rng(4242 + ggml_type_id(t));
    const auto w = random_data(t, E * rows * cols, false, rng);
    const int64_t stride = static_cast<int64_t>(quant::row_bytes(t, cols)) * rows;
    std::vector<int32_t> sel(static_cast<size_t>(nrows * K));
    for (size_t j = 0; j < sel.size(); ++j) sel[j] = static_cast<int32_t>((j * 7 + j / 5) % E);
    if (sel.size() > 4) sel[4] = sel[3];  // one row choosing the same expert twice
    else sel[1] = sel[0];
    const size_t ab = cuda::activation_bytes(act, cols);
    for (bool per_slot : {false, true}) {
      const int64_t nact = per_slot ? nrows * K : nrows;
      std::vector<float> x(static_cast<size_t>(nact * cols));
      std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
      for (auto& v : x) v = uni(rng);
      DeviceBuffer dw(w.size()), dx(x.size() * 4), da(ab * static_cast<size_t>(nact)), ds(sel.size() * 4),
          y(static_cast<size_t>(rows * nrows * K) * 4), y1(static_cast<size_t>(rows) * 4);
      dw.upload(w.data(), w.size());
      dx.upload(x.data(), x.size() * 4);
      ds.upload(sel.data(), sel.size() * 4);
      cuda::quantize_activation_rows(act, dx.as<float>(), cols, nact, da.get());
      cuda::matvec_q8_grouped(t, dw.get(), stride, ds.as<int32_t>(), nrows, K, rows, cols, da.get(),
                              per_slot ? ab * K : ab, per_slot ? ab : 0, y.as<float>(), rows);
      std::vector<float> got(static_cast<size_t>(rows * nrows * K)), one(static_cast<size_t>(rows));
      sync();
      y.download(got.data(), got.size() * 4);
      for (int64_t j = 0; j < nrows * K; ++j) {
        const int64_t a = per_slot ? j : j / K;
        cuda::matvec_q8(t, dw.as<uint8_t>() + sel[static_cast<size_t>(j)] * stride, rows, cols,
                        da.as<uint8_t>() + static_cast<size_t>(a) * ab, y1.as<float>());
        sync();
        y1.download(one.data(), one.size() * 4);
        EXPECT_EQ(std::memcmp(one.data(), got.data() + j * rows, one.size() * 4), 0)
            << type_str(t) << (per_slot ? " per-slot" : " per-row") << " activations, " << nrows << " rows, slot " << j;
      }
    }
  }
}
}  // namespace
}  // namespace ds4

namespace ds4 {
namespace {
// A list launch's targets: random matrices of type t with these row counts,
// an output for each, and the list naming them.
struct ListCase {
  std::vector<DeviceBuffer> w, y;
  std::vector<cuda::MatvecTarget> targets;
};
ListCase list_case(GgmlType t, const std::vector<int64_t>& rows, int64_t cols, std::mt19937_64& rng) {
  ListCase c;
  for (int64_t r : rows) {
    const auto host = random_data(t, r * cols, false, rng);
    c.w.emplace_back(host.size());
    c.w.back().upload(host.data(), host.size());
    c.y.emplace_back(static_cast<size_t>(r) * 4);
  }
  for (size_t i = 0; i < rows.size(); ++i) c.targets.push_back({c.w[i].get(), rows[i], c.y[i].as<float>()});
  return c;
}
// After the list ran: each target's output bit for bit what `own(i, y1)`
// (target i's own matvec into y1) writes.
void expect_each_own(ListCase& c, const std::vector<int64_t>& rows, const std::function<void(size_t, float*)>& own,
                     const std::string& what) {
  DeviceBuffer y1(1024 * 4);
  for (size_t i = 0; i < rows.size(); ++i) {
    own(i, y1.as<float>());
    sync();
    std::vector<float> got(static_cast<size_t>(rows[i])), one(static_cast<size_t>(rows[i]));
    c.y[i].download(got.data(), got.size() * 4);
    y1.download(one.data(), one.size() * 4);
    EXPECT_EQ(std::memcmp(one.data(), got.data(), one.size() * 4), 0) << what << " target " << i;
  }
}
std::vector<float> uniform_input(int64_t cols, std::mt19937_64& rng) {
  std::vector<float> x(static_cast<size_t>(cols));
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (auto& v : x) v = uni(rng);
  return x;
}

TEST(GpuMatvecQ8List, EachTargetEqualsItsOwnMatvec) {
  REQUIRE_DEVICE();
  // Matrices of 1, 37, 300 and 1024 rows (blocks of the short ones past their
  // rows return at once) against one activation: each result bit for bit
  // matvec_q8 of its own matrix.
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::IQ2_XXS, GgmlType::Q4_K}) {
    const GgmlType act = cuda::activation_type(t);
    const int64_t cols = 512;
    const std::vector<int64_t> rows = {300, 1, 1024, 37};
    std::mt19937_64 rng(777 + ggml_type_id(t));
    ListCase c = list_case(t, rows, cols, rng);
    const std::vector<float> x = uniform_input(cols, rng);
    const size_t ab = cuda::activation_bytes(act, cols);
    DeviceBuffer dx(x.size() * 4), da(ab);
    dx.upload(x.data(), x.size() * 4);
    cuda::quantize_activation(act, dx.as<float>(), cols, da.get());
    cuda::matvec_q8_list(t, c.targets.data(), static_cast<int>(c.targets.size()), cols, da.get());
    expect_each_own(
        c, rows, [&](size_t i, float* y1) { cuda::matvec_q8(t, c.w[i].get(), rows[i], cols, da.get(), y1); },
        type_str(t));
  }
}

TEST(GpuMatvecList, EachFloatTargetEqualsItsOwnMatvec) {
  REQUIRE_DEVICE();
  // Float weights against an f32 input, shapes where matvec takes its
  // warp-per-rows form (matvec_list_ok): each result bit for bit matvec's.
  // Columns 4096 (the 16-byte form) and 100 (the one-value form); a single
  // row only for the short columns (a few long rows take a block per row).
  for (GgmlType t : {GgmlType::F16, GgmlType::F32, GgmlType::BF16}) {
    for (const int64_t cols : {int64_t{4096}, int64_t{100}}) {
      const std::vector<int64_t> rows = {512, cols < 4096 ? 1 : 128, 1024, 256};
      for (int64_t r : rows) ASSERT_TRUE(cuda::matvec_list_ok(t, r, cols)) << type_str(t) << " " << r << "x" << cols;
      std::mt19937_64 rng(991 + ggml_type_id(t) + static_cast<uint64_t>(cols));
      ListCase c = list_case(t, rows, cols, rng);
      const std::vector<float> x = uniform_input(cols, rng);
      DeviceBuffer dx(x.size() * 4);
      dx.upload(x.data(), x.size() * 4);
      cuda::matvec_list(t, c.targets.data(), static_cast<int>(c.targets.size()), cols, dx.as<float>());
      expect_each_own(
          c, rows, [&](size_t i, float* y1) { cuda::matvec(t, c.w[i].get(), rows[i], cols, dx.as<float>(), y1); },
          type_str(t) + " cols " + std::to_string(cols));
    }
  }
  // The HC mixers' shape, and one long row, take a block per row: not list
  // material.
  EXPECT_FALSE(cuda::matvec_list_ok(GgmlType::F16, 24, 16384));
  EXPECT_FALSE(cuda::matvec_list_ok(GgmlType::F16, 1, 4096));
  EXPECT_FALSE(cuda::matvec_list_ok(GgmlType::Q8_0, 512, 4096));
}
}  // namespace
}  // namespace ds4

// ---- tensor-core products (matmul_q8, matmul_q8_grouped) -------------------------
// Held to the matvec's bound against the same double-precision reference:
// the integers are the matvec's and the float terms are fewer (one per 256
// values for the K/IQ types), so k = cols / 32 + 32 still covers every
// rounding path.

namespace ds4 {
namespace {

struct MmCase {
  GgmlType type;
  int64_t rows, cols, nact;
};

// Checks y[i * y_stride + r] of every listed (matrix, activation) pair.
struct Product {
  const uint8_t* w;  // host copy of the matrix
  size_t act;        // which activation row of x
  int64_t out;       // output row index (times y_stride)
};

int64_t check_products(GgmlType t, int64_t rows, int64_t cols, const std::vector<float>& x,
                       const std::vector<Product>& prods, const std::vector<float>& y, int64_t y_stride,
                       const std::string& what) {
  const GgmlType act = cuda::activation_type(t);
  const int block = act == GgmlType::Q8_0 ? 32 : 256;
  const size_t rb = quant::row_bytes(t, cols);
  const double u = std::ldexp(1.0, -24), k = static_cast<double>(cols / 32 + 32);
  int64_t bad = 0;
  std::vector<CpuAct> qa;
  for (size_t a = 0; a * static_cast<size_t>(cols) < x.size(); ++a)
    qa.push_back(cpu_quantize(act, std::vector<float>(x.begin() + static_cast<long>(a * static_cast<size_t>(cols)),
                                                       x.begin() + static_cast<long>((a + 1) * static_cast<size_t>(cols)))));
  for (const Product& p : prods) {
    const CpuAct& q = qa[p.act];
    for (int64_t r = 0; r < rows; ++r) {
      const auto [ref, s] = row_reference(t, p.w + static_cast<size_t>(r) * rb, cols, [&](int64_t i) {
        return static_cast<double>(q.q[static_cast<size_t>(i)]) * q.d[static_cast<size_t>(i / block)];
      });
      const float got = y[static_cast<size_t>(p.out * y_stride + r)];
      const double err = std::fabs(static_cast<double>(got) - ref);
      if (!(err <= k * u * s) && bad++ < 5)
        ADD_FAILURE() << what << " output " << p.out << " row " << r << ": gpu " << got << " ref " << ref << " err "
                      << err << " > bound " << k * u * s;
    }
  }
  return bad;
}

class GpuMatmulQ8 : public ::testing::TestWithParam<MmCase> {};

TEST_P(GpuMatmulQ8, WithinRoundingBoundOfDoubleDot) {
  REQUIRE_DEVICE();
  const MmCase c = GetParam();
  const GgmlType act = cuda::activation_type(c.type);
  std::mt19937_64 rng(0x3a3a00u + ggml_type_id(c.type) * 977 + static_cast<uint64_t>(c.rows * 13 + c.cols + c.nact));
  const auto w = random_data(c.type, c.rows * c.cols, false, rng);
  std::vector<float> x;
  for (int64_t i = 0; i < c.nact; ++i) {
    const auto xi = random_activation(c.cols, act == GgmlType::Q8_0 ? 32 : 256, rng);
    x.insert(x.end(), xi.begin(), xi.end());
  }
  const size_t ab = cuda::activation_bytes(act, c.cols);
  const int64_t y_stride = c.rows + 3;  // outputs not packed: the kernel must honour the stride
  DeviceBuffer dw(w.size()), dx(x.size() * 4), da(ab * static_cast<size_t>(c.nact)),
      dy(static_cast<size_t>(c.nact * y_stride) * 4);
  dw.upload(w.data(), w.size());
  dx.upload(x.data(), x.size() * 4);
  DS4_CUDA_CHECK(cudaMemset(dy.get(), 0xff, dy.size()));
  cuda::quantize_activation_rows(act, dx.as<float>(), c.cols, c.nact, da.get());
  cuda::matmul_q8(c.type, dw.get(), c.rows, c.cols, da.get(), ab, c.nact, dy.as<float>(), y_stride);
  sync();
  std::vector<float> y(static_cast<size_t>(c.nact * y_stride));
  dy.download(y.data(), y.size() * 4);
  std::vector<Product> prods;
  for (int64_t i = 0; i < c.nact; ++i) prods.push_back({w.data(), static_cast<size_t>(i), i});
  const std::string what = type_str(c.type) + " " + std::to_string(c.rows) + "x" + std::to_string(c.cols) + " n" +
                           std::to_string(c.nact);
  EXPECT_EQ(check_products(c.type, c.rows, c.cols, x, prods, y, y_stride, what), 0) << what;
  // The padding between outputs stays as it was (0xff bytes: a NaN).
  int64_t touched = 0;
  for (int64_t i = 0; i < c.nact; ++i)
    for (int64_t r = c.rows; r < y_stride; ++r) touched += !std::isnan(y[static_cast<size_t>(i * y_stride + r)]);
  EXPECT_EQ(touched, 0) << what << ": wrote outside its outputs";
}

std::vector<MmCase> mm_cases() {
  std::vector<MmCase> v;
  for (GgmlType t : kIntTypes) {
    const int64_t qk = geometry(t).qk;
    // Token counts around every tile width (8, 16, 32, 64), rows around the
    // 64-row tile; Q8_0 also with a last k step shorter than 256.
    for (int64_t n : {1, 7, 8, 9, 31, 33, 64, 65, 130}) v.push_back({t, 100, 2 * 256, n});
    v.push_back({t, 64, 4 * qk, 16});
    v.push_back({t, 1, 256, 40});
    if (qk == 32) v.push_back({t, 77, 11 * 32, 20});
    v.push_back({t, 512, 4096, 64});
  }
  return v;
}

INSTANTIATE_TEST_SUITE_P(IntTypes, GpuMatmulQ8, ::testing::ValuesIn(mm_cases()), [](const auto& p) {
  return type_str(p.param.type) + "_" + std::to_string(p.param.rows) + "x" + std::to_string(p.param.cols) + "_n" +
         std::to_string(p.param.nact);
});

TEST(GpuMatmulQ8Grouped, AnyNumberOfSlotsPerExpert) {
  REQUIRE_DEVICE();
  // Experts chosen 0, 1, 63, 64, 65, 127, 128 and 129 times (around every
  // tile width, the counts the wide-tile kernels of other engines got wrong),
  // slots in a random order, each slot's product within the matvec bound.
  // Both activation layouts: one per row (gate, up) and one per slot (down).
  const int counts[] = {0, 1, 63, 64, 65, 127, 128, 129};
  for (GgmlType t : kIntTypes) {
    for (bool per_slot : {false, true}) {
      const GgmlType act = cuda::activation_type(t);
      const int K = 3, E = 10;
      std::vector<int32_t> sel;
      for (int e = 0; e < 8; ++e) sel.insert(sel.end(), static_cast<size_t>(counts[e]), e);
      while (sel.size() % K) sel.push_back(8);  // expert 9 stays unchosen
      std::mt19937_64 rng(0x9e0000u + ggml_type_id(t) * 3 + per_slot);
      std::shuffle(sel.begin(), sel.end(), rng);
      const auto nslots = static_cast<int64_t>(sel.size()), nrows = nslots / K;
      const int64_t rows = 80, cols = 512;
      const auto w = random_data(t, E * rows * cols, false, rng);
      const int64_t nx = per_slot ? nslots : nrows;
      std::vector<float> x;
      for (int64_t i = 0; i < nx; ++i) {
        const auto xi = random_activation(cols, act == GgmlType::Q8_0 ? 32 : 256, rng);
        x.insert(x.end(), xi.begin(), xi.end());
      }
      const size_t ab = cuda::activation_bytes(act, cols);
      const int64_t stride = static_cast<int64_t>(quant::row_bytes(t, cols)) * rows;
      const size_t scratch = cuda::matmul_q8_grouped_scratch(E, nslots);
      DeviceBuffer dw(w.size()), dx(x.size() * 4), da(ab * static_cast<size_t>(nx)), ds(sel.size() * 4),
          dy(static_cast<size_t>(nslots * rows) * 4), dscr(scratch);
      dw.upload(w.data(), w.size());
      dx.upload(x.data(), x.size() * 4);
      ds.upload(sel.data(), sel.size() * 4);
      DS4_CUDA_CHECK(cudaMemset(dy.get(), 0xff, dy.size()));
      cuda::quantize_activation_rows(act, dx.as<float>(), cols, nx, da.get());
      cuda::matmul_q8_grouped(t, dw.get(), stride, E, ds.as<int32_t>(), nrows, K, rows, cols, da.get(),
                              per_slot ? K * ab : ab, per_slot ? ab : 0, dy.as<float>(), rows, dscr.get(), scratch);
      sync();
      std::vector<float> y(static_cast<size_t>(nslots * rows));
      dy.download(y.data(), y.size() * 4);
      std::vector<Product> prods;
      for (int64_t j = 0; j < nslots; ++j)
        prods.push_back({w.data() + static_cast<size_t>(sel[static_cast<size_t>(j)] * stride),
                         static_cast<size_t>(per_slot ? j : j / K), j});
      const std::string what = type_str(t) + (per_slot ? " per-slot" : " per-row");
      EXPECT_EQ(check_products(t, rows, cols, x, prods, y, rows, what), 0) << what;
    }
  }
}

TEST(GpuMatmulQ8Grouped, WindowsOfExpertsEqualTheWholeLaunch) {
  REQUIRE_DEVICE();
  // The experts taken a window at a time, each window's matrices copied into a
  // buffer of their own (as host-resident experts are streamed in), give every
  // slot the same bits as one launch over all experts, and a window leaves the
  // slots of experts outside it as they were.
  for (GgmlType t : kIntTypes) {
    const GgmlType act = cuda::activation_type(t);
    const int K = 4, E = 9;
    const int64_t nrows = 50, rows = 70, cols = 512, nslots = nrows * K;
    std::mt19937_64 rng(0x9e1000u + ggml_type_id(t));
    std::vector<int32_t> sel(static_cast<size_t>(nslots));
    for (auto& e : sel) e = static_cast<int32_t>(rng() % 8);  // expert 8 stays unchosen
    const auto w = random_data(t, E * rows * cols, false, rng);
    std::vector<float> x;
    for (int64_t i = 0; i < nrows; ++i) {
      const auto xi = random_activation(cols, act == GgmlType::Q8_0 ? 32 : 256, rng);
      x.insert(x.end(), xi.begin(), xi.end());
    }
    const size_t ab = cuda::activation_bytes(act, cols);
    const auto stride = static_cast<int64_t>(quant::row_bytes(t, cols)) * rows;
    const size_t scratch = cuda::matmul_q8_grouped_scratch(E, nslots);
    const size_t ybytes = static_cast<size_t>(nslots * rows) * 4;
    DeviceBuffer dw(w.size()), dx(x.size() * 4), da(ab * static_cast<size_t>(nrows)), ds(sel.size() * 4), dy(ybytes),
        dyw(ybytes), dscr(scratch);
    dw.upload(w.data(), w.size());
    dx.upload(x.data(), x.size() * 4);
    ds.upload(sel.data(), sel.size() * 4);
    DS4_CUDA_CHECK(cudaMemset(dy.get(), 0xff, ybytes));
    DS4_CUDA_CHECK(cudaMemset(dyw.get(), 0xff, ybytes));
    cuda::quantize_activation_rows(act, dx.as<float>(), cols, nrows, da.get());
    cuda::matmul_q8_grouped(t, dw.get(), stride, E, ds.as<int32_t>(), nrows, K, rows, cols, da.get(), ab, 0,
                            dy.as<float>(), rows, dscr.get(), scratch);
    std::vector<float> whole(static_cast<size_t>(nslots * rows)), part(whole.size());
    dy.download(whole.data(), ybytes);
    const std::string what = type_str(t);
    for (auto [lo, hi] : {std::pair<int64_t, int64_t>{0, 3}, {3, 4}, {4, 9}}) {
      const auto off = static_cast<size_t>(lo * stride), len = static_cast<size_t>((hi - lo) * stride);
      DeviceBuffer part_w(len);
      part_w.upload(w.data() + off, len);
      cuda::matmul_q8_grouped(t, part_w.get(), stride, E, ds.as<int32_t>(), nrows, K, rows, cols, da.get(), ab, 0,
                              dyw.as<float>(), rows, dscr.get(), scratch, nullptr, {lo, hi});
      sync();
      dyw.download(part.data(), ybytes);
      int64_t wrong = 0, outside = 0;
      for (int64_t j = 0; j < nslots; ++j) {
        const int32_t e = sel[static_cast<size_t>(j)];
        const auto at = static_cast<size_t>(j * rows);
        if (e < hi) {  // computed by this window or an earlier one
          wrong += std::memcmp(&part[at], &whole[at], static_cast<size_t>(rows) * 4) != 0;
        } else {
          for (int64_t r = 0; r < rows; ++r) {
            uint32_t b;
            std::memcpy(&b, &part[at + static_cast<size_t>(r)], 4);
            outside += b != 0xffffffffu;
          }
        }
      }
      EXPECT_EQ(wrong, 0) << what << ": window [" << lo << ", " << hi << ") differs from the whole launch";
      EXPECT_EQ(outside, 0) << what << ": window [" << lo << ", " << hi << ") wrote slots of other experts";
    }
  }
  const int32_t sel[2] = {0, 1};
  DeviceBuffer ds(sizeof sel), dw(34 * 2), da(256), dy(64), dscr(cuda::matmul_q8_grouped_scratch(2, 2));
  ds.upload(sel, sizeof sel);
  try {
    cuda::matmul_q8_grouped(GgmlType::Q8_0, dw.get(), 34, 2, ds.as<int32_t>(), 2, 1, 1, 32, da.get(), 48, 0,
                            dy.as<float>(), 1, dscr.get(), dscr.size(), nullptr, {1, 3});
    ADD_FAILURE() << "no error for a window past the last expert";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expert window [1, 3)"), std::string::npos) << e.what();
  }
}

TEST(GpuMatmulQ8Grouped, TooLittleScratchIsAnError) {
  REQUIRE_DEVICE();
  const int32_t sel[2] = {0, 1};
  DeviceBuffer ds(sizeof sel), dw(34 * 2), da(256), dy(64), dscr(16);
  ds.upload(sel, sizeof sel);
  try {
    cuda::matmul_q8_grouped(GgmlType::Q8_0, dw.get(), 34, 2, ds.as<int32_t>(), 2, 1, 1, 32, da.get(), 48, 0,
                            dy.as<float>(), 1, dscr.get(), 16);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scratch of 16 bytes"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ds4

namespace ds4 {
namespace {

TEST(GpuMatmulFloat, WithinRoundingBoundOfDoubleDot) {
  REQUIRE_DEVICE();
  // Float weights against many rows: row and token counts around the 64
  // tile, columns not a multiple of the 32-column step, a strided input and
  // output; shapes split into column slices (few rows, many columns: the
  // mixers' 24 x 16384, the router's 256 x 4096) and not. Bound: a sum of
  // cols products in any order, k = cols + 8. A row's result is bit for bit
  // the same whatever the number of rows beside it.
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16}) {
    for (const auto& [rows, cols, n] : {std::tuple<int64_t, int64_t, int64_t>{100, 200, 1}, {64, 96, 16}, {130, 1000, 65},
                                        {7, 4096, 130}, {24, 16384, 70}, {256, 4096, 33}, {4096, 1000, 17}}) {
      std::mt19937_64 rng(0xf10a7u + ggml_type_id(t) * 31 + static_cast<uint64_t>(rows + cols + n));
      const auto w = random_data(t, rows * cols, false, rng);
      const int64_t xs = cols + 5, ys = rows + 3;
      std::vector<float> x(static_cast<size_t>(n * xs));
      std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
      for (auto& v : x) v = uni(rng);
      DeviceBuffer dw(w.size()), dx(x.size() * 4), dy(static_cast<size_t>(n * ys) * 4);
      dw.upload(w.data(), w.size());
      dx.upload(x.data(), x.size() * 4);
      DS4_CUDA_CHECK(cudaMemset(dy.get(), 0xff, dy.size()));
      const size_t sb = cuda::matmul_float_scratch(rows, cols, n);
      EXPECT_LE(sb, cuda::matmul_float_scratch_bound(n));
      DeviceBuffer scratch(std::max<size_t>(sb, 4));
      if (sb > 0) {
        EXPECT_THROW(cuda::matmul_float(t, dw.get(), rows, cols, dx.as<float>(), xs, n, dy.as<float>(), ys,
                                        scratch.as<float>(), sb - 4),
                     std::runtime_error)
            << "too little scratch must be an error";
      }
      cuda::matmul_float(t, dw.get(), rows, cols, dx.as<float>(), xs, n, dy.as<float>(), ys, scratch.as<float>(), sb);
      sync();
      std::vector<float> y(static_cast<size_t>(n * ys));
      dy.download(y.data(), y.size() * 4);
      // The last row alone.
      DeviceBuffer d1(static_cast<size_t>(rows) * 4);
      cuda::matmul_float(t, dw.get(), rows, cols, dx.as<float>() + (n - 1) * xs, xs, 1, d1.as<float>(), rows,
                         scratch.as<float>(), sb);
      sync();
      std::vector<float> y1(static_cast<size_t>(rows));
      d1.download(y1.data(), y1.size() * 4);
      EXPECT_EQ(std::memcmp(y1.data(), y.data() + (n - 1) * ys, y1.size() * 4), 0)
          << type_str(t) << " " << rows << "x" << cols << ": a row alone differs from the same row among " << n;
      const size_t rb = quant::row_bytes(t, cols);
      const double u = std::ldexp(1.0, -24), k = static_cast<double>(cols + 8);
      int64_t bad = 0, touched = 0;
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t r = 0; r < rows; ++r) {
          const auto [ref, sum] = row_reference(t, w.data() + static_cast<size_t>(r) * rb, cols, [&](int64_t c) {
            return static_cast<double>(x[static_cast<size_t>(i * xs + c)]);
          });
          const float got = y[static_cast<size_t>(i * ys + r)];
          if (!(std::fabs(static_cast<double>(got) - ref) <= k * u * sum) && bad++ < 5)
            ADD_FAILURE() << type_str(t) << " " << rows << "x" << cols << " n" << n << " row " << r << " of " << i
                          << ": gpu " << got << " ref " << ref;
        }
        for (int64_t r = rows; r < ys; ++r) touched += !std::isnan(y[static_cast<size_t>(i * ys + r)]);
      }
      EXPECT_EQ(bad, 0) << type_str(t);
      EXPECT_EQ(touched, 0) << type_str(t) << ": wrote outside its outputs";
    }
  }
}

}  // namespace
}  // namespace ds4
