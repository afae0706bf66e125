// matvec throughput of the hot weight types at DeepSeek V4 Flash shapes, in GB/s
// of weight bytes read, next to a plain multi-threaded memory-read bandwidth
// measured in the same run (counter "of_mem" = matvec GB/s / read GB/s).
// Small matrices are rotated through a set of copies four times the size of the
// last-level cache (and the read bandwidth buffer is as large), so the figures
// are for weights streamed from DRAM, as in decoding. Server L3s reach hundreds
// of MiB: a fixed 256 MiB set let a Sapphire Rapids VM (300 MiB L3) serve F16
// matvecs at 1.5x its DRAM bandwidth.
// Thread counts: 1 and all hardware threads, or DS4_BENCH_THREADS=1,8,16.
// BM_ExpertBatch is one decode step's expert gate/up matvecs in one batch.
// BM_PoolCall and BM_MatvecCall give the fixed cost of one call; BM_Dot each
// kernel's speed with its data in L2, BM_DotN the same against 4 activation
// rows at once (dotn), BM_Matmul a matmul over n activation rows.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include <unistd.h>

#include "quant/kernels.h"
#include "quant/quant.h"
#include "util/thread_pool.h"

namespace {

using ds4::GgmlType;
using ds4::ThreadPool;

// Last-level cache size: sysconf, else sysfs (some VMs report 0), else 32 MiB.
size_t l3_bytes() {
  static const size_t v = [] {
    const long s = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (s > 0) return static_cast<size_t>(s);
    if (std::FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r")) {
      unsigned long kib = 0;
      const int got = std::fscanf(f, "%luK", &kib);
      std::fclose(f);
      if (got == 1 && kib > 0) return static_cast<size_t>(kib) << 10;
    }
    return size_t{32} << 20;
  }();
  return v;
}
size_t rotate_bytes() { return std::max(size_t{256} << 20, 4 * l3_bytes()); }
size_t mem_bytes() { return std::max(size_t{512} << 20, 4 * l3_bytes()) & ~((size_t{8} << 16) - 1); }

ThreadPool& pool(int threads) {
  static std::vector<std::unique_ptr<ThreadPool>> pools(64);
  auto& p = pools[static_cast<size_t>(threads)];
  if (!p) p = std::make_unique<ThreadPool>(threads);
  return *p;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) uint64_t sum_words(const uint64_t* p, size_t n) {
#else
uint64_t sum_words(const uint64_t* p, size_t n) {
#endif
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i + 4 <= n; i += 4) {
    a += p[i];
    b += p[i + 1];
    c += p[i + 2];
    d += p[i + 3];
  }
  return a + b + c + d;  // n is a multiple of 4 (chunks of 2^16 words)
}

const std::vector<uint64_t>& mem_buffer() {
  static const std::vector<uint64_t> buf = [] {
    std::vector<uint64_t> v(mem_bytes() / 8);
    for (size_t i = 0; i < v.size(); ++i) v[i] = i * 0x9E3779B97F4A7C15ull;
    return v;
  }();
  return buf;
}

double read_gbps(int threads) {
  const auto& buf = mem_buffer();
  ThreadPool& p = pool(threads);
  const size_t chunk = 1 << 16;  // words per task
  const int64_t nchunks = static_cast<int64_t>(buf.size() / chunk);
  std::vector<uint64_t> sink(static_cast<size_t>(nchunks));
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    p.parallel_for(nchunks, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) sink[static_cast<size_t>(c)] = sum_words(buf.data() + static_cast<size_t>(c) * chunk, chunk);
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    benchmark::DoNotOptimize(sink.data());
    best = std::max(best, static_cast<double>(mem_bytes()) / s / 1e9);
  }
  return best;
}

double mem_gbps(int threads) {
  static std::vector<double> cache(64, 0.0);
  double& v = cache[static_cast<size_t>(threads)];
  if (v == 0) v = read_gbps(threads);
  return v;
}

void BM_MemRead(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const auto& buf = mem_buffer();
  ThreadPool& p = pool(threads);
  const size_t chunk = 1 << 16;
  const int64_t nchunks = static_cast<int64_t>(buf.size() / chunk);
  std::vector<uint64_t> sink(static_cast<size_t>(nchunks));
  for (auto _ : state) {
    p.parallel_for(nchunks, [&](int64_t b, int64_t e) {
      for (int64_t c = b; c < e; ++c) sink[static_cast<size_t>(c)] = sum_words(buf.data() + static_cast<size_t>(c) * chunk, chunk);
    });
    benchmark::DoNotOptimize(sink.data());
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(mem_bytes()) * static_cast<double>(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
}

// One buffer for all benchmarks, grown as needed and never freed: a fresh
// GB-sized allocation per benchmark spent most of the run in page faults.
uint8_t* weight_buffer(size_t bytes) {
  static std::unique_ptr<uint8_t[]> buf;
  static size_t size = 0;
  if (bytes > size) {
    buf.reset();
    buf.reset(new uint8_t[bytes]);
    size = bytes;
  }
  return buf.get();
}

// Copies of a rows x cols matrix: 64 distinct quantized rows tiled, enough
// copies to exceed the cache.
struct Weights {
  uint8_t* buf = nullptr;
  uint8_t* data() const { return buf; }
  size_t matrix_bytes = 0;
  int copies = 0;
};

Weights make_weights(GgmlType t, int64_t rows, int64_t cols, bool rotate = true) {
  Weights w;
  const size_t rb = ds4::quant::row_bytes(t, cols);
  w.matrix_bytes = rb * static_cast<size_t>(rows);
  w.copies = rotate ? static_cast<int>(std::max<size_t>(1, (rotate_bytes() + w.matrix_bytes - 1) / w.matrix_bytes)) : 1;
  w.buf = weight_buffer(w.matrix_bytes * static_cast<size_t>(w.copies));
  const int distinct = 64;
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> x(static_cast<size_t>(cols));
  std::vector<uint8_t> seed(rb * distinct);
  for (int r = 0; r < distinct; ++r) {
    for (auto& v : x) v = nd(rng);
    ds4::quant::quantize_row(t, x.data(), seed.data() + rb * static_cast<size_t>(r), cols);
  }
  // The first copy row by row, the others whole.
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(w.data() + rb * static_cast<size_t>(r), seed.data() + rb * static_cast<size_t>(r % distinct), rb);
  for (int c = 1; c < w.copies; ++c) std::memcpy(w.data() + w.matrix_bytes * static_cast<size_t>(c), w.data(), w.matrix_bytes);
  return w;
}

// Times call(copy) over the rotating copies of w (each call reads one whole
// copy, w.matrix_bytes, from DRAM) and reports GB/s of weights read, the read
// bandwidth of as many threads, their ratio, and which kernel matvec picked.
template <class Call>
void time_streamed(benchmark::State& state, GgmlType t, const Weights& w, int threads, Call&& call) {
  const double mem = mem_gbps(threads);
  int c = 0;
  double secs = 0;
  for (auto _ : state) {
    const uint8_t* copy = w.data() + w.matrix_bytes * static_cast<size_t>(c);
    const auto t0 = std::chrono::steady_clock::now();
    call(copy);
    secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    c = (c + 1) % w.copies;
  }
  const double gbps = static_cast<double>(w.matrix_bytes) * static_cast<double>(state.iterations()) / secs / 1e9;
  state.counters["GB/s"] = gbps;
  state.counters["mem_GB/s"] = mem;
  state.counters["of_mem"] = gbps / mem;
  const ds4::quant::DotKernel* k = ds4::quant::best_kernel(t);
  for (auto isa : {ds4::quant::Isa::Avx512, ds4::quant::Isa::Avx2, ds4::quant::Isa::Neon, ds4::quant::Isa::Scalar})
    if (ds4::quant::find_kernel(t, isa) == k) {
      state.SetLabel(ds4::quant::isa_name(isa));
      break;
    }
}

void BM_Matvec(benchmark::State& state, GgmlType t) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const int threads = static_cast<int>(state.range(2));
  const Weights w = make_weights(t, rows, cols);
  std::vector<float> x(static_cast<size_t>(cols)), y(static_cast<size_t>(rows));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  ThreadPool& p = pool(threads);
  time_streamed(state, t, w, threads, [&](const uint8_t* W) {
    ds4::quant::matvec(t, W, rows, cols, x.data(), y.data(), &p);
    benchmark::DoNotOptimize(y.data());
  });
}

// One decode step's expert gate and up matvecs as the CPU backend issues them:
// one matvec_batch of 2 x `experts` jobs (Flash: 6 routed + 1 shared, 2048 x
// 4096 each) sharing one activation, so the pool is woken once for all of them
// rather than once per small matrix as in BM_Matvec. GB/s and of_mem as there.
void BM_ExpertBatch(benchmark::State& state, GgmlType t) {
  const int64_t experts = state.range(0), rows = 2048, cols = 4096;
  const int threads = static_cast<int>(state.range(1));
  const int64_t jobs = 2 * experts;
  const Weights w = make_weights(t, rows * jobs, cols);  // each copy: the batch's matrices back to back
  const size_t mb = w.matrix_bytes / static_cast<size_t>(jobs);
  std::vector<float> x(static_cast<size_t>(cols)), y(static_cast<size_t>(rows * jobs));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  ThreadPool& p = pool(threads);
  std::vector<ds4::quant::MatvecJob> batch(static_cast<size_t>(jobs));
  time_streamed(state, t, w, threads, [&](const uint8_t* W) {
    for (int64_t j = 0; j < jobs; ++j)
      batch[static_cast<size_t>(j)] = {t, W + mb * static_cast<size_t>(j), rows, cols, x.data(), y.data() + rows * j};
    ds4::quant::matvec_batch(batch, &p);
    benchmark::DoNotOptimize(y.data());
  });
}

// Several activation rows at once (prompt prefill; an expert serving several
// tokens): "GB/s" counts the weights once per activation row, so it compares
// with BM_Matvec's; above it, matmul gains from unpacking each weight row once
// for a group of rows (the kernels' dotn).
void BM_Matmul(benchmark::State& state, GgmlType t) {
  const int64_t rows = state.range(0), cols = state.range(1), n = state.range(2);
  const int threads = static_cast<int>(state.range(3));
  const Weights w = make_weights(t, rows, cols);
  std::vector<float> x(static_cast<size_t>(cols * n)), y(static_cast<size_t>(rows * n));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  ThreadPool& p = pool(threads);
  int c = 0;
  for (auto _ : state) {
    ds4::quant::matmul(t, w.data() + w.matrix_bytes * static_cast<size_t>(c), rows, cols, x.data(), n, y.data(), &p);
    benchmark::DoNotOptimize(y.data());
    c = (c + 1) % w.copies;
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(w.matrix_bytes) * static_cast<double>(n) * static_cast<double>(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["rows/s"] = benchmark::Counter(static_cast<double>(n) * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

// Kernel compute speed alone: one thread, 64 rows x 4096 columns kept in L2,
// dotted over and over. GB/s of weight bytes; compare with mem_GB/s of one
// thread to see whether a kernel can keep up with memory. BM_DotN: the same
// rows against 4 activation rows through the kernel's dotn, GB/s counting the
// weights once per activation row (so above BM_Dot's figure, dotn gains).
// On a noisy (virtualized) host, --benchmark_repetitions=N prints "max" rows:
// the best rate of the N runs.
void dot_bench(benchmark::State& state, GgmlType t, int nact) {
  const auto isa = static_cast<ds4::quant::Isa>(state.range(0));
  const ds4::quant::DotKernel* k = ds4::quant::find_kernel(t, isa);
  if (!k || (nact > 1 && !k->dotn)) {
    state.SkipWithError(k ? "this kernel has no dotn" : "no kernel for this ISA on this CPU");
    return;
  }
  const int64_t rows = 64, cols = 4096;
  const Weights w = make_weights(t, rows, cols, false);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  const size_t ab = k->act == GgmlType::F32 ? static_cast<size_t>(cols) * 4 : ds4::quant::row_bytes(k->act, cols);
  std::vector<uint8_t> act(ab * static_cast<size_t>(nact));
  std::vector<float> x(static_cast<size_t>(cols));
  for (int j = 0; j < nact; ++j) {
    for (auto& v : x) v = nd(rng);
    uint8_t* a = act.data() + ab * static_cast<size_t>(j);
    ds4::quant::quantize_activation(*k, x.data(), a, cols);
  }
  const size_t rb = ds4::quant::row_bytes(t, cols);
  float sink = 0, out[4];
  for (auto _ : state) {
    for (int64_t r = 0; r < rows; ++r) {
      const uint8_t* wr = w.data() + rb * static_cast<size_t>(r);
      if (nact == 1) {
        sink += k->dot(cols, wr, act.data());
      } else {
        k->dotn(cols, wr, act.data(), ab, nact, out);
        sink += out[0];
      }
    }
    benchmark::DoNotOptimize(sink);
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(rb * rows) * nact * static_cast<double>(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["mem1_GB/s"] = mem_gbps(1);
  state.SetLabel(ds4::quant::isa_name(isa));
}
void BM_Dot(benchmark::State& state, GgmlType t) { dot_bench(state, t, 1); }
void BM_DotN(benchmark::State& state, GgmlType t) { dot_bench(state, t, 4); }

// Fixed cost of one call, for scale against a Flash expert matvec (~25 us at
// 100 GB/s): an empty parallel_for, and a matvec small enough to stay in cache
// (16 rows of 4096 columns per thread).
void BM_PoolCall(benchmark::State& state) {
  ThreadPool& p = pool(static_cast<int>(state.range(0)));
  std::vector<int64_t> sink(64 * 64);
  for (auto _ : state) {
    p.parallel_for(static_cast<int64_t>(sink.size()), [&](int64_t b, int64_t e) { sink[static_cast<size_t>(b)] = e; });
    benchmark::DoNotOptimize(sink.data());
  }
}
void BM_MatvecCall(benchmark::State& state, GgmlType t) {
  const int threads = static_cast<int>(state.range(0));
  const int64_t rows = 16 * threads, cols = 4096;
  const Weights w = make_weights(t, rows, cols, false);
  std::vector<float> x(static_cast<size_t>(cols), 0.5f), y(static_cast<size_t>(rows));
  ThreadPool& p = pool(threads);
  for (auto _ : state) {
    ds4::quant::matvec(t, w.data(), rows, cols, x.data(), y.data(), &p);
    benchmark::DoNotOptimize(y.data());
  }
}

void isas(benchmark::internal::Benchmark* b) {
  for (int i : {0, 1, 2, 3}) b->Arg(i);
  b->ArgName("isa")->Unit(benchmark::kMicrosecond);
  b->ComputeStatistics("max", [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); });
}

// Thread counts to measure: 1 and all hardware threads, or the comma-separated
// list in DS4_BENCH_THREADS (to see how throughput scales in between).
std::vector<int> thread_counts() {
  std::vector<int> ts;
  if (const char* e = std::getenv("DS4_BENCH_THREADS")) {
    for (const char* p = e; *p;) {
      char* end = nullptr;
      const long v = std::strtol(p, &end, 10);
      if (end == p) break;
      if (v >= 1 && v < 64) ts.push_back(static_cast<int>(v));
      p = *end ? end + 1 : end;
    }
  }
  if (ts.empty()) {
    const int hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    ts.push_back(1);
    if (hw > 1) ts.push_back(std::min(hw, 63));
  }
  return ts;
}

void shapes(benchmark::internal::Benchmark* b) {
  for (int t : thread_counts()) {
    b->Args({4096, 2048, t});   // expert (rows x cols)
    b->Args({2048, 4096, t});   // down expert
    b->Args({4096, 32768, t});  // attention-like
  }
  b->ArgNames({"rows", "cols", "threads"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void matmul_shapes(benchmark::internal::Benchmark* b) {
  for (int t : thread_counts())
    for (int n : {1, 4, 16, 64, 512}) b->Args({2048, 4096, n, t});  // gate/up expert, n tokens
  b->ArgNames({"rows", "cols", "n", "threads"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void expert_args(benchmark::internal::Benchmark* b) {
  for (int t : thread_counts()) b->Args({7, t});
  b->ArgNames({"experts", "threads"})->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void mem_args(benchmark::internal::Benchmark* b) {
  for (int t : thread_counts()) b->Arg(t);
  b->ArgName("threads")->Unit(benchmark::kMillisecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_MemRead)->Apply(mem_args);
BENCHMARK(BM_PoolCall)->Apply(mem_args)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_MatvecCall, Q2_K, GgmlType::Q2_K)->Apply(mem_args)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_MatvecCall, Q8_0, GgmlType::Q8_0)->Apply(mem_args)->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Matvec, Q2_K, GgmlType::Q2_K)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Matvec, IQ2_XXS, GgmlType::IQ2_XXS)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Matvec, Q4_K, GgmlType::Q4_K)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Matvec, MXFP4, GgmlType::MXFP4)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Matvec, Q8_0, GgmlType::Q8_0)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Matvec, F16, GgmlType::F16)->Apply(shapes);
BENCHMARK_CAPTURE(BM_Matvec, BF16, GgmlType::BF16)->Apply(shapes);
BENCHMARK_CAPTURE(BM_ExpertBatch, Q2_K, GgmlType::Q2_K)->Apply(expert_args);
BENCHMARK_CAPTURE(BM_ExpertBatch, IQ2_XXS, GgmlType::IQ2_XXS)->Apply(expert_args);
BENCHMARK_CAPTURE(BM_ExpertBatch, Q4_K, GgmlType::Q4_K)->Apply(expert_args);
BENCHMARK_CAPTURE(BM_Matmul, Q2_K, GgmlType::Q2_K)->Apply(matmul_shapes);
BENCHMARK_CAPTURE(BM_Matmul, IQ2_XXS, GgmlType::IQ2_XXS)->Apply(matmul_shapes);
BENCHMARK_CAPTURE(BM_Matmul, Q4_K, GgmlType::Q4_K)->Apply(matmul_shapes);
BENCHMARK_CAPTURE(BM_Matmul, Q8_0, GgmlType::Q8_0)->Apply(matmul_shapes);
BENCHMARK_CAPTURE(BM_Dot, Q2_K, GgmlType::Q2_K)->Apply(isas);
BENCHMARK_CAPTURE(BM_Dot, IQ2_XXS, GgmlType::IQ2_XXS)->Apply(isas);
BENCHMARK_CAPTURE(BM_Dot, Q4_K, GgmlType::Q4_K)->Apply(isas);
BENCHMARK_CAPTURE(BM_Dot, MXFP4, GgmlType::MXFP4)->Apply(isas);
BENCHMARK_CAPTURE(BM_Dot, Q8_0, GgmlType::Q8_0)->Apply(isas);
BENCHMARK_CAPTURE(BM_Dot, F16, GgmlType::F16)->Apply(isas);
BENCHMARK_CAPTURE(BM_Dot, BF16, GgmlType::BF16)->Apply(isas);
BENCHMARK_CAPTURE(BM_DotN, Q2_K, GgmlType::Q2_K)->Apply(isas);
BENCHMARK_CAPTURE(BM_DotN, IQ2_XXS, GgmlType::IQ2_XXS)->Apply(isas);
BENCHMARK_CAPTURE(BM_DotN, Q4_K, GgmlType::Q4_K)->Apply(isas);
BENCHMARK_CAPTURE(BM_DotN, MXFP4, GgmlType::MXFP4)->Apply(isas);
BENCHMARK_CAPTURE(BM_DotN, Q8_0, GgmlType::Q8_0)->Apply(isas);
BENCHMARK_MAIN();
