// host_routed_experts (the host side of a CUDA layer whose experts stay in
// host memory): each slot's output equals the CPU backend's per-use
// computation (a matvec job per matrix, as its decode path runs experts),
// bit for bit, whatever rows share an expert; a bad expert id is an error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "backend/cpu/host_experts.h"
#include "backend/cpu/linear.h"
#include "backend/cpu/ops.h"
#include "model/weights.h"
#include "model/synth.h"
#include "quant/quant.h"
#include "util/error.h"
#include "util/log.h"
#include "util/thread_pool.h"

namespace ds4::backend::cpu {
namespace {

std::shared_ptr<model::Model> tiny(const std::string& recipe) {
  const auto path = std::filesystem::temp_directory_path() /
                    ("ds4_host_experts_" + recipe + "_" + std::to_string(::getpid()) + ".gguf");
  log::set_level(log::Level::warn);
  model::SynthOptions so;
  so.shape = "tiny";
  so.recipe = recipe;
  so.output = path.string();
  model::synth(so);
  auto m = model::Model::load(path.string());
  std::filesystem::remove(path);  // the mapping stays valid
  return m;
}

// One slot the way the CPU backend's decode path computes a use.
std::vector<float> reference_slot(const model::LayerWeights& W, const model::ModelConfig& c, uint32_t l,
                                  const float* x, int32_t e, float w) {
  const int64_t D = c.n_embd, FF = c.expert_ff;
  std::vector<float> g(static_cast<size_t>(FF)), u(g.size()), y(static_cast<size_t>(D));
  std::vector<quant::MatvecJob> jobs = {matvec_job(W.gate_exps.slice(e), x, g.data()),
                                        matvec_job(W.up_exps.slice(e), x, u.data())};
  quant::matvec_batch(jobs, nullptr);
  for (int64_t k = 0; k < FF; ++k) g[static_cast<size_t>(k)] = swiglu_act(g[static_cast<size_t>(k)], u[static_cast<size_t>(k)], c.swiglu_clamp[l], w);
  jobs = {matvec_job(W.down_exps.slice(e), g.data(), y.data())};
  quant::matvec_batch(jobs, nullptr);
  return y;
}

class HostExperts : public ::testing::TestWithParam<std::string> {};

TEST_P(HostExperts, EachSlotEqualsTheCpuBackendsUse) {
  const auto m = tiny(GetParam());
  const model::ModelConfig& c = m->config;
  const int64_t D = c.n_embd, K = c.n_expert_used, E = c.n_expert;
  ThreadPool pool(2);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  for (uint32_t l : {0u, c.n_layer - 1}) {
    // 9 rows; rows 0-3 all choose expert 1 first (an expert with many rows),
    // row 4 picks one expert twice (as a hash layer may), the rest random.
    const int64_t n = 9;
    std::vector<float> x(static_cast<size_t>(n * D)), w(static_cast<size_t>(n * K));
    std::vector<int32_t> sel(static_cast<size_t>(n * K));
    for (auto& v : x) v = uni(rng);
    for (auto& v : w) v = 0.1f + 0.9f * (uni(rng) + 1.0f) / 2.0f;
    for (int64_t j = 0; j < n * K; ++j) sel[static_cast<size_t>(j)] = static_cast<int32_t>(rng() % static_cast<uint32_t>(E));
    for (int64_t i = 0; i < 4; ++i) sel[static_cast<size_t>(i * K)] = 1;
    if (K > 1) sel[static_cast<size_t>(4 * K + 1)] = sel[static_cast<size_t>(4 * K)];
    std::vector<float> ye(static_cast<size_t>(n * K * D), -1.0f);
    host_routed_experts(m->weights.layers[l], c, l, n, x.data(), sel.data(), w.data(), ye.data(), &pool);
    for (int64_t j = 0; j < n * K; ++j) {
      const auto want = reference_slot(m->weights.layers[l], c, l, x.data() + (j / K) * D, sel[static_cast<size_t>(j)],
                                       w[static_cast<size_t>(j)]);
      EXPECT_EQ(std::memcmp(want.data(), ye.data() + j * D, static_cast<size_t>(D) * sizeof(float)), 0)
          << GetParam() << " layer " << l << " slot " << j << " (expert " << sel[static_cast<size_t>(j)] << ")";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, HostExperts, ::testing::Values("f32", "q8_0", "ds4-q2", "ds4-q4"),
                         [](const auto& p) {
                           std::string s = p.param;
                           for (char& ch : s)
                             if (ch == '-') ch = '_';
                           return s;
                         });

TEST(HostExpertsErrors, ExpertIdOutOfRangeIsNamed) {
  const auto m = tiny("f32");
  const model::ModelConfig& c = m->config;
  const int64_t D = c.n_embd, K = c.n_expert_used;
  std::vector<float> x(static_cast<size_t>(D), 0.5f), w(static_cast<size_t>(K), 1.0f), ye(static_cast<size_t>(K * D));
  std::vector<int32_t> sel(static_cast<size_t>(K), 0);
  sel.back() = static_cast<int32_t>(c.n_expert);
  try {
    host_routed_experts(m->weights.layers[0], c, 0, 1, x.data(), sel.data(), w.data(), ye.data(), nullptr);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is expert " + std::to_string(c.n_expert)), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ds4::backend::cpu
