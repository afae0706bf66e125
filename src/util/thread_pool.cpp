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

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int i = 1; i < n_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lk(m_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::work_chunks() {
  for (;;) {
    const int64_t b = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (b >= n_) return;
    const int64_t e = std::min(n_, b + chunk_);
    if (!failed_.load(std::memory_order_relaxed)) {
      try {
        t_in_pool_task = true;
        call_(ctx_, b, e);
        t_in_pool_task = false;
      } catch (...) {
        t_in_pool_task = false;
        std::lock_guard lk(err_m_);
        if (!error_) error_ = std::current_exception();
        failed_.store(true, std::memory_order_relaxed);
      }
    }
    done_.fetch_add(e - b, std::memory_order_acq_rel);
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load();
    for (int i = 0; (g == seen || (g & 1)) && i < kSpinRounds; ++i) {
      cpu_relax();
      g = generation_.load();
    }
    if (g == seen || (g & 1)) {
      std::unique_lock lk(m_);
      wake_.wait(lk, [&] {
        const uint64_t now = generation_.load();
        return stop_ || (now != seen && !(now & 1));
      });
      if (stop_) return;
      g = generation_.load();
    }
    seen = g;
    // Enter the job only if it is still the open one: the caller may already
    // have finished it and started rewriting the fields for the next.
    busy_.fetch_add(1);
    if (generation_.load() == g) work_chunks();
    busy_.fetch_sub(1);
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
  // Close the previous job (odd generation) and wait for stragglers to leave
  // it before rewriting its fields.
  const uint64_t g = generation_.load();
  generation_.store(g + 1);
  for (int i = 0; busy_.load() != 0; ++i) {
    if (i < kSpinRounds) cpu_relax();
    else std::this_thread::yield();
  }
  call_ = call;
  ctx_ = ctx;
  n_ = n;
  // About 4 chunks per thread balances uneven progress without much contention.
  const int64_t per = (n + 4 * size() - 1) / (4 * size());
  chunk_ = std::max(grain, per);
  next_.store(0, std::memory_order_relaxed);
  done_.store(0, std::memory_order_relaxed);
  failed_.store(false, std::memory_order_relaxed);
  error_ = nullptr;
  {
    std::lock_guard lk(m_);
    generation_.store(g + 2);
  }
  wake_.notify_all();
  work_chunks();
  // Wait for the chunks, not for the workers: a worker that wakes late finds
  // nothing left and leaves.
  for (int i = 0; done_.load(std::memory_order_acquire) != n; ++i) {
    if (i < kSpinRounds) cpu_relax();
    else std::this_thread::yield();  // a worker may be waiting for a core
  }
  if (failed_.load()) {
    std::lock_guard lk(err_m_);
    std::rethrow_exception(error_);
  }
}

}  // namespace ds4
