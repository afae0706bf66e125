#pragma once
// A thread-safe FIFO between the scheduler thread (producer, through a
// request's sink) and the HTTP thread that serves the request (consumer).
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>

namespace ds4::server {

template <typename T>
class EventQueue {
 public:
  void push(T v) {
    {
      std::lock_guard lk(mu_);
      q_.push_back(std::move(v));
    }
    cv_.notify_one();
  }
  // Waits up to `timeout` for the next item.
  std::optional<T> pop(std::chrono::milliseconds timeout) {
    std::unique_lock lk(mu_);
    if (!cv_.wait_for(lk, timeout, [&] { return !q_.empty(); })) return std::nullopt;
    T v = std::move(q_.front());
    q_.pop_front();
    return v;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<T> q_;
};

}  // namespace ds4::server
