// Steering inside the batched pass (docs/steering.md): zero scales are the
// unsteered path bit for bit, a batch whose sequences use different scales
// equals each run alone, a capture's post row is its pre row steered, and bad
// vectors or scales are refused with one clear error.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "backend/backend.h"
#include "model/steering.h"
#include "engine_test_util.h"
#include "util/error.h"

namespace ds4::backend {
namespace {

namespace fs = std::filesystem;

std::shared_ptr<model::SteeringVectors> random_dirs(const model::ModelConfig& c, uint32_t seed) {
  auto v = std::make_shared<model::SteeringVectors>();
  v->n_layer = c.n_layer;
  v->n_embd = c.n_embd;
  v->dirs.resize(static_cast<size_t>(c.n_layer) * c.n_embd);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  for (uint32_t l = 0; l < c.n_layer; ++l) {
    double n = 0;
    for (uint32_t i = 0; i < c.n_embd; ++i) n += std::pow(v->dirs[l * c.n_embd + i] = nd(rng), 2);
    for (uint32_t i = 0; i < c.n_embd; ++i) v->dirs[l * c.n_embd + i] /= static_cast<float>(std::sqrt(n));
  }
  return v;
}

using engine::test::toks;

std::vector<float> run_alone(const Backend& be, const std::vector<int32_t>& t, Steering s) {
  auto st = be.new_session({NumericsMode::faithful, 64});
  std::vector<float> lg(t.size() * be.model().config.n_vocab);
  const SeqStep step{st.get(), t, Logits::all, lg, s};
  be.forward(std::span<const SeqStep>(&step, 1));
  return lg;
}

TEST(Steering, ZeroScalesAreTheUnsteeredPathBitForBit) {
  auto m = engine::test::tiny_model();
  auto plain = make_backend("cpu", m, {2});
  auto steered = make_backend("cpu", m, {2});
  steered->set_steering(random_dirs(m->config, 1));
  const auto t = toks(23, 1);
  EXPECT_EQ(run_alone(*plain, t, {}), run_alone(*steered, t, {}));
  // And a non-zero scale does change the logits (the test can fail).
  EXPECT_NE(run_alone(*plain, t, {}), run_alone(*steered, t, {0.5f, -1.0f}));
}

TEST(Steering, BatchWithDifferentScalesEqualsEachAlone) {
  auto m = engine::test::tiny_model();
  auto be = make_backend("cpu", m, {2});
  be->set_steering(random_dirs(m->config, 2));
  const std::vector<Steering> scales = {{}, {0, 1.0f}, {-2.0f, 0}, {0.5f, 0.25f}};
  std::vector<std::unique_ptr<SessionState>> ss;
  std::vector<std::vector<int32_t>> ts;
  std::vector<std::vector<float>> got;
  std::vector<SeqStep> batch;
  const size_t V = m->config.n_vocab;
  for (size_t i = 0; i < scales.size(); ++i) {
    ts.push_back(toks(5 + static_cast<int>(i) * 6, static_cast<int>(i)));
    ss.push_back(be->new_session({NumericsMode::faithful, 64}));
    got.emplace_back(ts[i].size() * V);
  }
  for (size_t i = 0; i < scales.size(); ++i) batch.push_back({ss[i].get(), ts[i], Logits::all, got[i], scales[i]});
  be->forward(batch);
  for (size_t i = 0; i < scales.size(); ++i) EXPECT_EQ(got[i], run_alone(*be, ts[i], scales[i])) << "sequence " << i;
}

TEST(Steering, CapturePostIsPreSteered) {
  auto m = engine::test::tiny_model();
  auto be = make_backend("cpu", m, {1});
  auto dirs = random_dirs(m->config, 3);
  be->set_steering(dirs);
  const auto t = toks(9, 4);
  for (Component comp : {Component::attn, Component::ffn}) {
    auto st = be->new_session({NumericsMode::exact, 64});
    Capture cap;
    cap.component = comp;
    const Steering s = comp == Component::attn ? Steering{0.75f, 0} : Steering{0, 0.75f};
    const SeqStep step{st.get(), t, Logits::none, {}, s, &cap};
    be->forward(std::span<const SeqStep>(&step, 1));
    const uint32_t D = m->config.n_embd;
    ASSERT_EQ(cap.pre.size(), size_t{m->config.n_layer} * D);
    for (uint32_t l = 0; l < m->config.n_layer; ++l) {
      double dot_pre = 0, dot_post = 0, nrm = 0;
      for (uint32_t i = 0; i < D; ++i) {
        dot_pre += double{dirs->dirs[l * D + i]} * cap.pre[l * D + i];
        dot_post += double{dirs->dirs[l * D + i]} * cap.post[l * D + i];
        nrm += double{cap.pre[l * D + i]} * cap.pre[l * D + i];
      }
      // s = 0.75 leaves a quarter of the projection.
      EXPECT_NEAR(dot_post, 0.25 * dot_pre, 1e-5 * std::sqrt(nrm)) << "layer " << l;
    }
  }
}

TEST(Steering, BadVectorsAndScalesAreRefused) {
  auto m = engine::test::tiny_model();
  auto be = make_backend("cpu", m, {1});
  const auto& c = m->config;
  const fs::path dir = fs::temp_directory_path() / ("ds4_steer_files_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  auto write = [&](const std::string& name, const std::vector<float>& v) {
    std::ofstream f(dir / name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(float)));
    return (dir / name).string();
  };
  auto msg = [&](const std::string& path) {
    try {
      model::SteeringVectors::load(path, c);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  std::vector<float> good(size_t{c.n_layer} * c.n_embd, 0.0f);
  EXPECT_NE(msg(write("short.f32", std::vector<float>(good.size() - 1))).find("needs exactly"), std::string::npos);
  auto nan = good;
  nan[c.n_embd + 5] = NAN;
  EXPECT_NE(msg(write("nan.f32", nan)).find("layer 1, index 5"), std::string::npos);
  EXPECT_NE(msg((dir / "missing.f32").string()).find("cannot open"), std::string::npos);
  EXPECT_EQ(msg(write("ok.f32", good)), "accepted");
  {
    std::ofstream meta(dir / "ok.json");
    meta << R"({"format":"ds4-directional-steering-v1","shape":[43,4096]})";
  }
  EXPECT_NE(msg((dir / "ok.f32").string()).find("\"shape\""), std::string::npos);
  fs::remove_all(dir);

  // A scale without loaded vectors, and a non-finite scale, refuse the batch.
  auto st = be->new_session({NumericsMode::exact, 16});
  const std::vector<int32_t> t{1, 2};
  const SeqStep no_file{st.get(), t, Logits::none, {}, {0, 1.0f}};
  EXPECT_THROW(be->forward(std::span<const SeqStep>(&no_file, 1)), Error);
  be->set_steering(random_dirs(c, 5));
  const SeqStep inf{st.get(), t, Logits::none, {}, {INFINITY, 0}};
  EXPECT_THROW(be->forward(std::span<const SeqStep>(&inf, 1)), Error);
  EXPECT_EQ(st->position(), 0);
}

}  // namespace
}  // namespace ds4::backend
