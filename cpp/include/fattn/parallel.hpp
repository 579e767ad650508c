#pragma once
// One process-wide pool of worker threads that every kernel shares.
//
// Work is a range of independent items [0, n); each item's result is
// computed by exactly one thread with the same arithmetic whichever thread
// it is, so results never depend on the thread count. A call that finds the
// pool busy (another caller's kernel, or a nested call) runs its range on
// the calling thread instead of waiting: concurrent callers are safe and
// cannot deadlock. A call made from inside a body (a kernel called from a
// parallel_for body, say) always runs serially on that thread.
//
// Between jobs a worker polls for the next one for up to 200 us (yielding
// its CPU to any other runnable thread as it polls) before it sleeps, and
// the caller polls for the workers' end the same way: waking a sleeping
// thread costs tens of microseconds on a virtual machine, more than a
// small decode step's whole work.
#include <cstdint>
#include <functional>

namespace fattn {

// Threads a kernel may use (the caller included); >= 1. Default: the
// hardware concurrency.
int get_num_threads();
// Sets the thread count (1 <= n <= 1024; InvalidArgument otherwise). Safe
// while other threads run kernels: it waits for the pool to be idle. Called
// from inside a parallel_for body (on the thread running the body) it throws
// InvalidArgument and changes nothing: it would wait for its own job.
void set_num_threads(int n);

// Calls body(begin, end) over disjoint sub-ranges that cover [0, n), on up to
// get_num_threads() threads, and returns when all are done. Shared work is
// dealt in chunks of `grain` items; a call that runs serially gets the whole
// range at once. The first exception a body throws is rethrown here.
void parallel_for(std::int64_t n, std::int64_t grain,
                  const std::function<void(std::int64_t, std::int64_t)>& body);

}  // namespace fattn
