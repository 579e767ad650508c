#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "fattn/error.hpp"
#include "fattn/parallel.hpp"

using namespace fattn;

namespace {
struct RestoreThreads {
  int saved = get_num_threads();
  ~RestoreThreads() { set_num_threads(saved); }
};
}  // namespace

TEST(Parallel, EveryItemExactlyOnceForAnyThreadCount) {
  RestoreThreads restore;
  for (int threads : {1, 2, 3, 8}) {
    set_num_threads(threads);
    EXPECT_EQ(get_num_threads(), threads);
    for (std::int64_t n : {0, 1, 7, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      parallel_for(n, 3, [&](std::int64_t b, std::int64_t e) {
        EXPECT_LE(b, e);
        for (std::int64_t i = b; i < e; ++i) hits[std::size_t(i)]++;
      });
      for (auto& h : hits) EXPECT_EQ(h.load(), 1);
    }
  }
}

TEST(Parallel, NestedAndConcurrentCallsComplete) {
  RestoreThreads restore;
  set_num_threads(4);
  std::atomic<std::int64_t> total{0};
  auto work = [&] {
    parallel_for(50, 1, [&](std::int64_t b, std::int64_t e) {
      for (std::int64_t i = b; i < e; ++i)
        parallel_for(10, 2, [&](std::int64_t b2, std::int64_t e2) { total += e2 - b2; });
    });
  };
  std::vector<std::thread> callers;
  for (int t = 0; t < 6; ++t) callers.emplace_back(work);
  for (auto& t : callers) t.join();
  EXPECT_EQ(total.load(), 6 * 50 * 10);
}

TEST(Parallel, SetNumThreadsWhileOthersRun) {
  RestoreThreads restore;
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> done{0};
  std::thread caller([&] {
    while (!stop) parallel_for(64, 4, [&](std::int64_t b, std::int64_t e) { done += e - b; });
  });
  for (int i = 0; i < 50; ++i) set_num_threads(1 + i % 4);
  stop = true;
  caller.join();
  EXPECT_EQ(done.load() % 64, 0);
}

TEST(Parallel, ExceptionsReachTheCaller) {
  RestoreThreads restore;
  set_num_threads(2);
  EXPECT_THROW(parallel_for(100, 1, [](std::int64_t b, std::int64_t) {
                 if (b == 57) throw std::runtime_error("boom");
               }),
               std::runtime_error);
  // The pool still works afterwards.
  std::atomic<int> n{0};
  parallel_for(10, 1, [&](std::int64_t b, std::int64_t e) { n += int(e - b); });
  EXPECT_EQ(n.load(), 10);
}

TEST(Parallel, RejectsBadThreadCounts) {
  EXPECT_THROW(set_num_threads(0), InvalidArgument);
  EXPECT_THROW(set_num_threads(-3), InvalidArgument);
}
