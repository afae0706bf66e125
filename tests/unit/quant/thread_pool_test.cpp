#include "util/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

namespace ds4 {
namespace {

TEST(ThreadPool, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 7, 100, 1001}) {
      for (int64_t grain : {1, 3, 64}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        pool.parallel_for(n, [&](int64_t b, int64_t e) {
          ASSERT_LT(b, e);
          for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
        }, grain);
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << threads << " " << n << " " << i;
      }
    }
  }
}

// Ranges start at multiples of the grain and are whole grains long, except
// the one that ends at n (matmul relies on it for no more than efficiency, but
// callers may use grain to keep blocks together).
TEST(ThreadPool, RangesFollowTheGrain) {
  for (int threads : {2, 5, 16}) {
    ThreadPool pool(threads);
    for (int64_t n : {1, 9, 100, 4096, 100003}) {
      for (int64_t grain : {1, 7, 64}) {
        std::atomic<int64_t> covered{0};
        std::atomic<int> bad{0};
        pool.parallel_for(n, [&](int64_t b, int64_t e) {
          if (b % grain != 0 || (e != n && (e - b) % grain != 0)) ++bad;
          covered += e - b;
        }, grain);
        EXPECT_EQ(bad.load(), 0) << threads << " " << n << " " << grain;
        EXPECT_EQ(covered.load(), n);
      }
    }
  }
}

// Many calls of changing size on more threads than cores: late workers and
// stolen chunks must never run a range twice or miss one.
TEST(ThreadPool, ManyCallsOfChangingSize) {
  ThreadPool pool(8);
  std::vector<std::atomic<int>> hits(2000);
  for (int it = 0; it < 3000; ++it) {
    const int64_t n = 1 + (it * 7919) % 2000;
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
    }, 1 + it % 5);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[static_cast<size_t>(i)].exchange(0), 1) << it << " " << i;
  }
}

TEST(ThreadPool, ManySmallCalls) {
  ThreadPool pool(4);
  std::atomic<int64_t> sum{0};
  for (int it = 0; it < 20000; ++it)
    pool.parallel_for(16, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 20000 * 16);
}

TEST(ThreadPool, ExceptionPropagates) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(1000, [](int64_t b, int64_t e) {
    if (b <= 500 && 500 < e) throw std::runtime_error("boom");
  }), std::runtime_error);
  // Still usable afterwards.
  std::atomic<int> n{0};
  pool.parallel_for(10, [&](int64_t b, int64_t e) { n += static_cast<int>(e - b); });
  EXPECT_EQ(n.load(), 10);
}

TEST(ThreadPool, NestedCallsRunInline) {
  ThreadPool pool(3);
  std::atomic<int> n{0};
  pool.parallel_for(8, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) pool.parallel_for(4, [&](int64_t b2, int64_t e2) { n += static_cast<int>(e2 - b2); });
  });
  EXPECT_EQ(n.load(), 32);
}

}  // namespace
}  // namespace ds4
