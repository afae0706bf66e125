// Session invariants on the tiny fixture: prefill without logits, then decode,
// equals one prefill with logits; reference logits match at the last position.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "engine/session.h"
#include "gguf/safetensors.h"
#include "model/convert.h"

namespace ds4::engine {
namespace {

namespace fs = std::filesystem;

TEST(Session, PrefillThenDecodeMatchesReference) {
  const std::string fx = std::string(DS4_SOURCE_DIR) + "/tests/fixtures/hf/tiny";
  const fs::path out = fs::temp_directory_path() / ("ds4_engine_test_" + std::to_string(::getpid()) + ".gguf");
  model::ConvertOptions o;
  o.hf_dir = fx;
  o.output = out.string();
  o.recipe = "f32";
  model::convert(o);
  auto m = model::Model::load(out.string());
  auto be = backend::make_backend("cpu", m);

  auto ref = safetensors::Checkpoint::open(fx + "/reference.safetensors");
  const auto tok_f = ref.get("tokens_short").to_f32();
  const auto want = ref.get("logits_short").to_f32();
  std::vector<int32_t> toks(tok_f.begin(), tok_f.end());
  const size_t V = m->config.n_vocab, S = toks.size();

  Session a(*be, {backend::NumericsMode::exact, 4096});
  const auto all = a.feed_all(toks);
  Session b(*be, {backend::NumericsMode::exact, 4096});
  b.prefill(std::span<const int32_t>(toks).first(10));
  std::vector<float> last;
  for (size_t t = 10; t < S; ++t) last = b.feed(std::span<const int32_t>(toks).subspan(t, 1));
  EXPECT_EQ(b.position(), static_cast<int64_t>(S));
  EXPECT_EQ(b.tokens(), toks);
  double worst = 0;
  for (size_t v = 0; v < V; ++v) {
    EXPECT_EQ(last[v], all[(S - 1) * V + v]) << v;  // bitwise: same arithmetic whatever the chunking
    worst = std::max(worst, std::fabs(static_cast<double>(last[v]) - want[(S - 1) * V + v]));
  }
  EXPECT_LT(worst, 1e-3);
  fs::remove(out);
}

}  // namespace
}  // namespace ds4::engine
