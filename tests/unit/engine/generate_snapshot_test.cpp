// Snapshot -> generate -> restore -> generate equals never having generated:
// what ds4 bench relies on to measure each frontier from the same state.
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

TEST(GenerateSnapshot, RestoreContinuesBitExactly) {
  const fs::path path = fs::temp_directory_path() / ("ds4_snapshot_test_" + std::to_string(::getpid()) + ".gguf");
  model::SynthOptions so;
  so.shape = "tiny";  // compressed layers (CSA + HCA) with 512 vocab; no tokenizer needed here
  so.recipe = "f32";
  so.output = path.string();
  model::synth(so);
  auto m = model::Model::load(path.string());
  auto be = backend::make_backend("cpu", m);
  fs::remove(path);
  std::vector<int32_t> prompt;
  for (int i = 0; i < 37; ++i) prompt.push_back((i * 37 + 5) % 500);  // past several compression windows

  for (auto mode : {backend::NumericsMode::exact, backend::NumericsMode::faithful}) {
    Session s(*be, {mode, 4096});
    s.prefill(prompt);
    const Session::Snapshot snap = s.snapshot();
    EXPECT_GT(snap.bytes(), prompt.size() * sizeof(int32_t));
    std::vector<int32_t> cont{7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    const auto first = s.feed_all(cont);
    s.restore(snap);
    EXPECT_EQ(s.position(), static_cast<int64_t>(prompt.size()));
    EXPECT_EQ(s.tokens(), prompt);
    const auto again = s.feed_all(cont);
    EXPECT_EQ(first, again);  // bit-exact

    // A snapshot of another shape is refused and leaves the session intact.
    Session::Snapshot bad = snap;
    bad.state.resize(bad.state.size() - 3);
    EXPECT_THROW(s.restore(bad), Error);
    EXPECT_EQ(s.position(), static_cast<int64_t>(prompt.size() + cont.size()));
  }
}

}  // namespace
}  // namespace ds4::engine
