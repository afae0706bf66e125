// Whole-model CUDA forward vs the CPU reference backend (the oracle), on the
// tiny fixtures converted with every recipe (scripts/gpu-check converts them
// into $DS4_GPU_MODELS as <model>-<recipe>.gguf). For each model, recipe and
// numerics mode: max abs / RMS logit difference and argmax disagreements under
// the recipe's bounds (none allowed for f32), and CUDA prefill == decode ==
// chunked prefill bit for bit.
// Plus snapshots: CUDA save/load continues exactly; a CUDA snapshot continues on
// the CPU. Every case prints its measured figures.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_check.h"
#include "model/weights.h"

namespace {

using ds4::backend::NumericsMode;

std::string model_dir() {
  const char* d = std::getenv("DS4_GPU_MODELS");
  return d ? d : "";
}

struct Case {
  std::string model, recipe;
  float max_abs;      // bound on max |cuda - cpu| over all logits of the sequence
  double rms;         // bound on the RMS of cuda - cpu
  int max_mismatch;   // positions (of 80) whose argmax may differ
};

// f32: the GPU and the CPU compute the same values up to f32 summation order
// (measured on the H100: max abs 4.8e-6 tiny, 5.4e-6 tiny-flash exact; 3.7e-4
// tiny faithful), so argmax must agree everywhere, in both numerics modes.
// KNOWN FAILURE: tiny-flash f32 faithful measures max abs 1.53, 5/80 argmax
// differences (see the report; FP8/FP4 rounding and indexer top-k are
// discontinuous, but this is not yet shown to be the cause).
// Quantized recipes: the CPU's integer kernels quantize activations to Q8_0/
// Q8_K, the GPU multiplies by f32 activations, and on these random tiny models
// that difference is as large as the weight quantization itself (compare
// tests/py/test_forward_quant.py: Q8_0 vs the f32 reference has top-1 0.77).
// Measured worst over both models and modes: q8_0 max abs 2.52 rms 0.297
// mismatches 27; ds4-q4 2.55 / 0.265 / 28; ds4-q2 2.26 / 0.238 / 20. The bounds
// are those plus ~25% (regression bounds, not the argmax-everywhere goal).
std::vector<Case> cases() {
  std::vector<Case> out;
  for (const char* m : {"tiny", "tiny-flash"}) {
    out.push_back({m, "f32", 1e-3f, 1e-4, 0});
    out.push_back({m, "q8_0", 3.2f, 0.37, 34});
    out.push_back({m, "ds4-q4", 3.2f, 0.33, 35});
    out.push_back({m, "ds4-q2", 2.9f, 0.30, 25});
  }
  return out;
}

std::vector<int32_t> test_tokens(uint32_t vocab, int n) {
  // Deterministic, spread over the vocabulary; 80 tokens pass the sliding
  // window (8), several CSA windows (indexer top-k 4 active from 5 rows on)
  // and HCA windows of 16 and 32.
  std::vector<int32_t> t(static_cast<size_t>(n));
  uint32_t x = 12345;
  for (auto& v : t) {
    x = x * 1103515245u + 12345u;
    v = static_cast<int32_t>((x >> 8) % vocab);
  }
  return t;
}

std::vector<float> run(const ds4::backend::Backend& be, NumericsMode mode, const std::vector<int32_t>& toks, size_t chunk) {
  auto s = be.new_session(mode);
  const size_t V = be.model().config.n_vocab;
  std::vector<float> lg(toks.size() * V);
  if (chunk == 0) chunk = toks.size();
  for (size_t b = 0; b < toks.size(); b += chunk) {
    const size_t e = std::min(toks.size(), b + chunk);
    be.forward(*s, std::span<const int32_t>(toks.data() + b, e - b), std::span<float>(lg.data() + b * V, (e - b) * V));
  }
  return lg;
}

struct Diff {
  float max_abs = 0;
  double rms = 0;
  int argmax_mismatch = 0;
  int first_bad = -1;
};

Diff compare(const std::vector<float>& a, const std::vector<float>& b, size_t V) {
  Diff d;
  double ss = 0;
  for (size_t i = 0; i < a.size(); ++i) ss += double(a[i] - b[i]) * double(a[i] - b[i]);
  d.rms = std::sqrt(ss / static_cast<double>(a.size()));
  for (size_t t = 0; t < a.size() / V; ++t) {
    size_t ia = 0, ib = 0;
    for (size_t v = 0; v < V; ++v) {
      d.max_abs = std::max(d.max_abs, std::fabs(a[t * V + v] - b[t * V + v]));
      if (a[t * V + v] > a[t * V + ia]) ia = v;
      if (b[t * V + v] > b[t * V + ib]) ib = v;
    }
    if (ia != ib) {
      ++d.argmax_mismatch;
      if (d.first_bad < 0) d.first_bad = static_cast<int>(t);
    }
  }
  return d;
}

class GpuForward : public ::testing::TestWithParam<Case> {};

TEST_P(GpuForward, MatchesCpuAndChunkingsAgree) {
  ASSERT_GT(ds4::cuda::device_count(), 0) << "no CUDA device";
  ASSERT_FALSE(model_dir().empty()) << "set DS4_GPU_MODELS (scripts/gpu-check does)";
  const Case& c = GetParam();
  const std::string path = model_dir() + "/" + c.model + "-" + c.recipe + ".gguf";
  auto model = ds4::model::Model::load(path);
  auto cpu = ds4::backend::make_backend("cpu", model);
  auto gpu = ds4::backend::make_backend("cuda", model);
  const size_t V = model->config.n_vocab;
  const auto toks = test_tokens(model->config.n_vocab, 80);
  for (NumericsMode mode : {NumericsMode::exact, NumericsMode::faithful}) {
    const auto want = run(*cpu, mode, toks, 0);
    const auto got = run(*gpu, mode, toks, 0);
    const auto dec = run(*gpu, mode, toks, 1);
    const auto chk = run(*gpu, mode, toks, 7);
    const Diff d = compare(got, want, V);
    const bool same_dec = std::memcmp(got.data(), dec.data(), got.size() * sizeof(float)) == 0;
    const bool same_chk = std::memcmp(got.data(), chk.data(), got.size() * sizeof(float)) == 0;
    std::printf("gpu-forward: %-10s %-7s %-8s max_abs %.3g rms %.3g argmax_mismatch %d/80 prefill==decode %s "
                "prefill==chunk7 %s\n",
                c.model.c_str(), c.recipe.c_str(), std::string(ds4::backend::numerics_name(mode)).c_str(), d.max_abs,
                d.rms, d.argmax_mismatch, same_dec ? "yes" : "NO", same_chk ? "yes" : "NO");
    const std::string what = c.model + "/" + c.recipe + " " + std::string(ds4::backend::numerics_name(mode));
    EXPECT_LE(d.max_abs, c.max_abs) << what;
    EXPECT_LE(d.rms, c.rms) << what;
    EXPECT_LE(d.argmax_mismatch, c.max_mismatch) << what << ": first at position " << d.first_bad;
    EXPECT_TRUE(same_dec) << "CUDA prefill and token-by-token decode differ";
    EXPECT_TRUE(same_chk) << "CUDA prefill and chunked (7) prefill differ";
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuForward, ::testing::ValuesIn(cases()), [](const auto& p) {
  std::string n = p.param.model + "_" + p.param.recipe;
  for (char& ch : n)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
});

// A CUDA session saved after 37 tokens and loaded into a fresh CUDA session
// continues bit for bit; loaded into a CPU session it continues within the f32
// bound (the snapshot is the CPU's canonical layout).
TEST(GpuForwardSnapshot, SaveLoadContinues) {
  ASSERT_GT(ds4::cuda::device_count(), 0) << "no CUDA device";
  ASSERT_FALSE(model_dir().empty()) << "set DS4_GPU_MODELS";
  auto model = ds4::model::Model::load(model_dir() + "/tiny-flash-f32.gguf");
  auto cpu = ds4::backend::make_backend("cpu", model);
  auto gpu = ds4::backend::make_backend("cuda", model);
  const size_t V = model->config.n_vocab;
  const auto toks = test_tokens(model->config.n_vocab, 80);
  for (NumericsMode mode : {NumericsMode::exact, NumericsMode::faithful}) {
    const auto straight = run(*gpu, mode, toks, 0);
    auto a = gpu->new_session(mode);
    std::vector<float> first(37 * V), rest((toks.size() - 37) * V), rest_cpu(rest.size());
    gpu->forward(*a, std::span<const int32_t>(toks.data(), 37), first);
    const std::vector<uint8_t> snap = a->save();
    auto b = gpu->new_session(mode);
    b->load(snap);
    EXPECT_EQ(b->position(), 37);
    gpu->forward(*b, std::span<const int32_t>(toks.data() + 37, toks.size() - 37), rest);
    EXPECT_EQ(std::memcmp(rest.data(), straight.data() + 37 * V, rest.size() * sizeof(float)), 0)
        << "CUDA snapshot round trip changed the continuation";
    auto c = cpu->new_session(mode);
    c->load(snap);
    cpu->forward(*c, std::span<const int32_t>(toks.data() + 37, toks.size() - 37), rest_cpu);
    const Diff d = compare(rest, rest_cpu, V);
    std::printf("gpu-forward: snapshot %s: cuda->cuda exact continuation, cuda->cpu max_abs %.3g\n",
                std::string(ds4::backend::numerics_name(mode)).c_str(), d.max_abs);
    EXPECT_LE(d.max_abs, 2e-4f);
    EXPECT_EQ(d.argmax_mismatch, 0);
  }
}

}  // namespace
