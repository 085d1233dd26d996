// A small persistent thread pool for the kernels of one library (lseg_threads.cc).
//
// Why not a std::thread per call, or OpenMP: a thread started per call lands where the scheduler puts it, often
// on the caller's core first (the second half of a split then waits for a migration), and costs its start-up and
// a fresh thread-local scratch every time; OpenMP's workers keep polling after each region, which halves whatever
// runs next on their cores (OpenBLAS's workers did the same, see mindcv_lseg/kernels/openblas.py). The pool's
// workers poll only briefly after a job, then sleep on a condition variable until the next one.
#ifndef MINDCV_LSEG_KERNELS_LSEG_THREADS_H_
#define MINDCV_LSEG_KERNELS_LSEG_THREADS_H_

#include <cstdint>
#include <functional>

namespace lseg {

// The threads ParallelFor uses, the caller's included: the CPUs the process may run on (its affinity mask), at
// most MINDCV_LSEG_NUM_THREADS when that is set to a positive number (e.g. several processes on one machine).
// Not OMP_NUM_THREADS: MindSpore sets it to 1 in its own process when it is imported.
int PoolThreads();

// Runs task(i) for every i in [0, tasks) and returns when all have run. The caller's thread and the pool's
// workers take the next task not yet taken, so a thread that starts late (a busy core) takes fewer. Tasks must be
// independent; each runs on one thread. When the pool is busy (another caller, or a task that calls ParallelFor)
// the caller runs the tasks itself, in order.
void ParallelFor(int64_t tasks, const std::function<void(int64_t)> &task);

// Runs range(begin, end) over consecutive ranges that cover [0, n) once, each of at least `grain` items (except
// when n is smaller): ParallelFor over up to 8 ranges per thread, so that a thread slowed by another process
// takes fewer of them. n <= grain runs on the caller's thread alone.
void ParallelRanges(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)> &range);

}  // namespace lseg

#endif  // MINDCV_LSEG_KERNELS_LSEG_THREADS_H_
