#pragma once
// A fixed pool of worker threads with one operation: parallel_for(n, fn), which
// splits [0, n) into chunks handed out dynamically to the workers and the
// calling thread, and returns when all are done. It is built to be called
// thousands of times per token: workers spin briefly before sleeping, and no
// memory is allocated per call. Calls from inside a task, or from several
// threads at once, are safe (nested calls run inline; concurrent ones queue).
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
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

  // Calls fn(begin, end) on disjoint ranges covering [0, n), each at least
  // `grain` long (except the last). An exception thrown by fn is rethrown here.
  template <class F>
  void parallel_for(int64_t n, F&& fn, int64_t grain = 1) {
    auto call = [](void* ctx, int64_t b, int64_t e) { (*static_cast<std::remove_reference_t<F>*>(ctx))(b, e); };
    run(n, grain, call, const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  using Call = void (*)(void*, int64_t, int64_t);
  void run(int64_t n, int64_t grain, Call call, void* ctx);
  void work_chunks();
  void worker_loop();

  std::vector<std::thread> workers_;
  std::mutex submit_;  // one parallel_for at a time
  std::mutex m_;
  std::condition_variable wake_;
  // Even: a job of that number is open (or finished); odd: the caller is
  // rewriting the job fields and no worker may enter.
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> busy_{0};  // workers that entered a job and have not left
  bool stop_ = false;

  // The current job (written before generation_ is bumped).
  Call call_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0, chunk_ = 1;
  std::atomic<int64_t> next_{0};
  std::atomic<int64_t> done_{0};  // elements finished (or skipped after an error)
  std::atomic<bool> failed_{false};
  std::mutex err_m_;
  std::exception_ptr error_;
};

}  // namespace ds4
