#pragma once
// A fixed pool of worker threads with one operation: parallel_for(n, fn), which
// splits [0, n) over the workers and the calling thread and returns when all
// of it is done. It is built to be called thousands of times per token (a
// Flash expert matvec takes ~25 us): workers spin briefly before sleeping, no
// memory is allocated per call, and the threads touch as few shared cache
// lines as possible, since each transfer between cores costs ~100-200 ns.
// Calls from inside a task, or from several threads at once, are safe (nested
// calls run inline; concurrent ones queue).
//
// Scheduling: each participating thread owns one contiguous share of [0, n)
// and takes it in chunks from a counter in its own cache line, so a streaming
// task (a matvec) reads one sequential run of memory per thread. A thread that
// finishes its share takes the remaining chunks of the others, so a worker that
// wakes late or loses its core for a while (a busy or virtualized host) does
// not hold the call up by more than one chunk.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace ds4 {

class ThreadPool {
 public:
  // n_threads counts the caller: n_threads - 1 workers are started. 0 = all cores.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint ranges covering [0, n); every range starts
  // at a multiple of `grain` and is a multiple of it long, except the one that
  // ends at n. An exception thrown by fn is rethrown here.
  template <class F>
  void parallel_for(int64_t n, F&& fn, int64_t grain = 1) {
    auto call = [](void* ctx, int64_t b, int64_t e) { (*static_cast<std::remove_reference_t<F>*>(ctx))(b, e); };
    run(n, grain, call, const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using Call = void (*)(void*, int64_t, int64_t);
  // One job as a participant sees it (copied out of the shared fields).
  struct Job {
    Call call;
    void* ctx;
    int64_t n, unit, units, chunk;
    int parts;
    uint64_t tag;
  };
  // Per-thread words, one per participant (0 = the caller), each alone in 128
  // bytes (Intel's adjacent-line prefetcher fetches line pairs). The claim
  // counter and the done count live apart: the caller polls every done count,
  // and a claim (a locked compare-exchange) on a line the caller just read
  // would wait for that line to come back.
  struct alignas(128) Slot {
    std::atomic<uint64_t> v{0};
  };
  // claims_[i]: next unit of thread i's share, tagged with the job
  // (tag << 32 | unit), so that a thread still holding an old job's view fails
  // to claim from a new one. dones_[i]: units thread i has finished in the job
  // of the tag (tag << 32 | count).

  void run(int64_t n, int64_t grain, Call call, void* ctx);
  void work(const Job& j, int self);
  bool claim(const Job& j, int owner, int64_t& b, int64_t& e);
  void worker_loop(int self);

  std::vector<std::thread> workers_;
  std::unique_ptr<Slot[]> claims_, dones_;
  std::mutex submit_;  // one parallel_for at a time
  std::mutex m_;
  std::condition_variable wake_;
  // Seqlock over the job fields: even = job published, odd = the caller is
  // rewriting them. A worker copies the fields and checks the generation again.
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
  uint64_t jobs_ = 0;  // caller side only (under submit_)

  // The current job (written between the odd and the even generation).
  std::atomic<Call> call_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<int64_t> n_{0}, unit_{1}, units_{0}, chunk_{1};
  std::atomic<int> parts_{0};
  std::atomic<uint64_t> tag_{0};

  std::atomic<bool> failed_{false};
  std::mutex err_m_;
  std::exception_ptr error_;
};

}  // namespace ds4
