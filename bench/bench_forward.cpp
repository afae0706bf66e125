// CPU forward speed: decode (one token per call after a 64-token prompt) and
// prefill (a whole prompt per call), in tokens/s, on the tiny fixtures and, when
// DS4_BENCH_MODEL names a GGUF (e.g. `ds4 synth --shape flash --layers 2
// --recipe ds4-q2`), on that model too.
//
// Decode is memory-bound, so next to tok/s it prints the weight bytes one
// token reads (the active weights only: the k selected experts + shared expert
// + attention + embedding row + output head), the GB/s of weights this gives
// ("w_GB/s"), a multi-threaded memory-read bandwidth measured in the same run
// ("mem_GB/s") and their ratio ("of_mem").
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <thread>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/backend.h"
#include "model/convert.h"
#include "model/token_cost.h"
#include "util/log.h"
#include "util/thread_pool.h"

namespace {

namespace fs = std::filesystem;
using ds4::backend::NumericsMode;

std::shared_ptr<ds4::model::Model> load(const std::string& name) {
  static std::map<std::string, std::shared_ptr<ds4::model::Model>> cache;
  auto& m = cache[name];
  if (m) return m;
  ds4::log::set_level(ds4::log::Level::warn);
  if (name.ends_with(".gguf")) return m = ds4::model::Model::load(name);
  const char* env = std::getenv("DS4_SOURCE_DIR");
  const fs::path src = env ? fs::path(env) : fs::path(__FILE__).parent_path().parent_path();
  const fs::path out = fs::temp_directory_path() / ("ds4_bench_" + name + ".gguf");
  ds4::model::ConvertOptions o;
  o.hf_dir = (src / "tests" / "fixtures" / "hf" / name).string();
  o.output = out.string();
  o.recipe = "f32";
  ds4::model::convert(o);
  return m = ds4::model::Model::load(out.string());
}

size_t bytes_of(const ds4::model::Weight& w) {
  return w.present() ? static_cast<size_t>(w.rows()) * w.row_bytes() * static_cast<size_t>(w.ne.size() > 2 ? w.ne[2] : 1)
                     : 0;
}

// Weight bytes one decoded token reads: every tensor except the embedding
// table (one row of it) and the routed experts (k of E of them).
double active_bytes_per_token(const ds4::model::Model& m) {
  const auto& c = m.config;
  double total = 0;
  for (const auto& t : m.file->tensors()) total += static_cast<double>(t.nbytes);
  const auto& W = m.weights;
  total -= static_cast<double>(bytes_of(W.token_embd));
  total += static_cast<double>(W.token_embd.row_bytes());
  for (const auto& L : W.layers) {
    const double experts = static_cast<double>(bytes_of(L.gate_exps) + bytes_of(L.up_exps) + bytes_of(L.down_exps));
    total -= experts * (1.0 - static_cast<double>(c.n_expert_used) / c.n_expert);
    // tid2eid is a lookup table: one row per token.
    if (L.tid2eid.present()) total -= static_cast<double>(bytes_of(L.tid2eid)) - c.n_expert_used * 4.0;
  }
  return total;
}

// Multi-threaded sequential read of 512 MiB (past any cache), best of 5.
double mem_read_gbps(int threads) {
  static std::map<int, double> cache;
  if (cache.count(threads)) return cache[threads];
  constexpr size_t kWords = (size_t{512} << 20) / 8, kChunk = 1 << 16;
  std::vector<uint64_t> buf(kWords);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = i * 0x9E3779B97F4A7C15ull;
  ds4::ThreadPool pool(threads);
  const auto n = static_cast<int64_t>(kWords / kChunk);
  std::vector<uint64_t> sink(static_cast<size_t>(n));
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) {
        const uint64_t* p = buf.data() + static_cast<size_t>(k) * kChunk;
        uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (size_t i = 0; i < kChunk; i += 4) {
          a0 += p[i];
          a1 += p[i + 1];
          a2 += p[i + 2];
          a3 += p[i + 3];
        }
        sink[static_cast<size_t>(k)] = a0 + a1 + a2 + a3;
      }
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(sink.data());
    best = std::max(best, static_cast<double>(kWords * 8) / s / 1e9);
  }
  return cache[threads] = best;
}

#if defined(__x86_64__) && defined(__GNUC__)
// int8 multiply-adds per second one thread's AVX-512 VNNI units give: 8
// independent vpdpbusd chains over registers (no memory), 2^22 rounds.
[[gnu::target("avx512f,avx512vnni")]] double vnni_macs_one_thread() {
  __m512i acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = _mm512_set1_epi32(k);
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  constexpr int64_t kRounds = int64_t{1} << 22;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < kRounds; ++r) {
    for (int k = 0; k < 8; ++k) acc[k] = _mm512_dpbusd_epi32(acc[k], a, b);
    __asm__ volatile("" : "+v"(acc[0]), "+v"(acc[1]), "+v"(acc[2]), "+v"(acc[3]), "+v"(acc[4]), "+v"(acc[5]),
                     "+v"(acc[6]), "+v"(acc[7]));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int32_t sink[16];
  _mm512_storeu_si512(sink, acc[0]);
  benchmark::DoNotOptimize(sink);
  return static_cast<double>(kRounds) * 8 * 64 / s;
}
#endif

// The machine's int8 multiply-add rate on `threads` threads (0 where the CPU
// has no AVX-512 VNNI): what prefill's integer products could reach at best.
double int8_peak_gmacs(int threads) {
  static std::map<int, double> cache;
  if (cache.count(threads)) return cache[threads];
  double total = 0;
#if defined(__x86_64__) && defined(__GNUC__)
  if (__builtin_cpu_supports("avx512vnni")) {
    ds4::ThreadPool pool(threads);
    std::vector<double> per(static_cast<size_t>(threads));
    pool.parallel_for(threads, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) per[static_cast<size_t>(t)] = vnni_macs_one_thread();
    }, 1);
    for (double v : per) total += v;
  }
#endif
  return cache[threads] = total / 1e9;
}

std::vector<int32_t> tokens(size_t n, uint32_t vocab) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 7919 + 3) % vocab);
  return t;
}

int bench_threads() {
  const char* env = std::getenv("DS4_THREADS");
  const int t = env ? std::atoi(env) : 0;
  return t > 0 ? t : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::unique_ptr<ds4::backend::Backend> backend(std::shared_ptr<ds4::model::Model> m) {
  ds4::backend::BackendOptions bo;
  bo.threads = bench_threads();
  return ds4::backend::make_backend("cpu", std::move(m), bo);
}

void BM_Decode(benchmark::State& st, const std::string& model, NumericsMode mode) {
  auto m = load(model);
  auto be = backend(m);
  const uint32_t V = m->config.n_vocab;
  std::vector<float> logits(V);
  constexpr int64_t kCtx = 4096;
  auto s = be->new_session({mode, kCtx});
  be->forward(*s, tokens(64, V), {});
  int32_t tok = 5;
  double secs = 0;
  for (auto _ : st) {
    if (s->position() >= kCtx) {
      // A long run fills the context: go on in a fresh session (untimed).
      s = be->new_session({mode, kCtx});
      be->forward(*s, tokens(64, V), {});
    }
    const auto t0 = std::chrono::steady_clock::now();
    be->forward(*s, std::span<const int32_t>(&tok, 1), logits);
    secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    tok = static_cast<int32_t>((tok * 31 + 7) % V);
    benchmark::DoNotOptimize(logits.data());
  }
  const double tps = static_cast<double>(st.iterations()) / secs;
  const double bytes = active_bytes_per_token(*m), mem = mem_read_gbps(bench_threads());
  st.counters["tok/s"] = tps;
  st.counters["w_MB/tok"] = bytes / 1e6;
  st.counters["w_GB/s"] = bytes * tps / 1e9;
  st.counters["mem_GB/s"] = mem;
  st.counters["of_mem"] = bytes * tps / 1e9 / mem;
  st.counters["threads"] = bench_threads();
}

void BM_Prefill(benchmark::State& st, const std::string& model, NumericsMode mode, int n) {
  auto m = load(model);
  auto be = backend(m);
  const uint32_t V = m->config.n_vocab;
  const auto toks = tokens(static_cast<size_t>(n), V);
  // As the engine prefills a prompt: every token but the last without logits
  // (the LM head is skipped), then the last one with them.
  std::vector<float> logits(V);
  const std::span<const int32_t> all(toks);
  for (auto _ : st) {
    auto s = be->new_session({mode, 4096});
    be->forward(*s, all.first(all.size() - 1), {});
    be->forward(*s, all.last(1), logits);
    benchmark::DoNotOptimize(logits.data());
  }
  st.counters["tok/s"] = benchmark::Counter(n * static_cast<double>(st.iterations()), benchmark::Counter::kIsRate);
  st.counters["threads"] = bench_threads();
  // The weight products' rate against the machine's measured int8 rate (the
  // quantized recipes' products are int8 dot products; float ones are not,
  // so the share means most for them).
  const double macs = ds4::model::prefill_macs_per_token(*m);
  st.counters["w_GMAC/s"] = benchmark::Counter(macs * n * static_cast<double>(st.iterations()) / 1e9,
                                               benchmark::Counter::kIsRate);
  const double peak = int8_peak_gmacs(bench_threads());
  if (peak > 0) st.counters["int8_GMAC/s"] = peak;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  auto reg = [](const std::string& name, auto fn) {
    return benchmark::RegisterBenchmark(name.c_str(), fn)->UseRealTime()->Unit(benchmark::kMillisecond);
  };
  for (const char* fx : {"tiny", "tiny-flash"}) {
    const std::string f = fx;
    reg("decode/" + f + "/exact", [f](benchmark::State& st) { BM_Decode(st, f, NumericsMode::exact); });
    reg("decode/" + f + "/faithful", [f](benchmark::State& st) { BM_Decode(st, f, NumericsMode::faithful); });
    reg("prefill64/" + f + "/exact", [f](benchmark::State& st) { BM_Prefill(st, f, NumericsMode::exact, 64); });
  }
  // A large model: few iterations, each is seconds of work.
  if (const char* env = std::getenv("DS4_BENCH_MODEL")) {
    const std::string f = env;
    const std::string label = fs::path(f).stem().string();
    reg("decode/" + label + "/faithful", [f](benchmark::State& st) { BM_Decode(st, f, NumericsMode::faithful); })
        ->MinTime(5.0);
    // 32 tokens: ~1 per routed expert; 512: ~12 per expert (Flash: 6 of 256),
    // where the kernels' multi-row dotn unpacks each expert row once per group.
    for (int n : {32, 512})
      reg("prefill" + std::to_string(n) + "/" + label + "/faithful",
          [f, n](benchmark::State& st) { BM_Prefill(st, f, NumericsMode::faithful, n); })
          ->Iterations(n > 64 ? 1 : 2);
  } else {
    std::fprintf(stderr, "bench_forward: set DS4_BENCH_MODEL=model.gguf to also measure a large model\n");
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
