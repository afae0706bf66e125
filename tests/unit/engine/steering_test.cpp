// Steering inside the batched pass (docs/steering.md): zero scales are the
// unsteered path bit for bit, a batch whose sequences use different scales or
// different direction sets equals each run alone, a capture's post row is its
// pre row steered with its own sequence's set, and bad vectors, sets or
// scales are refused with one clear error.
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

std::vector<float> run_alone(const Backend& be, const std::vector<int32_t>& t, Steering s, Capture* cap = nullptr) {
  auto st = be.new_session({NumericsMode::faithful, 64});
  std::vector<float> lg(t.size() * be.model().config.n_vocab);
  const SeqStep step{st.get(), t, Logits::all, lg, s, cap};
  be.forward(std::span<const SeqStep>(&step, 1));
  return lg;
}

// Max over layers of |post - (pre - s d (d.pre))| relative to the row's size:
// the capture steered with `d` (in double, as numpy would).
double steered_error(const model::SteeringVectors& d, float s, const Capture& cap) {
  const uint32_t D = d.n_embd;
  double worst = 0;
  for (uint32_t l = 0; l < d.n_layer; ++l) {
    double dot = 0, mx = 1e-30;
    for (uint32_t i = 0; i < D; ++i) {
      dot += double{d.dirs[l * D + i]} * cap.pre[l * D + i];
      mx = std::max(mx, double{std::fabs(cap.pre[l * D + i])});
    }
    for (uint32_t i = 0; i < D; ++i)
      worst = std::max(worst, std::fabs(cap.pre[l * D + i] - s * dot * d.dirs[l * D + i] - cap.post[l * D + i]) / mx);
  }
  return worst;
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

TEST(Steering, EqualityIsWhatTheStepComputes) {
  auto m = engine::test::tiny_model();
  auto a = random_dirs(m->config, 11), b = random_dirs(m->config, 12);
  EXPECT_EQ((Steering{0, 0, a.get()}), (Steering{0, 0, b.get()}));  // unsteered, whatever the set
  EXPECT_EQ((Steering{0, 0, a.get()}), Steering{});
  EXPECT_EQ((Steering{0, 1, a.get()}), (Steering{0, 1, a.get()}));
  EXPECT_FALSE((Steering{0, 1, a.get()}) == (Steering{0, 1, b.get()}));  // same scales, another set
  EXPECT_FALSE((Steering{0, 1, a.get()}) == (Steering{0, 1}));           // a set vs the default
  EXPECT_FALSE((Steering{0, 1, a.get()}) == (Steering{0, 2, a.get()}));
}

// Sequences of one batch each steered with their own direction set (the
// server's named vectors): each equals its run alone bit for bit, a named set
// computes what the same vectors as a backend's default compute, and two sets
// give different logits (so the batch cannot be using one set for all).
TEST(Steering, BatchWithDifferentVectorsEqualsEachAlone) {
  auto m = engine::test::tiny_model();
  const auto& c = m->config;
  auto be = make_backend("cpu", m, {2});
  auto def = random_dirs(c, 20), b = random_dirs(c, 21), cc = random_dirs(c, 22);
  be->set_steering(def);
  be->add_steering(b);
  be->add_steering(cc);
  be->add_steering(b);  // twice: a no-op
  const std::vector<Steering> steer = {{0, 1.0f, b.get()}, {0, 1.0f, cc.get()}, {0, 1.0f},
                                       {0.5f, -1.0f, cc.get()}, {0, 0, b.get()}, {0, 1.0f, def.get()}};
  const auto t = toks(11, 3);
  const size_t V = c.n_vocab;
  std::vector<std::unique_ptr<SessionState>> ss;
  std::vector<std::vector<float>> got(steer.size(), std::vector<float>(t.size() * V));
  std::vector<Capture> caps(steer.size());
  std::vector<SeqStep> batch;
  for (size_t i = 0; i < steer.size(); ++i) {
    ss.push_back(be->new_session({NumericsMode::faithful, 64}));
    caps[i].component = Component::ffn;
    batch.push_back({ss[i].get(), t, Logits::all, got[i], steer[i], &caps[i]});
  }
  be->forward(batch);
  for (size_t i = 0; i < steer.size(); ++i) {
    EXPECT_EQ(got[i], run_alone(*be, t, steer[i])) << "sequence " << i;
    // Its capture is steered with its own set (the default for null).
    const model::SteeringVectors& d = *be->steering_for(steer[i]);
    EXPECT_LT(steered_error(d, steer[i].ffn, caps[i]), 1e-5) << "sequence " << i;
  }
  EXPECT_NE(got[0], got[1]);  // two sets, same scales and tokens: different logits
  EXPECT_NE(got[0], got[2]);
  EXPECT_EQ(got[2], got[5]);  // null is the default set
  EXPECT_EQ(got[4], run_alone(*make_backend("cpu", m, {1}), t, {}));  // zero scales on a set: unsteered
  // A named set equals the same vectors loaded as another backend's default.
  auto other = make_backend("cpu", m, {2});
  other->set_steering(std::make_shared<model::SteeringVectors>(*cc));
  EXPECT_EQ(got[3], run_alone(*other, t, {0.5f, -1.0f}));
}

TEST(Steering, WrongShapedOrUnregisteredSetIsRefused) {
  auto m = engine::test::tiny_model();
  const auto& c = m->config;
  auto be = make_backend("cpu", m, {1});
  be->set_steering(random_dirs(c, 30));
  auto msg = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  // Another model's shape: registering it fails, and so does a step naming it.
  auto narrow = std::make_shared<model::SteeringVectors>();
  narrow->path = "narrow.f32";
  narrow->n_layer = c.n_layer;
  narrow->n_embd = c.n_embd - 1;
  narrow->dirs.assign(size_t{c.n_layer} * (c.n_embd - 1), 0.01f);
  EXPECT_NE(msg([&] { be->add_steering(narrow); }).find("narrow.f32: vectors of"), std::string::npos);
  // Fields that say the right shape over too few floats.
  auto lying = random_dirs(c, 31);
  lying->path = "lying.f32";
  lying->dirs.resize(lying->dirs.size() - 1);
  EXPECT_NE(msg([&] { be->add_steering(lying); }).find("lying.f32:"), std::string::npos);
  auto unregistered = random_dirs(c, 32);
  unregistered->path = "unregistered.f32";

  auto st = be->new_session({NumericsMode::exact, 16});
  auto ok = be->new_session({NumericsMode::exact, 16});
  const std::vector<int32_t> t{1, 2};
  for (auto [set, want] : {std::pair{narrow.get(), "batch step 1: steering narrow.f32: vectors of"},
                           std::pair{lying.get(), "batch step 1: steering lying.f32:"},
                           std::pair{unregistered.get(), "batch step 1: steering unregistered.f32 is not registered"}}) {
    // The bad step is second: the whole batch is refused before any state changes.
    const std::vector<SeqStep> batch = {{ok.get(), t, Logits::none, {}, {0, 1.0f}},
                                        {st.get(), t, Logits::none, {}, {0, 1.0f, set}}};
    EXPECT_NE(msg([&] { be->forward(batch); }).find(want), std::string::npos) << want;
    EXPECT_EQ(st->position(), 0);
    EXPECT_EQ(ok->position(), 0);
  }
  // Registered, the same set runs.
  be->add_steering(unregistered);
  const SeqStep good{st.get(), t, Logits::none, {}, {0, 1.0f, unregistered.get()}};
  be->forward(std::span<const SeqStep>(&good, 1));
  EXPECT_EQ(st->position(), 2);
}

}  // namespace
}  // namespace ds4::backend
