#pragma once
// parallel_for, parallel_blocks and parallel_shares: the library's one way to spread a CPU loop over threads.
// OpenMP when the including translation unit enables it (-fopenmp), a plain loop otherwise. Work below
// kParallelMinWork, a single thread, or a call from inside a parallel region stays on the calling thread
// (no nested teams). Results never depend on the thread count: every iteration writes its own outputs,
// reductions are done by the caller in a fixed order, and a product split across threads is split into
// the same blocks whatever the thread count (parallel_blocks). Eigen's own GEMM threading is off
// (EIGEN_DONT_PARALLELIZE, set by the vidlora CMake target): with several threads Eigen 3.4 picks other
// depth blocks (at most 320 deep) and row splits, so its sums, and a training run, changed with the thread
// count. fmt-free, so CUDA translation units can include it.

#include <cstdint>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace vidlora {

// About 32 Ki scalar operations: below that a fork/join (a few µs) costs more than it saves.
inline constexpr std::int64_t kParallelMinWork = std::int64_t{1} << 15;

enum class Schedule {
  Static,   // equal contiguous ranges per thread (iterations of equal cost)
  Dynamic,  // one iteration at a time to whichever thread is free (uneven or few large iterations)
};

// True when `work` operations are worth several threads here and now.
inline bool parallel_worthwhile(std::int64_t work) {
#if defined(_OPENMP)
  return work >= kParallelMinWork && omp_get_max_threads() > 1 && !omp_in_parallel();
#else
  (void)work;
  return false;
#endif
}

// fn(i) for every i in [begin, end); `work` estimates the operations of the whole loop.
template <class Index, class Fn>
void parallel_for(Index begin, Index end, std::int64_t work, Fn&& fn, Schedule schedule = Schedule::Static) {
#if defined(_OPENMP)
  if (end - begin > 1 && parallel_worthwhile(work)) {
    if (schedule == Schedule::Dynamic) {
#pragma omp parallel for schedule(dynamic, 1)
      for (Index i = begin; i < end; ++i) fn(i);
    } else {
#pragma omp parallel for schedule(static)
      for (Index i = begin; i < end; ++i) fn(i);
    }
    return;
  }
#endif
  for (Index i = begin; i < end; ++i) fn(i);
}

// fn(begin, count) for the blocks [0, block), [block, 2·block), … of [0, n): the same blocks whatever the
// thread count, spread over the threads as parallel_for's iterations. For products split by rows or
// columns: Eigen's kernels round a row by where it falls in its block, so blocks that moved with the
// thread count (share_of) changed the result's last bits.
template <class Index, class Fn>
void parallel_blocks(Index n, Index block, std::int64_t work, Fn&& fn) {
  const Index blocks = (n + block - 1) / block;
  parallel_for(Index{0}, blocks, work, [&](Index b) {
    const Index begin = b * block;
    fn(begin, n - begin < block ? n - begin : block);
  });
}

// fn(thread, threads) once per thread of one team (once as fn(0, 1) when not worthwhile): for loops that
// split their own ranges (share_of) and keep per-thread scratch, at one fork/join per phase.
template <class Fn>
void parallel_shares(std::int64_t work, Fn&& fn) {
#if defined(_OPENMP)
  if (parallel_worthwhile(work)) {
#pragma omp parallel
    fn(omp_get_thread_num(), omp_get_num_threads());
    return;
  }
#endif
  fn(0, 1);
}

// The contiguous share [begin, begin + count) of [0, n) that thread `id` of `threads` owns.
struct Share {
  std::int64_t begin, count;
};
inline Share share_of(std::int64_t n, int id, int threads) {
  const std::int64_t begin = n * id / threads, end = n * (id + 1) / threads;
  return {begin, end - begin};
}

}  // namespace vidlora
