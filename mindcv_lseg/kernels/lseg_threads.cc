// The kernels' thread pool (see lseg_threads.h).
//
// One job at a time: the caller publishes it under the pool's mutex and wakes the workers; a worker attaches to the
// job under the same mutex (so it can only attach while the caller still owns the job), takes tasks from the job's
// atomic counter, and detaches. The caller takes tasks too, then withdraws the job (no worker can attach after
// that) and waits for the attached workers to detach. After a job a worker polls for the next one for
// kPollRounds pause instructions (a few microseconds), then sleeps.

#include "lseg_threads.h"

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace lseg {
namespace {

constexpr int kPollRounds = 4096;

struct Job {
  const std::function<void(int64_t)> *task;
  int64_t tasks;
  std::atomic<int64_t> next{0};
  std::atomic<int> attached{0};
};

void RunTasks(Job *job) {
  for (int64_t i = job->next.fetch_add(1); i < job->tasks; i = job->next.fetch_add(1)) (*job->task)(i);
}

class Pool {
 public:
  explicit Pool(int workers) {
    for (int w = 0; w < workers; ++w) {
      threads_.emplace_back([this] { Work(); });
      pthread_setname_np(threads_.back().native_handle(), "lseg_pool");
    }
  }

  // Never destroyed (a static pool's destructor would join workers during the process's exit, after the runtime
  // has torn down what they might use): the workers sleep until the process ends.
  ~Pool() = delete;

  // false when the pool is busy with another job
  bool Run(int64_t tasks, const std::function<void(int64_t)> &task) {
    std::unique_lock<std::mutex> busy(run_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    Job job;
    job.task = &task;
    job.tasks = tasks;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &job;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    RunTasks(&job);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = nullptr;  // no worker attaches from here on
    }
    while (job.attached.load(std::memory_order_acquire) != 0) _mm_pause();
    return true;
  }

 private:
  void Work() {
    uint64_t seen = 0;
    for (;;) {
      for (int round = 0; round < kPollRounds && generation_.load(std::memory_order_acquire) == seen; ++round) {
        _mm_pause();
      }
      Job *job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen; });
        seen = generation_.load(std::memory_order_relaxed);
        job = job_;
        if (job != nullptr) job->attached.fetch_add(1, std::memory_order_relaxed);
      }
      if (job == nullptr) continue;  // the caller had finished it already
      RunTasks(job);
      job->attached.fetch_sub(1, std::memory_order_release);
    }
  }

  std::mutex run_;    // held by the caller of the job in progress
  std::mutex mutex_;  // guards job_ and the workers' sleep
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  Job *job_ = nullptr;
  std::vector<std::thread> threads_;
};

std::atomic<Pool *> g_pool{nullptr};
std::mutex g_pool_start;

// a forked child has none of the parent's threads: it starts a pool of its own when it first needs one
void ForgetPoolInChild() { g_pool.store(nullptr); }

Pool *GetPool() {
  Pool *pool = g_pool.load(std::memory_order_acquire);
  if (pool != nullptr) return pool;
  std::lock_guard<std::mutex> lock(g_pool_start);
  static const bool registered = pthread_atfork(nullptr, nullptr, ForgetPoolInChild) == 0;
  (void)registered;
  if (g_pool.load() == nullptr) g_pool.store(new Pool(PoolThreads() - 1), std::memory_order_release);
  return g_pool.load();
}

}  // namespace

int PoolThreads() {
  static const int threads = [] {
    int count = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) count = std::max(1, CPU_COUNT(&set));
    if (const char *limit = std::getenv("MINDCV_LSEG_NUM_THREADS")) {
      const int cap = std::atoi(limit);
      if (cap > 0) count = std::min(count, cap);
    }
    return count;
  }();
  return threads;
}

void ParallelFor(int64_t tasks, const std::function<void(int64_t)> &task) {
  if (tasks <= 0) return;
  if (tasks == 1 || PoolThreads() == 1 || !GetPool()->Run(tasks, task)) {
    for (int64_t i = 0; i < tasks; ++i) task(i);
  }
}

void ParallelRanges(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)> &range) {
  if (n <= 0) return;
  const int64_t ranges = std::max<int64_t>(1, std::min<int64_t>(n / std::max<int64_t>(grain, 1), 8 * PoolThreads()));
  if (ranges == 1) {
    range(0, n);
    return;
  }
  ParallelFor(ranges, [&](int64_t i) { range(n * i / ranges, n * (i + 1) / ranges); });
}

}  // namespace lseg

// The thread count, for tests and diagnostics (every library with the pool exports it).
extern "C" int LsegPoolThreads() { return lseg::PoolThreads(); }
