// The batched seam (docs/ARCHITECTURE.md §7): one forward over several
// sequences equals running each sequence alone, bit for bit on the CPU, for
// sequences at different positions, of different lengths, wanting different
// logits and even in different numerics modes; a bad batch is refused whole
// before any session changes; a session's memory is known before it exists.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "engine_test_util.h"
#include "util/error.h"

namespace ds4::backend {
namespace {

using engine::test::tiny_model;

// Token sequences: equal salts share prefixes.
std::vector<int32_t> seq(int n, int salt) { return engine::test::toks(n, salt); }

// A sequence of the test: how much it prefilled before, what it feeds in the
// batch, which logits it wants, in which numerics.
struct Case {
  int before;
  int now;
  Logits want;
  NumericsMode mode;
};

class BatchForward : public ::testing::TestWithParam<std::string> {};

TEST_P(BatchForward, EqualsEachSequenceAlone) {
  auto m = tiny_model(GetParam());
  auto be = make_backend("cpu", m, {2});
  const size_t V = m->config.n_vocab;
  const std::vector<Case> cases = {
      {37, 1, Logits::last, NumericsMode::faithful},  // decode deep in the context (past several windows)
      {5, 20, Logits::all, NumericsMode::exact},      // a prefill chunk crossing window boundaries
      {0, 9, Logits::none, NumericsMode::faithful},   // a fresh prompt, no logits
      {64, 1, Logits::all, NumericsMode::exact},      // decode, every position
      {3, 0, Logits::none, NumericsMode::faithful},   // present but idle this step
  };
  std::vector<std::unique_ptr<SessionState>> batched, alone;
  std::vector<std::vector<int32_t>> toks;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    toks.push_back(seq(c.before + c.now, static_cast<int>(i)));
    for (auto* v : {&batched, &alone}) {
      v->push_back(be->new_session({c.mode, 256}));
      be->forward(*v->back(), std::span<const int32_t>(toks[i].data(), static_cast<size_t>(c.before)), {});
    }
  }
  auto n_logits = [&](const Case& c) -> size_t {
    return c.want == Logits::all ? static_cast<size_t>(c.now) * V : (c.want == Logits::last && c.now > 0 ? V : 0);
  };
  std::vector<std::vector<float>> got(cases.size()), want(cases.size());
  std::vector<SeqStep> steps;
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    got[i].assign(n_logits(c), -1.0f);
    want[i].assign(n_logits(c), -2.0f);
    const std::span<const int32_t> now(toks[i].data() + c.before, static_cast<size_t>(c.now));
    steps.push_back({batched[i].get(), now, c.want, got[i]});
    const SeqStep one{alone[i].get(), now, c.want, want[i]};
    be->forward(std::span<const SeqStep>(&one, 1));
  }
  be->forward(steps);
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("sequence " + std::to_string(i));
    EXPECT_EQ(batched[i]->position(), cases[i].before + cases[i].now);
    EXPECT_EQ(got[i], want[i]);                       // bit for bit
    EXPECT_EQ(batched[i]->save(), alone[i]->save());  // and the same state after
  }
}

TEST_P(BatchForward, DecodeStepsTogetherEqualAlone) {
  auto m = tiny_model(GetParam());
  auto be = make_backend("cpu", m, {2});
  const size_t V = m->config.n_vocab;
  constexpr int B = 4, steps = 12;
  std::vector<std::unique_ptr<SessionState>> together, alone;
  std::vector<std::vector<int32_t>> toks;
  for (int b = 0; b < B; ++b) {
    toks.push_back(seq(8 * b + 3 + steps, b));
    for (auto* v : {&together, &alone}) {
      v->push_back(be->new_session({NumericsMode::faithful, 128}));
      be->forward(*v->back(), std::span<const int32_t>(toks[b].data(), static_cast<size_t>(8 * b + 3)), {});
    }
  }
  for (int s = 0; s < steps; ++s) {
    std::vector<std::vector<float>> got(B, std::vector<float>(V)), want(B, std::vector<float>(V));
    std::vector<SeqStep> batch;
    for (int b = 0; b < B; ++b) {
      const std::span<const int32_t> one(&toks[b][static_cast<size_t>(8 * b + 3 + s)], 1);
      batch.push_back({together[b].get(), one, Logits::last, got[b]});
      be->forward(*alone[b], one, want[b]);
    }
    be->forward(batch);
    for (int b = 0; b < B; ++b) ASSERT_EQ(got[b], want[b]) << "step " << s << " sequence " << b;
  }
}

INSTANTIATE_TEST_SUITE_P(Recipes, BatchForward, ::testing::Values("f32", "ds4-q2"));

TEST(BatchValidation, BadBatchIsRefusedWholeBeforeAnyStateChanges) {
  auto m = tiny_model("f32");
  auto be = make_backend("cpu", m, {1});
  const size_t V = m->config.n_vocab;
  auto a = be->new_session({NumericsMode::exact, 16});
  auto b = be->new_session({NumericsMode::exact, 16});
  const std::vector<int32_t> t3{1, 2, 3};
  std::vector<float> lg(V), small(V - 1);
  auto refused = [&](std::vector<SeqStep> batch, std::string_view what) {
    try {
      be->forward(batch);
      ADD_FAILURE() << "accepted a batch with " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
    EXPECT_EQ(a->position(), 0);
    EXPECT_EQ(b->position(), 0);
  };
  refused({{a.get(), t3, Logits::none, {}}, {a.get(), t3, Logits::none, {}}}, "twice");
  refused({{a.get(), t3, Logits::none, {}}, {b.get(), t3, Logits::last, small}}, "logits buffer");
  refused({{a.get(), t3, Logits::none, {}}, {nullptr, t3, Logits::none, {}}}, "no session");
  const std::vector<int32_t> bad{1, static_cast<int32_t>(V)};
  refused({{a.get(), t3, Logits::none, {}}, {b.get(), bad, Logits::none, {}}}, "outside the vocabulary");
  const std::vector<int32_t> long_seq(17, 1);
  refused({{a.get(), t3, Logits::none, {}}, {b.get(), long_seq, Logits::none, {}}}, "context of 16 tokens");
  // Exactly full is fine.
  const std::vector<int32_t> full(16, 1);
  be->forward(std::vector<SeqStep>{{a.get(), full, Logits::last, lg}});
  EXPECT_EQ(a->position(), 16);
}

TEST(SessionMemory, KnownUpFrontAndGrowsWithContext) {
  auto m = tiny_model("f32");
  auto be = make_backend("cpu", m, {1});
  const SessionMemory small = be->session_memory({NumericsMode::exact, 1024});
  const SessionMemory big = be->session_memory({NumericsMode::exact, 8192});
  EXPECT_GT(small.total(), 0u);
  EXPECT_GT(big.total(), small.total());
  // A session that cannot be held is refused with the figures.
  try {
    be->new_session({NumericsMode::exact, int64_t{1} << 50});
    ADD_FAILURE() << "a 2^50-token session was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MiB"), std::string::npos) << e.what();
  }
  auto s = be->new_session({NumericsMode::exact, 1024});
  EXPECT_EQ(s->capacity(), 1024);
}

}  // namespace
}  // namespace ds4::backend
