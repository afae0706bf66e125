// Checkpoint save and load speed (docs/prefix-cache.md), in GB/s of file
// bytes, for the session state a full 43-layer V4 Flash model holds at 32768
// tokens, in the CPU backend's canonical f32 layout (~0.46 GB). The state is
// built directly at that position with pseudo-random values: only its size
// and layout matter here, and prefilling 32K Flash tokens on a small CPU box
// would take hours. No weights are loaded.
//
//   save: SessionState::save() + write_checkpoint (temp file, fsync, rename, fsync dir)
//   load: read_checkpoint (read + xxh3 checksum) + SessionState::load()
//   load/cold: the same after dropping the file's pages (posix_fadvise DONTNEED)
//
// DS4_BENCH_DIR picks the directory (default: the system temp directory);
// DS4_BENCH_CTX the token count (default 32768). GB/s are of wall time.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>

#include "backend/cpu/session.h"
#include "engine/checkpoint.h"
#include "model/tensor_specs.h"
#include "util/log.h"

namespace {

namespace fs = std::filesystem;
using namespace ds4;

int64_t ctx_tokens() {
  const char* e = std::getenv("DS4_BENCH_CTX");
  return e ? std::atoll(e) : 32768;
}

fs::path bench_file() {
  const char* e = std::getenv("DS4_BENCH_DIR");
  return (e ? fs::path(e) : fs::temp_directory_path()) / ("ds4_bench_checkpoint_" + std::to_string(::getpid()) + ".ckpt");
}

// A Flash session at `n` tokens: every raw ring, frontier and compressed row present.
std::unique_ptr<backend::cpu::CpuSession> full_session(int64_t n) {
  const model::ModelConfig c = model::preset_config("flash");
  auto s = std::make_unique<backend::cpu::CpuSession>(c, backend::NumericsMode::faithful, n);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  auto fill = [&](std::vector<float>& v) {
    for (float& x : v) x = u(rng);
  };
  for (auto& L : s->layers) {
    fill(L.raw);
    for (auto* cs : {&L.attn, &L.indexer}) {
      if (!cs->dim) continue;
      fill(cs->kv);
      fill(cs->score);
      cs->rows.resize(static_cast<size_t>(n / cs->ratio * cs->dim));
      fill(cs->rows);
    }
  }
  s->pos = n;
  return s;
}

struct State {
  int64_t n = ctx_tokens();
  std::unique_ptr<backend::cpu::CpuSession> session = full_session(n);
  std::vector<int32_t> tokens;
  engine::Fingerprint fp;
  fs::path path = bench_file();
  State() {
    for (int64_t i = 0; i < n; ++i) tokens.push_back(static_cast<int32_t>((i * 7919) % 129280));
  }
  ~State() { fs::remove(path); }
};
State& state() {
  static State s;
  return s;
}

void BM_CheckpointSave(benchmark::State& st) {
  auto& s = state();
  uint64_t bytes = 0;
  for (auto _ : st) {
    engine::Checkpoint c;
    c.snapshot.state = s.session->save();
    c.snapshot.tokens = s.tokens;
    engine::write_checkpoint(s.path.string(), s.fp, c);
    bytes = engine::checkpoint_file_bytes(c);
  }
  st.SetBytesProcessed(static_cast<int64_t>(bytes) * st.iterations());
  st.counters["file_MB"] = static_cast<double>(bytes) / 1e6;
  st.counters["tokens"] = static_cast<double>(s.n);
}

void BM_CheckpointLoad(benchmark::State& st) {
  auto& s = state();
  const bool cold = st.range(0) != 0;
  if (!fs::exists(s.path)) {
    engine::Checkpoint c;
    c.snapshot.state = s.session->save();
    c.snapshot.tokens = s.tokens;
    engine::write_checkpoint(s.path.string(), s.fp, c);
  }
  backend::cpu::CpuSession target(model::preset_config("flash"), backend::NumericsMode::faithful, s.n);
  const auto bytes = fs::file_size(s.path);
  for (auto _ : st) {
    if (cold) {
      st.PauseTiming();
      const int fd = ::open(s.path.c_str(), O_RDONLY);
      ::fdatasync(fd);
      ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      ::close(fd);
      st.ResumeTiming();
    }
    const engine::Checkpoint c = engine::read_checkpoint(s.path.string(), s.fp);
    target.load(c.snapshot.state);
    benchmark::DoNotOptimize(target.pos);
  }
  if (target.pos != s.n) st.SkipWithError("restored position differs");
  st.SetBytesProcessed(static_cast<int64_t>(bytes) * st.iterations());
  st.SetLabel(cold ? "cold (file pages dropped)" : "warm (page cache)");
}

// The parts: the backend's serialization, the file write alone (incl. fsync),
// the file read alone (incl. checksum), the backend's load alone.
void BM_Part(benchmark::State& st) {
  auto& s = state();
  engine::Checkpoint c;
  c.snapshot.state = s.session->save();
  c.snapshot.tokens = s.tokens;
  write_checkpoint(s.path.string(), s.fp, c);
  backend::cpu::CpuSession target(model::preset_config("flash"), backend::NumericsMode::faithful, s.n);
  const auto bytes = engine::checkpoint_file_bytes(c);
  for (auto _ : st) {
    switch (st.range(0)) {
      case 0: benchmark::DoNotOptimize(s.session->save().data()); break;
      case 1: engine::write_checkpoint(s.path.string(), s.fp, c); break;
      case 2: benchmark::DoNotOptimize(engine::read_checkpoint(s.path.string(), s.fp).snapshot.state.data()); break;
      case 3: target.load(c.snapshot.state); break;
    }
  }
  static const char* names[] = {"state serialize (backend)", "file write + fsync", "file read + checksum (warm)",
                                "state load (backend)"};
  st.SetLabel(names[st.range(0)]);
  st.SetBytesProcessed(static_cast<int64_t>(bytes) * st.iterations());
}

BENCHMARK(BM_Part)->DenseRange(0, 3)->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();
BENCHMARK(BM_CheckpointSave)->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();
BENCHMARK(BM_CheckpointLoad)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  ds4::log::set_level(ds4::log::Level::warn);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
