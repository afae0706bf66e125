// The generation loop on a random-weight V4-architecture model with the real
// V4 tokenizer: greedy equals step-by-step argmax, seeds reproduce, stop
// strings cut exactly, and token/context limits end generation cleanly.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "engine/generate.h"
#include "engine/prompt.h"
#include "model/synth.h"
#include "util/error.h"

namespace ds4::engine {
namespace {

namespace fs = std::filesystem;

class Generate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    path_ = fs::temp_directory_path() / ("ds4_generate_test_" + std::to_string(::getpid()) + ".gguf");
    model::SynthOptions o;
    o.shape = std::string(DS4_SOURCE_DIR) + "/scripts/demo-model.json";
    o.layers = 2;
    o.recipe = "q8_0";
    o.tokenizer_json = std::string(DS4_SOURCE_DIR) + "/data/tokenizer/deepseek-v4/tokenizer.json";
    o.seed = 3;
    o.output = path_.string();
    model::synth(o);
    EngineOptions eo;
    eo.model_path = path_.string();
    eo.threads = 2;
    engine_ = new Engine(eo);
  }
  static void TearDownTestSuite() {
    delete engine_;
    fs::remove(path_);
  }

  static std::vector<int32_t> prompt() { return single_prompt(*engine_, "", "Tell me a story.", Thinking::none); }

  static GenerateResult run(const GenerateOptions& o, std::vector<std::string>* pieces = nullptr) {
    auto s = engine_->new_session(4096);
    GenerateOptions g = o;
    if (pieces) g.on_text = [pieces](std::string_view t, bool) { pieces->emplace_back(t); };
    return generate(*engine_, *s, prompt(), g);
  }

  static GenerateOptions greedy(int64_t n) {
    GenerateOptions g;
    g.sampling.temperature = 0;
    g.max_tokens = n;
    g.ban_eos = true;  // random weights: make the length deterministic
    return g;
  }

  static inline fs::path path_;
  static inline Engine* engine_ = nullptr;
};

TEST_F(Generate, GreedyIsArgmaxOfEachStepAndReproducible) {
  const GenerateResult a = run(greedy(8));
  const GenerateResult b = run(greedy(8));
  ASSERT_EQ(a.tokens.size(), 8u);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.stop, StopReason::max_tokens);
  // Oracle: feed the prompt, then each chosen token, taking argmax by hand.
  auto s = engine_->new_session(4096);
  std::vector<float> logits = s->feed(prompt());
  const int32_t eos = engine_->specials().eos;
  for (size_t i = 0; i < a.tokens.size(); ++i) {
    logits[static_cast<size_t>(eos)] = -INFINITY;
    EXPECT_EQ(Sampler::argmax(logits), a.tokens[i]) << "step " << i;
    logits = s->feed(std::span<const int32_t>(&a.tokens[i], 1));
  }
  // The streamed text is the tokens' bytes, except that bytes which never form
  // a UTF-8 character are shown as U+FFFD.
  const std::string raw = engine_->tokenizer().decode(a.tokens);
  if (a.text.find("\xEF\xBF\xBD") == std::string::npos) EXPECT_EQ(raw, a.text);
  else EXPECT_NE(raw, a.text);
}

TEST_F(Generate, SeededSamplingIsReproducible) {
  GenerateOptions g;
  g.max_tokens = 16;
  g.ban_eos = true;
  g.sampling.seed = 7;
  const auto a = run(g), b = run(g);
  EXPECT_EQ(a.tokens, b.tokens);
  g.sampling.seed = 8;
  const auto c = run(g);
  EXPECT_NE(a.tokens, c.tokens);
  EXPECT_NE(a.tokens, run(greedy(16)).tokens);
}

TEST_F(Generate, StopStringSplitAcrossTokensIsCutExactly) {
  std::vector<std::string> pieces;
  const GenerateResult full = run(greedy(12), &pieces);
  // A stop string made of the end of one token's text and the start of the next.
  size_t i = 2;
  while (i + 1 < pieces.size() && (pieces[i].size() < 1 || pieces[i + 1].size() < 1)) ++i;
  ASSERT_LT(i + 1, pieces.size());
  const std::string stop = pieces[i] + pieces[i + 1];
  GenerateOptions g = greedy(12);
  g.stop = {stop};
  std::vector<std::string> shown;
  const GenerateResult r = run(g, &shown);
  EXPECT_EQ(r.stop, StopReason::stop_string);
  const size_t at = full.text.find(stop);
  ASSERT_NE(at, std::string::npos);
  EXPECT_EQ(r.text, full.text.substr(0, at));
  std::string joined;
  for (const auto& p : shown) joined += p;
  EXPECT_EQ(joined, r.text);  // the stream never showed any byte of the stop string
}

TEST_F(Generate, MaxTokensEndsGeneration) {
  const GenerateResult r = run(greedy(5));
  EXPECT_EQ(r.stop, StopReason::max_tokens);
  EXPECT_EQ(r.tokens.size(), 5u);
  ASSERT_TRUE(r.unfed.has_value());  // the last token is not fed: no wasted forward pass
  EXPECT_EQ(*r.unfed, r.tokens.back());
}

TEST_F(Generate, ContextOverflowEndsCleanlyWithMessage) {
  const int64_t n_prompt = static_cast<int64_t>(prompt().size());
  GenerateOptions g = greedy(100);
  g.ctx_size = n_prompt + 3;
  auto s = engine_->new_session(4096);
  const GenerateResult r = generate(*engine_, *s, prompt(), g);
  EXPECT_EQ(r.stop, StopReason::context_full);
  EXPECT_EQ(r.tokens.size(), 3u);
  EXPECT_LE(s->position(), g.ctx_size);
  EXPECT_NE(r.message.find("context full"), std::string::npos);
  // A prompt that does not fit is refused before anything is fed.
  g.ctx_size = n_prompt;
  auto s2 = engine_->new_session(4096);
  try {
    generate(*engine_, *s2, prompt(), g);
    FAIL() << "expected ds4::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("but the context is"), std::string::npos) << e.what();
  }
  EXPECT_EQ(s2->position(), 0);
}

TEST_F(Generate, ContinuingASessionEqualsOneLongPrompt) {
  // The REPL relies on this: feeding only a new suffix continues the state.
  GenerateOptions g = greedy(4);
  auto s = engine_->new_session(4096);
  const auto first = generate(*engine_, *s, prompt(), g);
  std::vector<int32_t> more{*first.unfed, engine_->specials().eos};
  const auto turn = user_turn(*engine_, "And another.", Thinking::none);
  more.insert(more.end(), turn.begin(), turn.end());
  const auto second = generate(*engine_, *s, more, g);
  std::vector<int32_t> all = prompt();
  all.insert(all.end(), first.tokens.begin(), first.tokens.end());
  all.push_back(engine_->specials().eos);
  all.insert(all.end(), turn.begin(), turn.end());
  auto fresh = engine_->new_session(4096);
  const auto once = generate(*engine_, *fresh, all, g);
  EXPECT_EQ(second.tokens, once.tokens);
}

}  // namespace
}  // namespace ds4::engine

namespace ds4::engine {
namespace {

// The one-shot prompt (chat::render_single) and the REPL's head + turn pieces
// must give the same tokens, or the REPL's first turn would differ from -p.
TEST_F(Generate, SinglePromptEqualsReplHeadPlusTurn) {
  for (Thinking t : {Thinking::none, Thinking::high, Thinking::max}) {
    for (std::string_view system : {std::string_view(""), std::string_view("You are a helpful assistant")}) {
      const std::string user = "Hi <｜Assistant｜> there";  // control spelling in user text stays text
      auto want = prompt_head(*engine_, system, t);
      const auto turn = user_turn(*engine_, user, t);
      want.insert(want.end(), turn.begin(), turn.end());
      EXPECT_EQ(single_prompt(*engine_, system, user, t), want) << thinking_name(t) << " / '" << system << "'";
    }
  }
}

}  // namespace
}  // namespace ds4::engine
