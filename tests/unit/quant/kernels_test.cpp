// SIMD kernels against the scalar references, and matvec/matmul against
// dequantize + double-precision dot.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "quant/blocks.h"
#include "quant/iq_tables.h"
#include "quant/kernels.h"
#include "quant/quant.h"
#include "test_data.h"
#include "util/error.h"
#include "util/float16.h"
#include "util/thread_pool.h"

namespace ds4::quant {
namespace {

const GgmlType kAllTypes[] = {GgmlType::F32,    GgmlType::F16,    GgmlType::BF16,    GgmlType::Q8_0,  GgmlType::Q4_0,
                              GgmlType::Q4_1,   GgmlType::Q5_0,   GgmlType::Q5_1,    GgmlType::IQ4_NL, GgmlType::MXFP4,
                              GgmlType::Q2_K,   GgmlType::Q3_K,   GgmlType::Q4_K,    GgmlType::Q5_K,  GgmlType::Q6_K,
                              GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S,  GgmlType::IQ3_XXS, GgmlType::IQ3_S,
                              GgmlType::IQ1_S,  GgmlType::IQ1_M,  GgmlType::IQ4_XS};

std::vector<uint8_t> quantize_act(const DotKernel& k, const std::vector<float>& x) {
  if (k.act == GgmlType::F32) {
    std::vector<uint8_t> b(x.size() * 4);
    std::memcpy(b.data(), x.data(), b.size());
    return b;
  }
  std::vector<uint8_t> b(row_bytes(k.act, static_cast<int64_t>(x.size())));
  if (k.act == GgmlType::Q8_0) quantize_row_q8_0(x.data(), b.data(), static_cast<int64_t>(x.size()));
  else quantize_row_q8_k(x.data(), b.data(), static_cast<int64_t>(x.size()));
  if (k.order) k.order(b.data(), static_cast<int64_t>(x.size()));  // the kernel's own activation order
  return b;
}

// Sum of |w_i a_i| with both sides dequantized: the scale of float rounding.
double abs_dot(GgmlType t, const uint8_t* w, GgmlType act, const uint8_t* a, int64_t n) {
  std::vector<float> wf(static_cast<size_t>(n)), af(static_cast<size_t>(n));
  dequantize_row(t, w, wf.data(), n);
  dequantize_row(act, a, af.data(), n);
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += std::fabs(static_cast<double>(wf[i]) * af[i]);
  return s;
}

TEST(Kernels, SimdEqualsScalar) {
  const Isa simd[] = {Isa::Avx2, Isa::Avx512, Isa::Neon};
  int checked = 0;
  for (GgmlType t : kAllTypes) {
    const DotKernel* ref = find_kernel(t, Isa::Scalar);
    ASSERT_NE(ref, nullptr) << ggml_type_name(t);
    for (Isa isa : simd) {
      const DotKernel* k = find_kernel(t, isa);
      if (!k) continue;
      ASSERT_EQ(k->act, ref->act) << ggml_type_name(t);
      for (int64_t cols : {256, 768, 4096}) {
        const auto w = test::random_rows(t, 3, cols, static_cast<uint32_t>(cols) + ggml_type_id(t));
        const auto x = test::random_floats(static_cast<size_t>(cols), 99, 2.0f);
        const auto a = quantize_act(*ref, x), ak = quantize_act(*k, x);
        const size_t rb = row_bytes(t, cols);
        for (int r = 0; r < 3; ++r) {
          const uint8_t* wr = w.data() + rb * static_cast<size_t>(r);
          const float got = k->dot(cols, wr, ak.data()), want = ref->dot(cols, wr, a.data());
          // Integer parts are exact; only float summation order differs.
          const double bound = 2e-6 * abs_dot(t, wr, ref->act == GgmlType::F32 ? GgmlType::F32 : ref->act, a.data(), cols) + 1e-30;
          EXPECT_LE(std::fabs(static_cast<double>(got) - want), bound)
              << ggml_type_name(t) << " " << isa_name(isa) << " cols " << cols << " row " << r;
        }
      }
      ++checked;
    }
  }
#if defined(__x86_64__)
  if (cpu_has(Isa::Avx2)) {
    EXPECT_GE(checked, 8);  // F32 F16 BF16 Q8_0 MXFP4 Q2_K Q4_K IQ2_XXS
  }
#elif defined(__aarch64__)
  EXPECT_GE(checked, 8);  // the same eight in NEON (scripts/test-aarch64 runs this under qemu)
#endif
}

// Blocks of random bytes (every byte pattern is a valid block of these types,
// once the f16 scale fields hold ordinary numbers): all grid indices, signs,
// scale and min nibbles occur, which quantizer output need not cover.
TEST(Kernels, SimdEqualsScalarOnRandomBlocks) {
  struct Case {
    GgmlType t;
    std::vector<int> f16_offsets;
  };
  const Case cases[] = {{GgmlType::Q2_K, {80, 82}}, {GgmlType::Q4_K, {0, 2}}, {GgmlType::IQ2_XXS, {0}},
                        {GgmlType::Q8_0, {0}}};
  const int64_t cols = 4096;
  for (const Case& c : cases) {
    const DotKernel* ref = find_kernel(c.t, Isa::Scalar);
    ASSERT_NE(ref, nullptr);
    const size_t rb = row_bytes(c.t, cols);
    const size_t bb = require_ops(c.t, "test").block_bytes;
    std::mt19937 rng(1234 + ggml_type_id(c.t));
    std::uniform_real_distribution<float> ud(0.01f, 0.1f);
    std::vector<uint8_t> w(rb * 4);
    for (auto& b : w) b = static_cast<uint8_t>(rng());
    for (size_t off = 0; off < w.size(); off += bb)
      for (int f : c.f16_offsets) {
        const uint16_t h = f32_to_f16(ud(rng));
        std::memcpy(w.data() + off + f, &h, 2);
      }
    const auto x = test::random_floats(static_cast<size_t>(cols), 77, 2.0f);
    const auto a = quantize_act(*ref, x);
    for (Isa isa : {Isa::Avx2, Isa::Avx512, Isa::Neon}) {
      const DotKernel* k = find_kernel(c.t, isa);
      if (!k) continue;
      const auto ak = quantize_act(*k, x);
      for (int r = 0; r < 4; ++r) {
        const uint8_t* wr = w.data() + rb * static_cast<size_t>(r);
        const float got = k->dot(cols, wr, ak.data()), want = ref->dot(cols, wr, a.data());
        const double bound = 2e-6 * abs_dot(c.t, wr, ref->act, a.data(), cols) + 1e-30;
        EXPECT_LE(std::fabs(static_cast<double>(got) - want), bound) << ggml_type_name(c.t) << " " << isa_name(isa) << " row " << r;
      }
    }
  }
}

// dotn (one weight row against several activation rows) equals dot for each
// row bit for bit, for every kernel that has one, on quantizer output and on
// random blocks, for 1..9 rows (the 4-row passes and every remainder).
TEST(Kernels, DotNEqualsDot) {
  int checked = 0;
  const int64_t cols = 2048;
  for (GgmlType t : kAllTypes) {
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon}) {
      const DotKernel* k = find_kernel(t, isa);
      if (!k || !k->dotn) continue;
      ++checked;
      auto w = test::random_rows(t, 2, cols, 31 + ggml_type_id(t));
      // Second row: random bytes with ordinary f16 scales (Q2_K: d, dmin at
      // 80, 82; Q4_K at 0, 2; the others' d at 0).
      const size_t rb = row_bytes(t, cols), bb = require_ops(t, "test").block_bytes;
      std::mt19937 rng(5);
      for (size_t i = rb; i < 2 * rb; ++i) w[i] = static_cast<uint8_t>(rng());
      // (For MXFP4 the f16 at 0 makes the e8m0 exponent byte 0x66: 2^-25.)
      const std::vector<size_t> f16_at = t == GgmlType::Q2_K   ? std::vector<size_t>{80, 82}
                                         : t == GgmlType::Q4_K ? std::vector<size_t>{0, 2}
                                                               : std::vector<size_t>{0};
      for (size_t off = rb; off < 2 * rb; off += bb)
        for (size_t f : f16_at) {
          const uint16_t h = f32_to_f16(0.05f);
          std::memcpy(w.data() + off + f, &h, 2);
        }
      const int max_rows = 17;  // past two passes of eight (dotn_iq2_xxs_rows)
      std::vector<uint8_t> acts;
      for (int j = 0; j < max_rows; ++j) {
        const auto a = quantize_act(*k, test::random_floats(static_cast<size_t>(cols), 100 + static_cast<uint32_t>(j), 2.0f));
        acts.insert(acts.end(), a.begin(), a.end());
      }
      const size_t ab = acts.size() / max_rows;
      // Random bytes are no float row (NaNs, infinities): float kernels take
      // the generated row only (FloatDotNEqualsDotWithTails covers them more).
      const bool float_weights = t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16;
      for (int r = 0; r < (float_weights ? 1 : 2); ++r)
        for (int nact = 1; nact <= max_rows; ++nact) {
          std::vector<float> out(static_cast<size_t>(nact), NAN);
          k->dotn(cols, w.data() + rb * r, acts.data(), ab, nact, out.data());
          for (int j = 0; j < nact; ++j) {
            const float want = k->dot(cols, w.data() + rb * r, acts.data() + ab * j);
            ASSERT_EQ(out[j], want) << ggml_type_name(t) << " " << isa_name(isa) << " row " << r << " nact " << nact << " act " << j;
          }
        }
    }
  }
#if defined(__x86_64__)
  if (cpu_has(Isa::Avx2)) {
    EXPECT_GE(checked, 5);  // AVX2 Q8_0, MXFP4, Q2_K, Q4_K, IQ2_XXS
  }
#endif
}

// The tile kernels (dotnm: several weight rows by several activation rows)
// against dot bit for bit, for every tile shape (1-4 weight rows, 1-9
// activation rows), an even and an odd number of blocks (the odd last block
// takes its own path), and a weight row of random bytes (extreme quants).
TEST(Kernels, DotNMEqualsDot) {
  int checked = 0;
  for (GgmlType t : kAllTypes) {
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon}) {
      const DotKernel* k = find_kernel(t, isa);
      if (!k || !k->dotnm) continue;
      const size_t bb = require_ops(t, "test").block_bytes;
      for (int64_t cols : {int64_t{2048}, int64_t{2080}, int64_t{32}}) {
        if (cols % static_cast<int64_t>(require_ops(t, "test").block_size) != 0) continue;
        ++checked;
        const int nw_max = 4, na_max = 9;
        auto w = test::random_rows(t, nw_max, cols, 57 + ggml_type_id(t) + static_cast<uint32_t>(cols));
        const size_t rb = row_bytes(t, cols);
        std::mt19937 rng(9);
        for (size_t i = 2 * rb; i < 3 * rb; ++i) w[i] = static_cast<uint8_t>(rng());  // row 2: random bytes
        for (size_t off = 2 * rb; off < 3 * rb; off += bb) {  // with an ordinary f16 scale at 0
          const uint16_t h = f32_to_f16(0.05f);
          std::memcpy(w.data() + off, &h, 2);
        }
        std::vector<uint8_t> acts;
        for (int j = 0; j < na_max; ++j) {
          const auto a = quantize_act(*k, test::random_floats(static_cast<size_t>(cols), 300 + static_cast<uint32_t>(j), 2.0f));
          acts.insert(acts.end(), a.begin(), a.end());
        }
        const size_t ab = acts.size() / na_max;
        for (int nw = 1; nw <= nw_max; ++nw)
          for (int na = 1; na <= na_max; ++na) {
            std::vector<float> out(static_cast<size_t>(nw * na), NAN);
            k->dotnm(cols, w.data(), rb, nw, acts.data(), ab, na, out.data());
            for (int r = 0; r < nw; ++r)
              for (int j = 0; j < na; ++j) {
                const float want = k->dot(cols, w.data() + rb * r, acts.data() + ab * j);
                ASSERT_EQ(out[static_cast<size_t>(r * na + j)], want)
                    << ggml_type_name(t) << " " << isa_name(isa) << " cols " << cols << " tile " << nw << "x" << na
                    << " pair " << r << "," << j;
              }
          }
      }
    }
  }
  // AVX-512 VNNI has the Q8_0 tiles: emulated in test_quant_emu512 (except
  // its DS4_QUANT_NO_VNNI run), native where the CPU has VNNI.
#if defined(DS4_EMULATE_AVX512)
  const bool vnni = !std::getenv("DS4_QUANT_NO_VNNI");
#elif defined(__x86_64__)
  const bool vnni = cpu_has(Isa::Avx512) && __builtin_cpu_supports("avx512vnni") && !std::getenv("DS4_QUANT_NO_VNNI");
#else
  const bool vnni = false;
#endif
  if (vnni) {
    EXPECT_GE(checked, 1);
  }
}

// The float kernels' dotn against dot bit for bit where rows do not fill the
// vector steps (the scalar tail of each row), for every ISA present, and
// against the double-precision dot within a sum's rounding.
TEST(Kernels, FloatDotNEqualsDotWithTails) {
  int checked = 0;
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16}) {
    for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon}) {
      const DotKernel* k = find_kernel(t, isa);
      if (!k || !k->dotn) continue;
      for (int64_t cols : {int64_t{7}, int64_t{45}, int64_t{2061}}) {
        ++checked;
        const auto w = test::random_rows(t, 1, cols, 3 + static_cast<uint32_t>(cols));
        std::vector<float> wf(static_cast<size_t>(cols));
        dequantize_row(t, w.data(), wf.data(), cols);
        const int max_rows = 6;
        const auto x = test::random_floats(static_cast<size_t>(cols * max_rows), 77 + static_cast<uint32_t>(cols), 3.0f);
        const size_t stride = static_cast<size_t>(cols) * sizeof(float);
        for (int nact = 1; nact <= max_rows; ++nact) {
          std::vector<float> out(static_cast<size_t>(nact), NAN);
          k->dotn(cols, w.data(), x.data(), stride, nact, out.data());
          for (int j = 0; j < nact; ++j) {
            const float* xj = x.data() + static_cast<size_t>(j * cols);
            ASSERT_EQ(out[static_cast<size_t>(j)], k->dot(cols, w.data(), xj))
                << ggml_type_name(t) << " " << isa_name(isa) << " cols " << cols << " nact " << nact << " act " << j;
            double want = 0, mag = 0;
            for (int64_t c = 0; c < cols; ++c) {
              want += static_cast<double>(wf[static_cast<size_t>(c)]) * xj[c];
              mag += std::fabs(static_cast<double>(wf[static_cast<size_t>(c)]) * xj[c]);
            }
            EXPECT_LE(std::fabs(out[static_cast<size_t>(j)] - want), static_cast<double>(cols + 8) * 0x1p-24 * mag)
                << ggml_type_name(t) << " " << isa_name(isa) << " cols " << cols;
          }
        }
      }
    }
  }
#if defined(__x86_64__)
  if (cpu_has(Isa::Avx2)) {
    EXPECT_GE(checked, 9);  // AVX2: F32, F16, BF16 at three widths
  }
#endif
}

// matvec/matmul (best kernel, several thread counts, odd row counts) against
// dequantized weights times float activations in double precision. The bound
// covers activation quantization: half a step of the activation scale per
// element, times |w|.
TEST(Matvec, EqualsDequantizedDot) {
  ThreadPool pool1(1), pool2(2), pool3(3), pool8(8);
  ThreadPool* pools[] = {nullptr, &pool1, &pool2, &pool3, &pool8};
  // 9472 columns: rows long enough to be walked in 4096-column tiles, with a
  // partial last tile.
  for (const auto& [cols, rows] : {std::pair<int64_t, int64_t>{512, 37}, {9472, 5}})
  for (GgmlType t : kAllTypes) {
    const DotKernel* k = best_kernel(t);
    ASSERT_NE(k, nullptr);
    const int64_t nact = 3;
    const auto w = test::random_rows(t, rows, cols, 7 + ggml_type_id(t));
    const auto X = test::random_floats(static_cast<size_t>(nact * cols), 5);
    std::vector<float> wf(static_cast<size_t>(rows * cols));
    const size_t rb = row_bytes(t, cols);
    for (int64_t r = 0; r < rows; ++r) dequantize_row(t, w.data() + rb * r, wf.data() + r * cols, cols);
    const int blk = k->act == GgmlType::Q8_0 ? 32 : k->act == GgmlType::Q8_K ? 256 : 0;
    for (ThreadPool* p : pools) {
      std::vector<float> Y(static_cast<size_t>(nact * rows), NAN);
      matmul(t, w.data(), rows, cols, X.data(), nact, Y.data(), p);
      std::vector<float> y1(static_cast<size_t>(rows), NAN);
      matvec(t, w.data(), rows, cols, X.data() + cols, y1.data(), p);
      for (int64_t j = 0; j < nact; ++j)
        for (int64_t r = 0; r < rows; ++r) {
          double want = 0, bound = 0, mag = 0;
          for (int64_t b0 = 0; b0 < cols; b0 += (blk ? blk : cols)) {
            const int64_t len = blk ? blk : cols;
            float amax = 0;
            for (int64_t i = b0; i < b0 + len; ++i) amax = std::max(amax, std::fabs(X[j * cols + i]));
            const double step = blk ? amax / 127.0 : 0.0;
            for (int64_t i = b0; i < b0 + len; ++i) {
              const double wv = wf[r * cols + i], xv = X[j * cols + i];
              want += wv * xv;
              bound += std::fabs(wv) * step * 0.5;
              mag += std::fabs(wv * xv);
            }
          }
          bound += 1e-5 * mag + 1e-30;
          const float got = Y[j * rows + r];
          ASSERT_LE(std::fabs(got - want), bound) << ggml_type_name(t) << " row " << r << " act " << j;
          if (j == 1) {
            ASSERT_EQ(got, y1[r]) << ggml_type_name(t) << ": matvec differs from matmul";
          }
        }
    }
  }
}

// A matmul over many activation rows (dotn calls of 16 rows, 4 per kernel
// pass, and the remainders) equals one matvec per activation row bit for bit.
TEST(Matvec, ManyRowMatmulEqualsMatvecs) {
  ThreadPool pool3(3);
  const int64_t rows = 37, cols = 9472, n = 41;
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q4_K, GgmlType::IQ2_XXS, GgmlType::F16}) {
    const auto w = test::random_rows(t, rows, cols, 17 + ggml_type_id(t));
    const auto X = test::random_floats(static_cast<size_t>(n * cols), 9);
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool3}) {
      std::vector<float> Y(static_cast<size_t>(n * rows), NAN), y(static_cast<size_t>(rows));
      matmul(t, w.data(), rows, cols, X.data(), n, Y.data(), p);
      for (int64_t j = 0; j < n; ++j) {
        matvec(t, w.data(), rows, cols, X.data() + j * cols, y.data(), p);
        for (int64_t r = 0; r < rows; ++r) ASSERT_EQ(Y[j * rows + r], y[r]) << ggml_type_name(t) << " row " << r << " act " << j;
      }
    }
  }
}

// A batch of matvecs (mixed types and widths, activations shared between jobs
// and not, empty jobs, rows of one pool range spanning several jobs) equals one
// matvec per job bit for bit, on no pool and on pools of 2 and 5 threads.
TEST(Matvec, BatchEqualsOneMatvecPerJob) {
  ThreadPool pool2(2), pool5(5);
  struct Spec {
    GgmlType t;
    int64_t rows, cols;
    int x;  // which activation: jobs with the same x share it
  };
  const Spec specs[] = {{GgmlType::IQ2_XXS, 37, 2048, 0}, {GgmlType::IQ2_XXS, 29, 2048, 0}, {GgmlType::Q2_K, 0, 2048, 0},
                        {GgmlType::Q2_K, 41, 512, 1},     {GgmlType::Q8_0, 3, 2048, 0},     {GgmlType::F16, 5, 2048, 0},
                        {GgmlType::Q4_K, 1, 512, 2},      {GgmlType::MXFP4, 64, 512, 1},    {GgmlType::Q2_K, 37, 2048, 3}};
  std::vector<std::vector<uint8_t>> w;
  std::vector<std::vector<float>> xs;
  for (int i = 0; i < 4; ++i) xs.push_back(test::random_floats(2048, 40 + static_cast<uint32_t>(i), 3.0f));
  for (const Spec& s : specs) w.push_back(test::random_rows(s.t, std::max<int64_t>(s.rows, 1), s.cols, 60 + static_cast<uint32_t>(w.size())));
  for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &pool2, &pool5}) {
    std::vector<std::vector<float>> got, want;
    std::vector<MatvecJob> jobs;
    for (size_t j = 0; j < std::size(specs); ++j) {
      const Spec& s = specs[j];
      got.emplace_back(static_cast<size_t>(s.rows) + 1, NAN);
      want.emplace_back(static_cast<size_t>(s.rows) + 1, NAN);
      matvec(s.t, w[j].data(), s.rows, s.cols, xs[static_cast<size_t>(s.x)].data(), want.back().data(), p);
    }
    for (size_t j = 0; j < std::size(specs); ++j) {
      const Spec& s = specs[j];
      jobs.push_back({s.t, w[j].data(), s.rows, s.cols, xs[static_cast<size_t>(s.x)].data(), got[j].data()});
    }
    matvec_batch(jobs, p);
    for (size_t j = 0; j < std::size(specs); ++j) {
      for (int64_t r = 0; r < specs[j].rows; ++r)
        ASSERT_EQ(got[j][static_cast<size_t>(r)], want[j][static_cast<size_t>(r)]) << "job " << j << " row " << r;
      // Nothing past the job's rows is written.
      EXPECT_TRUE(std::isnan(got[j][static_cast<size_t>(specs[j].rows)])) << "job " << j;
    }
  }
  matvec_batch({}, &pool2);  // an empty batch is a no-op
}

TEST(Matvec, UnsupportedTypeThrows) {
  std::vector<uint8_t> w(1024);
  std::vector<float> x(256), y(1);
  EXPECT_THROW(matvec(GgmlType::TQ1_0, w.data(), 1, 256, x.data(), y.data()), Error);
  try {
    require_ops(GgmlType::TQ2_0, "blk.3.ffn_down_exps.weight");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.3.ffn_down_exps.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("TQ2_0"), std::string::npos) << e.what();
  }
  EXPECT_THROW(matvec(GgmlType::Q4_K, w.data(), 1, 100, x.data(), y.data()), Error);  // 100 % 256 != 0
}

TEST(ActQuant, Q8KInvariants) {
  const auto x = test::random_floats(1024, 3, 5.0f);
  std::vector<uint8_t> b(row_bytes(GgmlType::Q8_K, 1024));
  quantize_row_q8_k(x.data(), b.data(), 1024);
  std::vector<float> y(1024);
  dequantize_row(GgmlType::Q8_K, b.data(), y.data(), 1024);
  for (int blk = 0; blk < 4; ++blk) {
    float amax = 0;
    for (int i = 0; i < 256; ++i) amax = std::max(amax, std::fabs(x[blk * 256 + i]));
    for (int i = 0; i < 256; ++i) EXPECT_LE(std::fabs(x[blk * 256 + i] - y[blk * 256 + i]), amax / 127 * 0.5001f);
  }
}

// The SIMD activation quantizers write exactly the reference's bytes (the CUDA
// backend reproduces them too): random rows at several magnitudes, all-zero and
// one-hot blocks, exact half steps (ties of both rounding rules), and for Q8_K,
// whose reference is plain arithmetic, infinities and NaN.
TEST(ActQuant, SimdEqualsScalar) {
  const int64_t n = 1024;
  std::vector<std::vector<float>> inputs;
  for (float scale : {1e-30f, 1e-3f, 1.0f, 3e4f, 1e30f}) inputs.push_back(test::random_floats(n, 11, scale));
  inputs.push_back(std::vector<float>(n, 0.0f));
  auto one_hot = std::vector<float>(n, 0.0f);
  for (int64_t i = 0; i < n; i += 37) one_hot[i] = -0.75f;
  inputs.push_back(one_hot);
  std::vector<float> ties(n);  // amax 127 makes the scale exactly 1: x * id = x
  for (int64_t i = 0; i < n; ++i) ties[i] = i % 32 == 0 ? 127.0f : static_cast<float>(i % 64 - 32) + 0.5f;
  inputs.push_back(ties);
  for (GgmlType act : {GgmlType::Q8_0, GgmlType::Q8_K}) {
    auto specials = test::random_floats(n, 12);
    specials[3] = INFINITY;
    specials[300] = -INFINITY;
    specials[600] = NAN;
    for (int64_t i = 768; i < 1024; ++i) specials[i] = NAN;
    std::vector<std::vector<float>> all = inputs;
    if (act == GgmlType::Q8_K) all.push_back(specials);
    const ActQuantFn ref = find_act_quant(act, Isa::Scalar);
    ASSERT_NE(ref, nullptr);
    for (Isa isa : {Isa::Avx2, Isa::Avx512, Isa::Neon}) {
      const ActQuantFn f = find_act_quant(act, isa);
      if (!f) continue;
      for (size_t c = 0; c < all.size(); ++c) {
        std::vector<uint8_t> want(row_bytes(act, n), 0xAA), got(want.size(), 0x55);
        ref(all[c].data(), want.data(), n);
        f(all[c].data(), got.data(), n);
        EXPECT_EQ(want, got) << ggml_type_name(act) << " " << isa_name(isa) << " input " << c;
      }
    }
  }
}

}  // namespace
}  // namespace ds4::quant

namespace ds4::quant {
namespace {
// The AVX-512 IQ2_XXS kernel stores grid entries as 2-bit codes of three levels.
TEST(Iq2Grid, ThreeLevels) {
  for (int e = 0; e < 256; ++e)
    for (int j = 0; j < 8; ++j) {
      const int v = iq2xxs_grid[e][j];
      EXPECT_TRUE(v == 8 || v == 25 || v == 43) << e << " " << j << ": " << v;
    }
}

// The SIMD IQ2_XXS kernels compute the sign bytes instead of reading the
// format's table: they must agree for every index in every position.
TEST(Iq2Signs, ComputedEqualsTable) {
  for (uint32_t k = 0; k < 128; ++k)
    for (int pos = 0; pos < 4; ++pos) {
      const uint32_t v = (k << (7 * pos)) | (0xAu << 28);  // scale bits must not leak in
      EXPECT_EQ((iq2_sign_bytes(v) >> (8 * pos)) & 0xFF, ksigns_iq2xs[k]) << k << " at " << pos;
    }
}
}  // namespace
}  // namespace ds4::quant
