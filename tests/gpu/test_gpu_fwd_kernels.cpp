// The CUDA forward kernels (backend/cuda/fwd_kernels.h) against the CPU
// reference functions they mirror, on random inputs. Kernels that keep the
// CPU's operation order (QAT rounding, Hadamard, indexer selection) must agree
// exactly; the others within a few f32 ulps of the values' scale.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/layer_math.h"
#include "backend/cpu/numerics.h"
#include "backend/cpu/ops.h"
#include "backend/cpu/rope.h"
#include "backend/cuda/cuda_buffer.h"
#include "backend/cuda/cuda_check.h"
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

TEST_F(GpuFwdKernels, IndexerQatIsExact) {
  const int64_t rows = 6, d = 128;
  const Vec x = randv(rows * d, 1.5f, 9);
  Vec want = x;
  for (int64_t r = 0; r < rows; ++r) ds4::backend::cpu::indexer_qat(std::span<float>(want.data() + r * d, d));
  auto dx = dev(x);
  fwd::indexer_qat(dx.as<float>(), rows, d, nullptr);
  EXPECT_EQ(max_abs_diff(host(dx, x.size()), want), 0.0f);
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
  DeviceBuffer score(n * sizeof(float)), flags(n * sizeof(int)), sel(top_k * sizeof(int32_t));
  fwd::indexer_scores(dr.as<float>(), n, d, dq.as<float>(), dw.as<float>(), heads, score.as<float>(), nullptr);
  fwd::topk_select(score.as<float>(), n, top_k, flags.as<int>(), sel.as<int32_t>(), nullptr);
  DS4_CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<int32_t> got(top_k);
  sel.download(got.data(), got.size() * sizeof(int32_t));
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[i]) << "rank " << i;
}

TEST_F(GpuFwdKernels, SinkAttentionOverRingAndSelectedRows) {
  const int H = 4;
  const int64_t dim = 512, window = 8, p = 21, n_raw = 8, n_rows = 10;
  const Vec q = randv(H * dim, 0.2f, 13), raw = randv(window * dim, 1.0f, 14), comp = randv(n_rows * dim, 1.0f, 15),
            sinks = randv(H, 1.0f, 16);
  const std::vector<int32_t> sel = {1, 4, 7, 9};
  std::vector<const float*> keys;
  for (int64_t j = p - n_raw + 1; j <= p; ++j) keys.push_back(raw.data() + (j % window) * dim);
  for (int32_t r : sel) keys.push_back(comp.data() + r * dim);
  Vec want(H * dim);
  ds4::backend::cpu::attend(q.data(), H, dim, keys, sinks.data(), want.data());
  auto dq = dev(q), draw = dev(raw), dcomp = dev(comp), dsinks = dev(sinks);
  DeviceBuffer dsel(sel.size() * sizeof(int32_t)), dout(want.size() * sizeof(float));
  dsel.upload(sel.data(), sel.size() * sizeof(int32_t));
  fwd::attend(dq.as<float>(), H, dim, draw.as<float>(), window, p, n_raw, dcomp.as<float>(),
              static_cast<int64_t>(sel.size()), dsel.as<int32_t>(), dsinks.as<float>(), dout.as<float>(), nullptr);
  EXPECT_LE(max_abs_diff(host(dout, want.size()), want), 1e-5f);
}

}  // namespace
