// The CUDA forward kernels (backend/cuda/fwd_kernels.h) against the CPU
// reference functions they mirror, on random inputs. Kernels that keep the
// CPU's operation order (QAT rounding, Hadamard, indexer selection) must agree
// exactly; the others within a few f32 ulps of the values' scale.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/layer_math.h"
#include "backend/cpu/numerics.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/rope.h"
#include "backend/cuda/cuda_buffer.h"
#include "backend/cuda/cuda_check.h"
#include "backend/cuda/cuda_quant.h"
#include "backend/cuda/fwd_kernels.h"
#include "util/float16.h"

namespace {

using ds4::cuda::DeviceBuffer;
namespace fwd = ds4::cuda::fwd;
using Vec = std::vector<float>;

Vec randv(size_t n, float scale, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  Vec v(n);
  for (float& x : v) x = d(g);
  return v;
}

DeviceBuffer dev(const Vec& v) {
  DeviceBuffer b(v.size() * sizeof(float));
  b.upload(v.data(), v.size() * sizeof(float));
  return b;
}

Vec host(const DeviceBuffer& b, size_t n) {
  DS4_CUDA_CHECK(cudaDeviceSynchronize());
  Vec v(n);
  b.download(v.data(), n * sizeof(float));
  return v;
}

float max_abs_diff(const Vec& a, const Vec& b) {
  float m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

class GpuFwdKernels : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_GT(ds4::cuda::device_count(), 0) << "no CUDA device"; }
};

TEST_F(GpuFwdKernels, RmsNormRows) {
  const int64_t rows = 5, n = 1024;
  const Vec x = randv(rows * n, 3.0f, 1), w = randv(n, 1.0f, 2);
  Vec want(x.size());
  for (int64_t r = 0; r < rows; ++r) ds4::backend::cpu::rms_norm(x.data() + r * n, w.data(), n, 1e-6f, want.data() + r * n);
  auto dx = dev(x), dw = dev(w);
  DeviceBuffer dy(x.size() * sizeof(float));
  fwd::rms_norm_rows(dx.as<float>(), dw.as<float>(), rows, n, 1e-6f, dy.as<float>(), nullptr);
  EXPECT_LE(max_abs_diff(host(dy, x.size()), want), 1e-5f);
}

TEST_F(GpuFwdKernels, RmsNormSingleWideRow) {
  // One HC-stream row of a Flash-sized model (4 x 4096): the wide-block path.
  const int64_t n = 16384 + 37;
  const Vec x = randv(n, 2.0f, 11);
  Vec want(x.size());
  ds4::backend::cpu::rms_norm(x.data(), nullptr, n, 1e-6f, want.data());
  auto dx = dev(x);
  DeviceBuffer dy(x.size() * sizeof(float));
  fwd::rms_norm_rows(dx.as<float>(), nullptr, 1, n, 1e-6f, dy.as<float>(), nullptr);
  EXPECT_LE(max_abs_diff(host(dy, x.size()), want), 1e-5f);
}

// Routing as the CPU backend does it (cpu_backend.cpp ffn_block): sqrt(softplus)
// scores, top-K of score + bias with the lowest index winning ties, weights
// normalized over the chosen and scaled; hash layers take the given ids.
TEST_F(GpuFwdKernels, RouteTopKWithTiesAndHash) {
  for (int E : {8, 256, 384}) {
    const int K = 6;
    Vec logits = randv(static_cast<size_t>(E), 1.5f, static_cast<uint32_t>(E));
    for (int e = 1; e < E; e += 7) logits[static_cast<size_t>(e)] = logits[0];  // exact ties
    logits[2] = 30.0f;                                                         // above softplus' threshold
    const Vec bias = randv(static_cast<size_t>(E), 0.01f, 99);
    for (bool use_bias : {false, true}) {
      std::vector<float> sc(static_cast<size_t>(E));
      for (int e = 0; e < E; ++e) sc[static_cast<size_t>(e)] = std::sqrt(ds4::backend::cpu::softplus(logits[static_cast<size_t>(e)]));
      std::vector<int> order(static_cast<size_t>(E));
      for (int e = 0; e < E; ++e) order[static_cast<size_t>(e)] = e;
      auto biased = [&](int e) { return sc[static_cast<size_t>(e)] + (use_bias ? bias[static_cast<size_t>(e)] : 0.0f); };
      std::partial_sort(order.begin(), order.begin() + K, order.end(), [&](int a, int b) {
        return biased(a) > biased(b) || (biased(a) == biased(b) && a < b);
      });
      auto dl = dev(logits), db = dev(bias);
      DeviceBuffer dsel(K * 4), dw(K * 4);
      fwd::route(dl.as<float>(), E, K, nullptr, use_bias ? db.as<float>() : nullptr, true, 1.5f, dsel.as<int32_t>(),
                 dw.as<float>(), nullptr);
      std::vector<int32_t> sel(K);
      DS4_CUDA_CHECK(cudaDeviceSynchronize());
      dsel.download(sel.data(), K * 4);
      const Vec w = host(dw, K);
      float sum = 0;
      for (int k = 0; k < K; ++k) sum += sc[static_cast<size_t>(order[static_cast<size_t>(k)])];
      for (int k = 0; k < K; ++k) {
        EXPECT_EQ(sel[static_cast<size_t>(k)], order[static_cast<size_t>(k)]) << "E " << E << " k " << k;
        const float want = sc[static_cast<size_t>(order[static_cast<size_t>(k)])] / (sum + 1e-20f) * 1.5f;
        EXPECT_NEAR(w[static_cast<size_t>(k)], want, 1e-6f * std::fabs(want) + 1e-7f);
      }
    }
    // Hash layer: the ids as given, weights from their scores.
    const std::vector<int32_t> ids = {E - 1, 0, 3, E / 2, 1, 2};
    DeviceBuffer dids(K * 4), dsel(K * 4), dw(K * 4);
    dids.upload(ids.data(), K * 4);
    auto dl = dev(logits);
    fwd::route(dl.as<float>(), E, K, dids.as<int32_t>(), nullptr, true, 1.0f, dsel.as<int32_t>(), dw.as<float>(), nullptr);
    std::vector<int32_t> sel(K);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    dsel.download(sel.data(), K * 4);
    EXPECT_EQ(sel, ids);
  }
}

TEST_F(GpuFwdKernels, HcSplitCollapseExpand) {
  ds4::model::ModelConfig c;
  c.hc_count = 4;
  c.hc_eps = 1e-6f;
  c.sinkhorn_iters = 20;
  const int hc = 4;
  const int64_t D = 256;
  const Vec m = randv(24, 1.0f, 3), scale = {0.7f, 1.3f, 0.9f}, base = randv(24, 0.5f, 4);
  Vec pre(4), post(4), comb(16);
  ds4::backend::cpu::hc_split_sinkhorn(m.data(), scale.data(), base.data(), c, pre.data(), post.data(), comb.data());
  auto dm = dev(m), ds = dev(scale), db = dev(base);
  DeviceBuffer dpre(16), dpost(16), dcomb(64);
  fwd::hc_split(dm.as<float>(), ds.as<float>(), db.as<float>(), hc, c.hc_eps, 20, dpre.as<float>(), dpost.as<float>(),
                dcomb.as<float>(), nullptr);
  EXPECT_LE(max_abs_diff(host(dpre, 4), pre), 1e-6f);
  EXPECT_LE(max_abs_diff(host(dpost, 4), post), 1e-6f);
  EXPECT_LE(max_abs_diff(host(dcomb, 16), comb), 1e-5f);

  const Vec X = randv(hc * D, 1.0f, 5), out = randv(D, 1.0f, 6);
  Vec y(D), X2 = X;
  ds4::backend::cpu::hc_collapse(X.data(), pre.data(), hc, D, y.data());
  ds4::backend::cpu::hc_expand(X2.data(), out.data(), post.data(), comb.data(), hc, D);
  auto dX = dev(X), dout = dev(out), dpre2 = dev(pre), dpost2 = dev(post), dcomb2 = dev(comb);
  DeviceBuffer dy(D * sizeof(float));
  fwd::hc_collapse(dX.as<float>(), dpre2.as<float>(), hc, D, dy.as<float>(), nullptr);
  EXPECT_LE(max_abs_diff(host(dy, D), y), 1e-5f);
  fwd::hc_expand(dX.as<float>(), dout.as<float>(), dpost2.as<float>(), dcomb2.as<float>(), hc, D, nullptr);
  EXPECT_LE(max_abs_diff(host(dX, X.size()), X2), 1e-5f);
}

// hc_pre_fused (a narrow pass's HC pre-mix in one launch) against the four
// kernels it replaces, within f32 rounding of the dot's order (it sums over
// column slices and scales by the norm once); a second launch gives the same
// bits again (its hand-over counters came back to zero), and so does a launch
// whose scratch holds fewer rows than the pass (run in groups): a row's
// result depends on that row only.
// The norm with its Q8_0 quantization in one launch gives the bytes of
// rms_norm_rows followed by quantize_activation_rows: the normed rows and
// their quantized form, for single rows (1024-thread blocks at n >= 4096) and
// passes of many, with and without a weight, out of place and in place.
TEST_F(GpuFwdKernels, NormQuantizeEqualsItsSteps) {
  const float eps = 1e-6f;
  for (const int64_t n : {int64_t{4096}, int64_t{1024}, int64_t{96}}) {
    for (const int64_t rows : {int64_t{1}, int64_t{3}, int64_t{70}}) {
      for (const bool weighted : {true, false}) {
        for (const bool in_place : {false, true}) {
          SCOPED_TRACE(testing::Message() << "n " << n << " rows " << rows << " weighted " << weighted << " in place "
                                          << in_place);
          const Vec x = randv(static_cast<size_t>(rows * n), 2.0f, 80), w = randv(static_cast<size_t>(n), 1.0f, 81);
          auto dx = dev(x), dw = dev(w), dy = dev(Vec(x.size(), 0.0f));
          const size_t ab = ds4::cuda::activation_bytes(ds4::GgmlType::Q8_0, n);
          DeviceBuffer q_want(ab * static_cast<size_t>(rows)), q_got(ab * static_cast<size_t>(rows));
          DS4_CUDA_CHECK(cudaMemset(q_want.get(), 0, q_want.size()));
          DS4_CUDA_CHECK(cudaMemset(q_got.get(), 0, q_got.size()));
          const float* wp = weighted ? dw.as<float>() : nullptr;
          fwd::rms_norm_rows(dx.as<float>(), wp, rows, n, eps, dy.as<float>(), nullptr);
          ds4::cuda::quantize_activation_rows(ds4::GgmlType::Q8_0, dy.as<float>(), n, rows, q_want.get(), nullptr);
          const Vec want_y = host(dy, x.size());
          float* out = in_place ? dx.as<float>() : dy.as<float>();
          if (!in_place) DS4_CUDA_CHECK(cudaMemset(dy.get(), 0, x.size() * sizeof(float)));
          ds4::cuda::rms_norm_quantize_q8_0(dx.as<float>(), wp, rows, n, eps, out, q_got.get(), nullptr);
          const Vec got_y = host(in_place ? dx : dy, x.size());
          EXPECT_EQ(std::memcmp(got_y.data(), want_y.data(), x.size() * sizeof(float)), 0) << "normed rows";
          std::vector<uint8_t> a(q_want.size()), b(q_got.size());
          q_want.download(a.data(), a.size());
          q_got.download(b.data(), b.size());
          EXPECT_EQ(a, b) << "Q8_0 activations";
        }
      }
    }
  }
}

TEST_F(GpuFwdKernels, HcPreFusedEqualsItsSteps) {
  const int hc = 4, mr = 24, iters = 20;
  const float eps = 1e-6f, hc_eps = 1e-6f;
  for (const int64_t D : {int64_t{4096}, int64_t{1024}, int64_t{100}}) {
    for (const ds4::GgmlType t : {ds4::GgmlType::F16, ds4::GgmlType::F32}) {
      SCOPED_TRACE(testing::Message() << "D " << D << " type " << static_cast<int>(t));
      const int64_t n = hc * D, rows = 3;
      const Vec X = randv(static_cast<size_t>(rows * n), 1.5f, 70), wf = randv(static_cast<size_t>(mr * n), 0.02f, 71),
                scale = {0.7f, 1.3f, 0.9f}, base = randv(mr, 0.5f, 72);
      std::vector<uint16_t> wh(wf.size());
      for (size_t i = 0; i < wf.size(); ++i) wh[i] = ds4::f32_to_f16(wf[i]);
      DeviceBuffer dw(t == ds4::GgmlType::F16 ? wh.size() * 2 : wf.size() * 4);
      if (t == ds4::GgmlType::F16) dw.upload(wh.data(), wh.size() * 2);
      else dw.upload(wf.data(), wf.size() * 4);
      auto dX = dev(X), ds = dev(scale), db = dev(base);
      auto buf = [](int64_t k) { return DeviceBuffer(static_cast<size_t>(k) * sizeof(float)); };
      DeviceBuffer u = buf(rows * n), mix = buf(rows * mr), pre = buf(rows * hc), post = buf(rows * hc),
                   comb = buf(rows * hc * hc), y = buf(rows * D);
      fwd::rms_norm_rows(dX.as<float>(), nullptr, rows, n, eps, u.as<float>(), nullptr);
      for (int64_t r = 0; r < rows; ++r)
        ds4::cuda::matvec(t, dw.get(), mr, n, u.as<float>() + r * n, mix.as<float>() + r * mr, nullptr);
      fwd::hc_split_rows(mix.as<float>(), mr, rows, ds.as<float>(), db.as<float>(), hc, hc_eps, iters, pre.as<float>(),
                         post.as<float>(), comb.as<float>(), nullptr);
      fwd::hc_collapse(dX.as<float>(), pre.as<float>(), hc, D, y.as<float>(), nullptr, rows);
      const Vec want_mix = host(mix, rows * mr), want_pre = host(pre, rows * hc), want_post = host(post, rows * hc),
                want_comb = host(comb, rows * hc * hc), want_y = host(y, rows * D);
      DeviceBuffer fmix = buf(rows * mr), fpre = buf(rows * hc), fpost = buf(rows * hc), fcomb = buf(rows * hc * hc),
                   fy = buf(rows * D), counters(rows * sizeof(unsigned)),
                   part(static_cast<size_t>(ds4::cuda::hc_pre_scratch_bytes(hc, D, mr, rows)));
      DS4_CUDA_CHECK(cudaMemset(counters.get(), 0, rows * sizeof(unsigned)));
      ds4::cuda::HcPreArgs a;
      a.X = dX.as<float>();
      a.hc = hc;
      a.D = D;
      a.rms_eps = eps;
      a.scale = ds.as<float>();
      a.base = db.as<float>();
      a.hc_eps = hc_eps;
      a.iters = iters;
      a.mix = fmix.as<float>();
      a.pre = fpre.as<float>();
      a.post = fpost.as<float>();
      a.comb = fcomb.as<float>();
      a.y = fy.as<float>();
      a.counters = counters.as<unsigned>();
      a.part = part.as<double>();
      ASSERT_TRUE(ds4::cuda::hc_pre_fusable(t, hc));
      const float tol = 1e-4f;
      Vec first_mix, first_comb, first_y;
      for (int launch = 0; launch < 3; ++launch) {
        a.part_rows = launch < 2 ? rows : 2;  // the third in groups of two rows
        DS4_CUDA_CHECK(cudaMemset(fy.get(), 0, static_cast<size_t>(rows * D) * sizeof(float)));
        ds4::cuda::hc_pre_fused(t, dw.get(), mr, rows, a, nullptr);
        const Vec got_mix = host(fmix, rows * mr), got_comb = host(fcomb, rows * hc * hc), got_y = host(fy, rows * D);
        EXPECT_LE(max_abs_diff(got_mix, want_mix), tol) << "launch " << launch;
        EXPECT_LE(max_abs_diff(host(fpre, rows * hc), want_pre), tol) << "launch " << launch;
        EXPECT_LE(max_abs_diff(host(fpost, rows * hc), want_post), tol) << "launch " << launch;
        EXPECT_LE(max_abs_diff(got_comb, want_comb), tol) << "launch " << launch;
        EXPECT_LE(max_abs_diff(got_y, want_y), tol * 10) << "launch " << launch;
        if (launch == 0) {
          first_mix = got_mix;
          first_comb = got_comb;
          first_y = got_y;
        } else {
          EXPECT_EQ(got_mix, first_mix) << "launch " << launch;
          EXPECT_EQ(got_comb, first_comb) << "launch " << launch;
          EXPECT_EQ(got_y, first_y) << "launch " << launch;
        }
      }
      std::vector<unsigned> left(rows);
      counters.download(left.data(), left.size() * sizeof(unsigned));
      EXPECT_EQ(left, std::vector<unsigned>(rows, 0u));
    }
  }
}

// quantize_swiglu_rows (SwiGLU and the down projection's activation
// quantization in one launch) leaves the bytes swiglu_rows followed by
// quantize_activation_rows leaves, for both activation types, with and
// without routing weights; g is not changed.
TEST_F(GpuFwdKernels, QuantizeSwigluRowsEqualsItsSteps) {
  const int64_t ff = 2048, rows = 12;
  const float clamp = 7.0f;
  const Vec g = randv(static_cast<size_t>(rows * ff), 4.0f, 80), u = randv(static_cast<size_t>(rows * ff), 4.0f, 81),
            wts = randv(static_cast<size_t>(rows), 1.0f, 82);
  auto du = dev(u), dwts = dev(wts);
  for (const ds4::GgmlType act : {ds4::GgmlType::Q8_0, ds4::GgmlType::Q8_K}) {
    for (const bool weighted : {true, false}) {
      SCOPED_TRACE(testing::Message() << "act " << static_cast<int>(act) << " weighted " << weighted);
      const size_t bytes = ds4::cuda::activation_bytes(act, ff) * static_cast<size_t>(rows);
      DeviceBuffer want(bytes), got(bytes);
      DS4_CUDA_CHECK(cudaMemset(want.get(), 0x55, bytes));
      DS4_CUDA_CHECK(cudaMemset(got.get(), 0x55, bytes));
      auto dg = dev(g), dg2 = dev(g);
      const float* w = weighted ? dwts.as<float>() : nullptr;
      fwd::swiglu_rows(dg.as<float>(), du.as<float>(), ff, rows, clamp, w, nullptr);
      ds4::cuda::quantize_activation_rows(act, dg.as<float>(), ff, rows, want.get(), nullptr);
      ds4::cuda::quantize_swiglu_rows(act, dg2.as<float>(), du.as<float>(), ff, rows, clamp, w, got.get(), nullptr);
      DS4_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<uint8_t> a(bytes), b(bytes);
      want.download(a.data(), bytes);
      got.download(b.data(), bytes);
      EXPECT_EQ(a, b);
      EXPECT_EQ(host(dg2, g.size()), g);
    }
  }
}

// hc_expand_moe (the FFN's expert sum fed straight into the HC expand)
// equals moe_sum then hc_expand bit for bit, with and without a shared expert.
TEST_F(GpuFwdKernels, HcExpandMoeEqualsItsSteps) {
  const int hc = 4, K = 6;
  const int64_t D = 1000, rows = 3;  // D not a multiple of the block: the tail too
  const Vec X = randv(static_cast<size_t>(rows * hc * D), 1.0f, 90), ye = randv(static_cast<size_t>(rows * K * D), 1.0f, 91),
            ys = randv(static_cast<size_t>(rows * D), 1.0f, 92), post = randv(static_cast<size_t>(rows * hc), 1.0f, 93),
            comb = randv(static_cast<size_t>(rows * hc * hc), 0.5f, 94);
  auto dye = dev(ye), dys = dev(ys), dpost = dev(post), dcomb = dev(comb);
  for (const bool shared : {true, false}) {
    auto a = dev(X), b = dev(X);
    DeviceBuffer out(static_cast<size_t>(rows * D) * sizeof(float));
    const float* s = shared ? dys.as<float>() : nullptr;
    fwd::moe_sum(out.as<float>(), dye.as<float>(), s, D, K, rows, nullptr);
    fwd::hc_expand(a.as<float>(), out.as<float>(), dpost.as<float>(), dcomb.as<float>(), hc, D, nullptr, rows);
    fwd::hc_expand_moe(b.as<float>(), dye.as<float>(), s, K, dpost.as<float>(), dcomb.as<float>(), hc, D, rows, nullptr);
    EXPECT_EQ(host(a, X.size()), host(b, X.size())) << "shared " << shared;
  }
}

TEST_F(GpuFwdKernels, HcSplitOtherStreamCounts) {
  // hc = 4 has its own register kernel; the general one serves any other count.
  for (int hc : {2, 3, 6}) {
    ds4::model::ModelConfig c;
    c.hc_count = static_cast<uint32_t>(hc);
    c.hc_eps = 1e-6f;
    c.sinkhorn_iters = 20;
    const size_t mix = static_cast<size_t>(2 * hc + hc * hc);
    const Vec m = randv(mix, 1.0f, 30 + static_cast<uint32_t>(hc)), scale = {0.7f, 1.3f, 0.9f},
              base = randv(mix, 0.5f, 40 + static_cast<uint32_t>(hc));
    Vec pre(static_cast<size_t>(hc)), post(static_cast<size_t>(hc)), comb(static_cast<size_t>(hc * hc));
    ds4::backend::cpu::hc_split_sinkhorn(m.data(), scale.data(), base.data(), c, pre.data(), post.data(), comb.data());
    auto dm = dev(m), ds = dev(scale), db = dev(base);
    DeviceBuffer dpre(pre.size() * 4), dpost(post.size() * 4), dcomb(comb.size() * 4);
    fwd::hc_split(dm.as<float>(), ds.as<float>(), db.as<float>(), hc, c.hc_eps, 20, dpre.as<float>(), dpost.as<float>(),
                  dcomb.as<float>(), nullptr);
    EXPECT_LE(max_abs_diff(host(dpre, pre.size()), pre), 1e-6f) << hc;
    EXPECT_LE(max_abs_diff(host(dpost, post.size()), post), 1e-6f) << hc;
    EXPECT_LE(max_abs_diff(host(dcomb, comb.size()), comb), 1e-5f) << hc;
  }
}

TEST_F(GpuFwdKernels, RopeForwardAndInverse) {
  ds4::model::ModelConfig c;
  c.rope_dim = 64;
  c.rope_base = 10000;
  c.compress_rope_base = 160000;
  c.yarn_factor = 16;
  c.yarn_orig_ctx = 65536;
  c.yarn_beta_fast = 32;
  c.yarn_beta_slow = 1;
  for (bool comp : {false, true}) {
    ds4::backend::cpu::Rope rope(c, comp);
    const int heads = 3;
    const int64_t stride = 128;
    for (bool inv : {false, true}) {
      Vec x = randv(heads * stride, 1.0f, 7), want = x;
      for (int h = 0; h < heads; ++h) rope.apply(want.data() + h * stride + 64, 12345, inv);
      auto dx = dev(x), df = dev(rope.inv_freq());
      fwd::rope(dx.as<float>() + 64, stride, heads, df.as<float>(), 32, 12345, inv, nullptr);
      EXPECT_LE(max_abs_diff(host(dx, x.size()), want), 1e-6f) << "compressed " << comp << " inverse " << inv;
    }
  }
}

TEST_F(GpuFwdKernels, FaithfulKvRoundIsExact) {
  const int64_t n = 512, nope = 448;
  Vec x = randv(n, 2.0f, 8);
  x[3] = 1000.0f;  // saturating block
  x[70] = 0.0f;
  Vec want = x;
  ds4::backend::cpu::fp8_simulate_64(std::span<float>(want.data(), nope));
  for (float& v : want) v = ds4::f16_to_f32(ds4::f32_to_f16(v));
  auto dx = dev(x);
  fwd::kv_round(dx.as<float>(), nope, n, nullptr);
  EXPECT_EQ(max_abs_diff(host(dx, n), want), 0.0f);
}

// kv_rows (decode's and prefill's KV write: norm, RoPE, faithful rounding in
// one launch, the FP8 blocks one warp each) equals rms_norm_rows + rope +
// kv_round of each row alone, bit for bit; a plain row skips the rounding.
TEST_F(GpuFwdKernels, KvRowsEqualEachRowsSteps) {
  const int64_t hd = 512, nope = 448, rows = 3;
  const int pairs = 32;
  Vec x = randv(static_cast<size_t>(rows * hd), 3.0f, 60);
  x[5] = 2000.0f;  // a saturating FP8 block in row 0
  x[hd + 100] = 0.0f;
  const Vec w = randv(static_cast<size_t>(hd), 1.0f, 61), inv = randv(pairs, 0.05f, 62);
  auto dx = dev(x), dw = dev(w), dinv = dev(inv);
  DeviceBuffer ring(static_cast<size_t>(rows * hd) * sizeof(float)), one(static_cast<size_t>(hd) * sizeof(float));
  fwd::KvRows kr;
  kr.n = static_cast<int>(rows);
  const int64_t pos[rows] = {0, 4097, 123456};
  const bool faithful[rows] = {true, false, true};
  for (int64_t i = 0; i < rows; ++i) {
    kr.dst[i] = ring.as<float>() + (rows - 1 - i) * hd;  // slots in another order than the rows
    kr.pos[i] = pos[i];
    kr.faithful[i] = faithful[i];
  }
  fwd::kv_rows(dx.as<float>(), hd, dw.as<float>(), 1e-6f, nope, dinv.as<float>(), pairs, kr, nullptr);
  const Vec got = host(ring, static_cast<size_t>(rows * hd));
  for (int64_t i = 0; i < rows; ++i) {
    fwd::rms_norm_rows(dx.as<float>() + i * hd, dw.as<float>(), 1, hd, 1e-6f, one.as<float>(), nullptr);
    fwd::rope(one.as<float>() + nope, 0, 1, dinv.as<float>(), pairs, pos[i], false, nullptr);
    if (faithful[i]) fwd::kv_round(one.as<float>(), nope, hd, nullptr);
    const Vec alone = host(one, static_cast<size_t>(hd));
    const auto at = static_cast<std::ptrdiff_t>((rows - 1 - i) * hd);
    EXPECT_EQ(Vec(got.begin() + at, got.begin() + at + hd), alone) << "row " << i;
  }
}

TEST_F(GpuFwdKernels, IndexerQatIsExact) {
  // 1 row (a compressed row), 64 (a decode step's heads: several blocks of
  // warps) and 6 rows; d 128 (Flash) and 64/256/16 (the other warp widths
  // and the serial form).
  for (const int64_t d : {128, 64, 256, 16})
    for (const int64_t rows : {1, 6, 64}) {
      Vec x = randv(static_cast<size_t>(rows * d), 1.5f, static_cast<uint32_t>(9 + d + rows));
      x[0] = 0.0f;  // a zero and a large value in the first row
      x[static_cast<size_t>(d / 2)] = 40.0f;
      Vec want = x;
      for (int64_t r = 0; r < rows; ++r) ds4::backend::cpu::indexer_qat(std::span<float>(want.data() + r * d, d));
      auto dx = dev(x);
      fwd::indexer_qat(dx.as<float>(), rows, d, nullptr);
      EXPECT_EQ(max_abs_diff(host(dx, x.size()), want), 0.0f) << "d " << d << " rows " << rows;
    }
}

// The indexer's scores at Flash's shape (64 heads of 128) against the sum
// written out on the host in the kernel's order: per head a fused
// multiply-add chain over j ascending, relu, times the head's weight, then the
// heads added in order. 300 rows: many tiles and a partial last one.
TEST_F(GpuFwdKernels, IndexerScoresFollowTheirOrder) {
  const int64_t d = 128, heads = 64, n = 300;
  const Vec rows = randv(n * d, 1.0f, 50), q = randv(heads * d, 1.0f, 51), w = randv(heads, 1.0f, 52);
  Vec want(static_cast<size_t>(n));
  for (int64_t c = 0; c < n; ++c) {
    float s = 0;
    for (int64_t h = 0; h < heads; ++h) {
      float dot = 0;
      for (int64_t j = 0; j < d; ++j)
        dot = std::fma(q[static_cast<size_t>(h * d + j)], rows[static_cast<size_t>(c * d + j)], dot);
      // Rounded on its own before the sum, as the kernel stores it first.
      const volatile float part = w[static_cast<size_t>(h)] * std::max(dot, 0.0f);
      s += part;
    }
    want[static_cast<size_t>(c)] = s;
  }
  auto dr = dev(rows), dq = dev(q), dw = dev(w);
  DeviceBuffer score(n * sizeof(float));
  fwd::indexer_scores(dr.as<float>(), n, d, dq.as<float>(), dw.as<float>(), heads, score.as<float>(), nullptr);
  EXPECT_EQ(max_abs_diff(host(score, want.size()), want), 0.0f);
  // The row-batched form, two pass rows scoring 300 and 17 of the rows.
  fwd::IdxRows ix;
  ix.n = 2;
  DeviceBuffer score2(2 * n * sizeof(float));
  ix.r[0] = {n, dr.as<float>(), score2.as<float>(), nullptr};
  ix.r[1] = {17, dr.as<float>(), score2.as<float>() + n, nullptr};
  auto dq2 = dev([&] {
    Vec v = q;
    v.insert(v.end(), q.begin(), q.end());
    return v;
  }());
  auto dw2 = dev([&] {
    Vec v = w;
    v.insert(v.end(), w.begin(), w.end());
    return v;
  }());
  fwd::indexer_scores_rows(ix, d, dq2.as<float>(), heads * d, dw2.as<float>(), heads, static_cast<int>(heads), nullptr);
  const Vec got = host(score2, static_cast<size_t>(2 * n));
  EXPECT_EQ(max_abs_diff(Vec(got.begin(), got.begin() + n), want), 0.0f);
  EXPECT_EQ(max_abs_diff(Vec(got.begin() + n, got.begin() + n + 17), Vec(want.begin(), want.begin() + 17)), 0.0f);
}

TEST_F(GpuFwdKernels, IndexerSelectMatchesCpuWithTies) {
  const int64_t d = 32, heads = 8, n = 40, top_k = 6;
  ds4::backend::cpu::CompressorState st;
  st.dim = d;
  st.rows = randv(n * d, 1.0f, 10);
  // Duplicate rows make equal scores: the lowest index must win.
  for (int64_t j = 0; j < d; ++j) st.rows[static_cast<size_t>(17 * d + j)] = st.rows[static_cast<size_t>(5 * d + j)];
  for (int64_t j = 0; j < d; ++j) st.rows[static_cast<size_t>(30 * d + j)] = st.rows[static_cast<size_t>(5 * d + j)];
  const Vec q = randv(heads * d, 1.0f, 11), w = randv(heads, 1.0f, 12);
  const auto want = ds4::backend::cpu::indexer_select(st, q.data(), w.data(), heads, top_k);
  auto dr = dev(st.rows), dq = dev(q), dw = dev(w);
  DeviceBuffer score(n * sizeof(float)), sel(top_k * sizeof(int32_t));
  fwd::indexer_scores(dr.as<float>(), n, d, dq.as<float>(), dw.as<float>(), heads, score.as<float>(), nullptr);
  fwd::topk_select(score.as<float>(), n, top_k, sel.as<int32_t>(), nullptr);
  DS4_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<int32_t> got(top_k);
  sel.download(got.data(), got.size() * sizeof(int32_t));
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[i]) << "rank " << i;
}

// The CPU's selection (indexer_select's order: higher score, then lower index)
// of k of these scores, indices ascending.
std::vector<int32_t> cpu_topk(const Vec& score, int64_t k) {
  std::vector<int32_t> idx(score.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int32_t>(i);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
    const float sa = score[static_cast<size_t>(a)], sb = score[static_cast<size_t>(b)];
    return sa > sb || (sa == sb && a < b);
  });
  idx.resize(static_cast<size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// Long rows, ties around the k-th score, negative scores, -0 beside +0, and
// k from 1 to n: the radix select must pick exactly the CPU's rows.
TEST_F(GpuFwdKernels, TopkSelectMatchesCpuAtLengthWithTies) {
  struct Case {
    int64_t n, k;
    int levels;  // scores drawn from this many values (0: continuous)
  };
  for (const Case& c : {Case{600, 512, 0}, Case{2048, 512, 0}, Case{2048, 512, 7}, Case{5000, 512, 3},
                        Case{16384, 512, 0}, Case{16384, 1024, 50}, Case{1500, 1, 0}, Case{1500, 1499, 2},
                        Case{3000, 2999, 0}, Case{1030, 1024, 1}}) {
    Vec score = randv(static_cast<size_t>(c.n), 3.0f, static_cast<uint32_t>(100 + c.n + c.k));
    if (c.levels > 0)
      for (float& v : score) v = std::round(v * static_cast<float>(c.levels) / 6.0f);
    // Signed zeros compare equal: the lower index wins between them.
    score[3] = -0.0f;
    score[4] = 0.0f;
    const std::vector<int32_t> want = cpu_topk(score, c.k);
    auto ds = dev(score);
    DeviceBuffer sel(static_cast<size_t>(c.k) * sizeof(int32_t));
    fwd::topk_select(ds.as<float>(), c.n, c.k, sel.as<int32_t>(), nullptr);
    DS4_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<int32_t> got(static_cast<size_t>(c.k));
    sel.download(got.data(), got.size() * sizeof(int32_t));
    EXPECT_EQ(got, want) << "n " << c.n << " k " << c.k << " levels " << c.levels;
  }
}

// Attention against the CPU for head sizes of each kernel width, few keys (one
// block per head) and many (keys split between blocks, then merged), with and
// without a selection of compressed rows.
TEST_F(GpuFwdKernels, SinkAttentionOverRingAndSelectedRows) {
  struct Case {
    int H;
    int64_t dim, window, p, n_raw, n_rows;
    bool select;
  };
  for (const Case& c : {Case{4, 512, 8, 21, 8, 10, true}, Case{4, 128, 16, 40, 16, 30, false},
                        Case{8, 512, 128, 2047, 128, 600, true}, Case{3, 1024, 64, 5000, 64, 900, false},
                        Case{64, 512, 128, 300, 128, 75, false}, Case{2, 96, 4, 2, 3, 0, false}}) {
    const Vec q = randv(static_cast<size_t>(c.H * c.dim), 0.2f, 13), raw = randv(static_cast<size_t>(c.window * c.dim), 1.0f, 14),
              comp = randv(static_cast<size_t>(std::max<int64_t>(c.n_rows, 1) * c.dim), 1.0f, 15),
              sinks = randv(static_cast<size_t>(c.H), 1.0f, 16);
    std::vector<int32_t> sel;
    for (int32_t r = 0; r < c.n_rows; ++r)
      if (!c.select || r % 3 != 1) sel.push_back(r);
    std::vector<const float*> keys;
    for (int64_t j = c.p - c.n_raw + 1; j <= c.p; ++j) keys.push_back(raw.data() + (j % c.window) * c.dim);
    for (int32_t r : sel) keys.push_back(comp.data() + r * c.dim);
    Vec want(static_cast<size_t>(c.H * c.dim));
    ds4::backend::cpu::attend(q.data(), c.H, c.dim, keys, sinks.data(), want.data());
    auto dq = dev(q), draw = dev(raw), dcomp = dev(comp), dsinks = dev(sinks);
    DeviceBuffer dsel(std::max<size_t>(sel.size(), 1) * sizeof(int32_t)), dout(want.size() * sizeof(float)),
        scratch(static_cast<size_t>(fwd::attend_scratch_floats(c.H, c.dim)) * sizeof(float));
    if (!sel.empty()) dsel.upload(sel.data(), sel.size() * sizeof(int32_t));
    fwd::attend(dq.as<float>(), c.H, c.dim, draw.as<float>(), c.window, c.p, c.n_raw, dcomp.as<float>(),
                static_cast<int64_t>(sel.size()), c.select ? dsel.as<int32_t>() : nullptr, dsinks.as<float>(),
                dout.as<float>(), scratch.as<float>(), nullptr);
    EXPECT_LE(max_abs_diff(host(dout, want.size()), want), 1e-5f)
        << "H " << c.H << " dim " << c.dim << " keys " << keys.size();
  }
}

// The row-batched middle: each row of a batch gets bit for bit what it gets
// alone (so prefill equals decode on the GPU), rows of one sequence sharing
// the ring and the compressed rows, others with their own.
TEST_F(GpuFwdKernels, RowBatchedMiddleEqualsEachRowAlone) {
  const int H = 8;
  const int64_t dim = 512, ring = 40, win = 8, d = 64, heads = 4, k = 6;
  const Vec raw = randv(static_cast<size_t>(ring * dim), 1.0f, 40), comp = randv(static_cast<size_t>(300 * dim), 1.0f, 41),
            sinks = randv(H, 1.0f, 42), q = randv(static_cast<size_t>(3 * H * dim), 0.2f, 43),
            irows = randv(static_cast<size_t>(300 * d), 1.0f, 44), iq = randv(static_cast<size_t>(3 * heads * d), 1.0f, 45),
            iw = randv(static_cast<size_t>(3 * heads), 1.0f, 46);
  auto draw = dev(raw), dcomp = dev(comp), dsinks = dev(sinks), dq = dev(q), dir = dev(irows), diq = dev(iq), diw = dev(iw);
  DeviceBuffer score(3 * 300 * sizeof(float)), sel(3 * k * sizeof(int32_t));
  // Row 0 skips the indexer; rows 1 and 2 score 20 and 300 rows.
  fwd::IdxRows ix;
  ix.n = 3;
  const int64_t counts[3] = {0, 20, 300};
  for (int i = 0; i < 3; ++i)
    ix.r[i] = {counts[i], dir.as<float>(), score.as<float>() + i * 300, sel.as<int32_t>() + i * k};
  fwd::indexer_scores_rows(ix, d, diq.as<float>(), heads * d, diw.as<float>(), heads, heads, nullptr);
  fwd::topk_rows(ix, k, nullptr);
  fwd::AttnRows at;
  at.n = 3;
  at.ring = ring;
  at.r[0] = {5, 6, 0, draw.as<float>(), nullptr, nullptr};
  at.r[1] = {33, win, k, draw.as<float>(), dcomp.as<float>(), sel.as<int32_t>() + k};
  at.r[2] = {34, win, 250, draw.as<float>(), dcomp.as<float>(), nullptr};
  DeviceBuffer out(3 * H * dim * sizeof(float)),
      scratch(static_cast<size_t>(fwd::attend_rows_scratch_floats(H, dim)) * sizeof(float));
  fwd::attend_rows(dq.as<float>(), H, dim, at, dsinks.as<float>(), out.as<float>(), scratch.as<float>(), nullptr);
  const Vec got = host(out, static_cast<size_t>(3 * H * dim));
  std::vector<int32_t> got_sel(3 * k);
  sel.download(got_sel.data(), got_sel.size() * sizeof(int32_t));
  DeviceBuffer one(H * dim * sizeof(float)), one_score(300 * sizeof(float)), one_sel(k * sizeof(int32_t)),
      one_scratch(static_cast<size_t>(fwd::attend_scratch_floats(H, dim)) * sizeof(float));
  for (int i = 0; i < 3; ++i) {
    const int32_t* isel = nullptr;
    if (counts[i] > 0) {
      fwd::indexer_scores(dir.as<float>(), counts[i], d, diq.as<float>() + i * heads * d, diw.as<float>() + i * heads,
                          heads, one_score.as<float>(), nullptr);
      fwd::topk_select(one_score.as<float>(), counts[i], k, one_sel.as<int32_t>(), nullptr);
      DS4_CUDA_CHECK(cudaDeviceSynchronize());
      std::vector<int32_t> alone(k);
      one_sel.download(alone.data(), alone.size() * sizeof(int32_t));
      EXPECT_EQ(std::vector<int32_t>(got_sel.begin() + i * k, got_sel.begin() + (i + 1) * k), alone) << "row " << i;
      isel = one_sel.as<int32_t>();
    }
    const fwd::AttnRow& r = at.r[i];
    fwd::attend(dq.as<float>() + i * H * dim, H, dim, r.raw, ring, r.pos, r.n_raw, r.comp, r.n_comp,
                i == 1 ? isel : r.sel, dsinks.as<float>(), one.as<float>(), one_scratch.as<float>(), nullptr);
    const Vec alone = host(one, static_cast<size_t>(H * dim));
    EXPECT_EQ(Vec(got.begin() + i * H * dim, got.begin() + (i + 1) * H * dim), alone) << "row " << i;
  }
  // rope_rows: each row at its own position equals rope() of that row alone.
  const int pairs = 8;
  const Vec inv = randv(pairs, 0.1f, 47), x = randv(static_cast<size_t>(3 * heads * d), 1.0f, 48);
  auto dinv = dev(inv), dx = dev(x), dy = dev(x);
  fwd::Positions ps;
  ps.n = 3;
  ps.pos[0] = 0;
  ps.pos[1] = 77;
  ps.pos[2] = 100000;
  fwd::rope_rows(dx.as<float>() + d - 2 * pairs, heads * d, d, heads, dinv.as<float>(), pairs, ps, false, nullptr);
  for (int i = 0; i < 3; ++i)
    fwd::rope(dy.as<float>() + i * heads * d + d - 2 * pairs, d, heads, dinv.as<float>(), pairs, ps.pos[i], false,
              nullptr);
  EXPECT_EQ(host(dx, x.size()), host(dy, x.size()));
}

}  // namespace
