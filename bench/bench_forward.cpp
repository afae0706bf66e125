// CPU forward speed on the tiny fixtures: decode (one token per call after a
// 64-token prompt) and prefill (64 tokens per call), reported as tokens/s.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>

#include "backend/backend.h"
#include "model/convert.h"
#include "util/log.h"

namespace {

namespace fs = std::filesystem;

std::shared_ptr<ds4::model::Model> tiny_model(const std::string& fixture) {
  static std::map<std::string, std::shared_ptr<ds4::model::Model>> cache;
  auto& m = cache[fixture];
  if (!m) {
    const char* env = std::getenv("DS4_SOURCE_DIR");
    const fs::path src = env ? fs::path(env) : fs::path(__FILE__).parent_path().parent_path();
    const fs::path out = fs::temp_directory_path() / ("ds4_bench_" + fixture + ".gguf");
    ds4::log::set_level(ds4::log::Level::warn);
    ds4::model::ConvertOptions o;
    o.hf_dir = (src / "tests" / "fixtures" / "hf" / fixture).string();
    o.output = out.string();
    o.recipe = "f32";
    ds4::model::convert(o);
    m = ds4::model::Model::load(out.string());
  }
  return m;
}

std::vector<int32_t> tokens(size_t n, uint32_t vocab) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 7919 + 3) % vocab);
  return t;
}

void BM_Decode(benchmark::State& st, const char* fixture, ds4::backend::NumericsMode mode) {
  auto m = tiny_model(fixture);
  auto be = ds4::backend::make_backend("cpu", m);
  const uint32_t V = m->config.n_vocab;
  std::vector<float> logits(V);
  auto s = be->new_session(mode);
  be->forward(*s, tokens(64, V), {});
  int32_t tok = 5;
  for (auto _ : st) {
    be->forward(*s, std::span<const int32_t>(&tok, 1), logits);
    tok = static_cast<int32_t>((tok * 31 + 7) % V);
    benchmark::DoNotOptimize(logits.data());
  }
  st.counters["tok/s"] = benchmark::Counter(static_cast<double>(st.iterations()), benchmark::Counter::kIsRate);
}

void BM_Prefill64(benchmark::State& st, const char* fixture, ds4::backend::NumericsMode mode) {
  auto m = tiny_model(fixture);
  auto be = ds4::backend::make_backend("cpu", m);
  const uint32_t V = m->config.n_vocab;
  const auto toks = tokens(64, V);
  std::vector<float> logits(64 * size_t{V});
  for (auto _ : st) {
    auto s = be->new_session(mode);
    be->forward(*s, toks, logits);
    benchmark::DoNotOptimize(logits.data());
  }
  st.counters["tok/s"] = benchmark::Counter(64.0 * static_cast<double>(st.iterations()), benchmark::Counter::kIsRate);
}

using ds4::backend::NumericsMode;
BENCHMARK_CAPTURE(BM_Decode, tiny_exact, "tiny", NumericsMode::exact);
BENCHMARK_CAPTURE(BM_Decode, tiny_faithful, "tiny", NumericsMode::faithful);
BENCHMARK_CAPTURE(BM_Decode, tiny_flash_exact, "tiny-flash", NumericsMode::exact);
BENCHMARK_CAPTURE(BM_Prefill64, tiny_exact, "tiny", NumericsMode::exact);
BENCHMARK_CAPTURE(BM_Prefill64, tiny_flash_exact, "tiny-flash", NumericsMode::exact);

}  // namespace

BENCHMARK_MAIN();
