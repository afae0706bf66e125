#include "util/thread_pool.h"

#include <algorithm>

namespace ds4 {
namespace {

thread_local bool t_in_pool_task = false;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spin this many rounds waiting for new work before sleeping on the condition
// variable (a few tens of microseconds: shorter than the gap between the
// matvecs of one layer, much shorter than the gap between tokens).
constexpr int kSpinRounds = 4000;

constexpr uint64_t kUnitMask = 0xFFFFFFFFu;
// Units per job stay below 2^31 so that a unit index fits the low half of a
// tagged counter with room to overshoot.
constexpr int64_t kMaxUnits = int64_t{1} << 31;

// Chunks per participant's share: small enough that others can take over the
// share of a thread that stalls, large enough that claiming stays rare.
constexpr int64_t kChunksPerShare = 8;

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  claims_ = std::make_unique<Slot[]>(static_cast<size_t>(n_threads));
  dones_ = std::make_unique<Slot[]>(static_cast<size_t>(n_threads));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lk(m_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

// Takes the next chunk of `owner`'s share into [b, e) (in elements).
bool ThreadPool::claim(const Job& j, int owner, int64_t& b, int64_t& e) {
  const int64_t end = (owner + 1) * j.units / j.parts;
  std::atomic<uint64_t>& next = claims_[static_cast<size_t>(owner)].v;
  uint64_t cur = next.load(std::memory_order_relaxed);
  for (;;) {
    if ((cur >> 32) != j.tag) return false;  // a later job: this one is over
    const int64_t u = static_cast<int64_t>(cur & kUnitMask);
    if (u >= end) return false;
    const int64_t u1 = std::min(end, u + j.chunk);
    if (next.compare_exchange_weak(cur, (j.tag << 32) | static_cast<uint64_t>(u1), std::memory_order_relaxed)) {
      b = u * j.unit;
      e = std::min(j.n, u1 * j.unit);
      return true;
    }
  }
}

void ThreadPool::work(const Job& j, int self) {
  uint64_t count = 0;
  auto run_chunks = [&](int owner) {
    int64_t b = 0, e = 0;
    while (claim(j, owner, b, e)) {
      if (!failed_.load(std::memory_order_relaxed)) {
        try {
          t_in_pool_task = true;
          j.call(j.ctx, b, e);
          t_in_pool_task = false;
        } catch (...) {
          t_in_pool_task = false;
          std::lock_guard lk(err_m_);
          if (!error_) error_ = std::current_exception();
          failed_.store(true, std::memory_order_relaxed);
        }
      }
      // Whole units, including the short last one: the caller counts units.
      count += static_cast<uint64_t>((e - b + j.unit - 1) / j.unit);
      dones_[static_cast<size_t>(self)].v.store((j.tag << 32) | count, std::memory_order_release);
    }
  };
  run_chunks(self);
  for (int k = 1; k < j.parts; ++k) run_chunks((self + k) % j.parts);
}

void ThreadPool::worker_loop(int self) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int i = 0; (g == seen || (g & 1)) && i < kSpinRounds; ++i) {
      cpu_relax();
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen || (g & 1)) {
      std::unique_lock lk(m_);
      wake_.wait(lk, [&] {
        const uint64_t now = generation_.load(std::memory_order_acquire);
        return stop_ || (now != seen && !(now & 1));
      });
      if (stop_) return;
      // Back to the top rather than reading the generation here: by now the
      // caller may have finished that job and be rewriting the fields for the
      // next one (the odd store takes no lock). An odd value taken here passed
      // the equality check below with a torn copy: a job's tag and claim words
      // with another job's unit count and parts, so two threads could take the
      // same units (seen as a unit run twice, and as a caller waiting forever
      // for an overshot count, in ASan stress runs on 2 cores).
      continue;
    }
    seen = g;
    const Job j{call_.load(std::memory_order_relaxed), ctx_.load(std::memory_order_relaxed), n_.load(std::memory_order_relaxed),
                unit_.load(std::memory_order_relaxed),  units_.load(std::memory_order_relaxed),
                chunk_.load(std::memory_order_relaxed), parts_.load(std::memory_order_relaxed),
                tag_.load(std::memory_order_relaxed)};
    // The caller may have started rewriting the fields for the next job (this
    // one being finished): then the copy is not one job's and is dropped.
    std::atomic_thread_fence(std::memory_order_acquire);
    if (generation_.load(std::memory_order_relaxed) != g) continue;
    if (self < j.parts) work(j, self);
  }
}

void ThreadPool::run(int64_t n, int64_t grain, Call call, void* ctx) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  // Inline when there is nobody to share with, too little work, or when called
  // from inside a task (the workers are busy with the outer call).
  if (workers_.empty() || n <= grain || t_in_pool_task) {
    call(ctx, 0, n);
    return;
  }
  std::lock_guard submit(submit_);
  const int64_t unit = std::max(grain, (n + kMaxUnits - 1) / kMaxUnits);
  const int64_t units = (n + unit - 1) / unit;
  const int parts = static_cast<int>(std::min<int64_t>(size(), units));
  const int64_t chunk = std::max<int64_t>(1, units / parts / kChunksPerShare);
  const uint64_t tag = ++jobs_ & kUnitMask;

  // Seqlock write: odd generation, fields, even generation.
  const uint64_t g = generation_.load(std::memory_order_relaxed);
  generation_.store(g + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  call_.store(call, std::memory_order_relaxed);
  ctx_.store(ctx, std::memory_order_relaxed);
  n_.store(n, std::memory_order_relaxed);
  unit_.store(unit, std::memory_order_relaxed);
  units_.store(units, std::memory_order_relaxed);
  chunk_.store(chunk, std::memory_order_relaxed);
  parts_.store(parts, std::memory_order_relaxed);
  tag_.store(tag, std::memory_order_relaxed);
  for (int i = 0; i < parts; ++i)
    claims_[static_cast<size_t>(i)].v.store((tag << 32) | static_cast<uint64_t>(i * units / parts), std::memory_order_relaxed);
  failed_.store(false, std::memory_order_relaxed);
  error_ = nullptr;
  {
    std::lock_guard lk(m_);
    generation_.store(g + 2, std::memory_order_release);
  }
  wake_.notify_all();

  const Job j{call, ctx, n, unit, units, chunk, parts, tag};
  work(j, 0);
  // Wait for the units, not for the workers: a worker that wakes late finds
  // nothing left and leaves.
  for (int i = 0;; ++i) {
    int64_t finished = 0;
    for (int p = 0; p < parts; ++p) {
      const uint64_t d = dones_[static_cast<size_t>(p)].v.load(std::memory_order_acquire);
      if ((d >> 32) == tag) finished += static_cast<int64_t>(d & kUnitMask);
    }
    if (finished == units) break;
    if (i < kSpinRounds) cpu_relax();
    else std::this_thread::yield();  // a worker may be waiting for a core
  }
  if (failed_.load()) {
    std::lock_guard lk(err_m_);
    std::rethrow_exception(error_);
  }
}

}  // namespace ds4
