// Tokenizer throughput on the committed test corpus (tests/fixtures/tokenizer/
// corpus, ~1.6 MB of code, prose in many scripts, emoji, whitespace runs).
// Compare with scripts/bench-tokenizer, which runs HF tokenizers on the same text.
// Rates use wall-clock time, as the HF script does.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "tokenizer/hf_import.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using ds4::tokenizer::Tokenizer;

fs::path repo() {
  if (const char* d = std::getenv("DS4_SOURCE_DIR")) return d;
  return fs::path(__FILE__).parent_path().parent_path();
}

std::string read(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

const Tokenizer& tok() {
  static const Tokenizer t(ds4::tokenizer::gguf_metadata_from_hf((repo() / "data/tokenizer/deepseek-v4/tokenizer.json").string()));
  return t;
}

// All corpus files in name order, concatenated (the same text the HF script uses).
const std::string& corpus() {
  static const std::string text = [] {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(repo() / "tests/fixtures/tokenizer/corpus"))
      if (e.path().extension() == ".txt") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    std::string all;
    for (const auto& f : files) all += read(f);
    return all;
  }();
  return text;
}

void BM_EncodeCorpus(benchmark::State& state) {
  const std::string& text = corpus();
  (void)tok();  // load outside the timed loop
  size_t n = 0;
  for (auto _ : state) {
    auto ids = tok().encode(text);
    n = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(text.size()) / 1e6, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["tokens"] = static_cast<double>(n);
  state.counters["bytes"] = static_cast<double>(text.size());
}
BENCHMARK(BM_EncodeCorpus)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

void BM_EncodeCorpusSpecial(benchmark::State& state) {
  const std::string& text = corpus();
  (void)tok();  // load outside the timed loop
  for (auto _ : state) benchmark::DoNotOptimize(tok().encode(text, true).data());
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(text.size()) / 1e6, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_EncodeCorpusSpecial)->Unit(benchmark::kMillisecond)->MinTime(2.0)->UseRealTime();

void BM_DecodeCorpus(benchmark::State& state) {
  const auto ids = tok().encode(corpus());
  for (auto _ : state) benchmark::DoNotOptimize(tok().decode(ids).data());
  state.counters["MB/s"] = benchmark::Counter(static_cast<double>(corpus().size()) / 1e6, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_DecodeCorpus)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
