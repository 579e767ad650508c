#include "fattn/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "fattn/error.hpp"

namespace fattn {
namespace {

// How long a thread that would block (a worker between jobs, the caller
// waiting for the workers) first polls instead. Blocking on a condition
// variable put an idle virtual CPU to sleep, and waking it cost ~57 us per
// parallel region on this project's 2-vCPU KVM guest (Intel Xeon family 6
// model 167): a one-row prefill took 65 us on 2 threads, 8 on 1. A decode
// loop's next call comes within the window, so its region starts at once;
// between bursts a worker burns at most this much CPU before it sleeps.
constexpr auto kSpinWindow = std::chrono::microseconds(200);

inline void cpu_relax() {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
  __builtin_ia32_pause();  // the builtin, not <immintrin.h>: a FATTN_SIMD=OFF build includes no intrinsics header
#else
  std::this_thread::yield();
#endif
}

// Polls `ready` until it holds or the window ends; whether it held. Each
// round ends in a yield, so a thread of another process (pytest-xdist's, a
// second library's pool) that waits for this CPU gets it at once.
template <class Ready>
bool spin_until(const Ready& ready) {
  const auto end = std::chrono::steady_clock::now() + kSpinWindow;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= end) return ready();
    std::this_thread::yield();
  }
}

// How many parallel_for bodies this thread is inside (0 outside any). A
// call made from inside a body runs serially without touching the pool:
// the thread may already hold busy_ (it is the caller whose job runs), and
// try_lock on a mutex the thread owns is undefined behaviour.
thread_local int t_body_depth = 0;

struct InBody {
  InBody() { ++t_body_depth; }
  ~InBody() { --t_body_depth; }
  InBody(const InBody&) = delete;
  InBody& operator=(const InBody&) = delete;
};

class Pool {
 public:
  Pool() : num_threads_(int(std::max(1u, std::thread::hardware_concurrency()))) {}
  ~Pool() { stop_workers(); }

  int num_threads() const { return num_threads_.load(); }

  void set_num_threads(int n) {
    std::lock_guard<std::mutex> busy(busy_);  // wait until no job runs
    stop_workers();
    num_threads_.store(n);
  }

  void run(std::int64_t n, std::int64_t grain, const std::function<void(std::int64_t, std::int64_t)>& body) {
    if (n <= 0) return;
    grain = std::max<std::int64_t>(1, grain);
    const std::int64_t chunks = n / grain + (n % grain != 0);  // no overflow near INT64_MAX
    if (t_body_depth > 0) {  // nested: serial, and busy_ is never touched
      InBody in_body;
      body(0, n);
      return;
    }
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    const int threads = int(std::min<std::int64_t>(num_threads_.load(), chunks));
    if (!busy.owns_lock() || threads <= 1) {  // another caller's job runs, or nothing to share
      busy = {};
      InBody in_body;
      body(0, n);
      return;
    }
    start_workers(threads - 1);
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = Job{&body, n, grain, chunks};
      next_chunk_.store(0);
      pending_ = threads - 1;
      active_workers_ = threads - 1;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    work_on_job();
    spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lk(mu_);
    done_.wait(lk, [&] { return pending_.load(std::memory_order_relaxed) == 0; });
    if (error_) std::rethrow_exception(error_);
  }

 private:
  struct Job {
    const std::function<void(std::int64_t, std::int64_t)>* body = nullptr;
    std::int64_t n = 0, grain = 1, chunks = 0;
  };

  void work_on_job() {
    InBody in_body;
    for (;;) {
      const std::int64_t c = next_chunk_.fetch_add(1);
      if (c >= job_.chunks) return;
      const std::int64_t begin = c * job_.grain;
      try {
        (*job_.body)(begin, std::min(job_.n, begin + job_.grain));
      } catch (...) {
        std::lock_guard<std::mutex> lk(mu_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }

  // `seen` starts at the generation current when the worker is created: a
  // worker started after earlier jobs must not take the last one (whose body
  // is gone) for a new job and decrement the next job's pending count.
  void worker_loop(int index, std::uint64_t seen) {
    for (;;) {
      // (A worker left out of a job, index >= active_workers_, also stops
      // polling once the generation moves, and sleeps.)
      spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; });
      {
        std::unique_lock<std::mutex> lk(mu_);
        wake_.wait(lk, [&] { return stopping_ || (generation_ != seen && index < active_workers_); });
        if (stopping_) return;
        seen = generation_;
      }
      work_on_job();
      std::lock_guard<std::mutex> lk(mu_);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) done_.notify_one();
    }
  }

  void start_workers(int wanted) {  // called with busy_ held
    std::uint64_t current = 0;
    {
      std::lock_guard<std::mutex> lk(mu_);
      current = generation_;
    }
    while (int(workers_.size()) < wanted) {
      const int index = int(workers_.size());
      workers_.emplace_back([this, index, current] { worker_loop(index, current); });
    }
  }

  void stop_workers() {  // called with busy_ held (or from the destructor)
    {
      std::lock_guard<std::mutex> lk(mu_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    std::lock_guard<std::mutex> lk(mu_);
    stopping_ = false;
    active_workers_ = 0;
  }

  std::atomic<int> num_threads_;
  std::mutex busy_;  // held by the caller whose job the pool runs
  std::mutex mu_;    // guards the fields below
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  Job job_;
  std::atomic<std::int64_t> next_chunk_{0};
  std::atomic<int> pending_{0};  // written under mu_; polled without it
  int active_workers_ = 0;
  std::atomic<std::uint64_t> generation_{0};  // written under mu_; polled without it
  bool stopping_ = false;
  std::exception_ptr error_;
};

Pool& pool() {
  // Leaked on purpose: joining threads during static destruction at process
  // exit (after Python finalisation, say) is a classic source of hangs.
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

int get_num_threads() { return pool().num_threads(); }

void set_num_threads(int n) {
  require(t_body_depth == 0,
          "set_num_threads: cannot be called from inside a parallel_for body (it would wait for its own job)");
  require(n >= 1, "set_num_threads: n must be >= 1, got ", n);
  require(n <= 1024, "set_num_threads: n must be <= 1024, got ", n);
  pool().set_num_threads(n);
}

void parallel_for(std::int64_t n, std::int64_t grain,
                  const std::function<void(std::int64_t, std::int64_t)>& body) {
  pool().run(n, grain, body);
}

}  // namespace fattn
