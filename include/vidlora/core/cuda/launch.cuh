#pragma once
// Launch geometry shared by the kernels: plain host-device integer math, tested on the CPU.

#include <cstdint>

#include <vidlora/core/portability.hpp>

// VIDLORA_STATIC_SHARED(alignment, type, name, extents): `__shared__ __align__(alignment) type name extents;`, a block's
// static shared array (one per statement), spelled once so that the CUDA emulation can give it a GPU's start: bytes
// no thread of the block wrote (0xFF there, NaN as floats) rather than zeros or the previous block's values.
#if !defined(VIDLORA_STATIC_SHARED)
#define VIDLORA_STATIC_SHARED(alignment, type, name, extents) \
  __shared__ __align__(alignment)                             \
  type name extents
#endif

namespace vidlora::cuda {

VIDLORA_HOST_DEVICE constexpr std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Blocks of `threads` for `work` items each thread handles once, capped at `max_blocks` (the kernels are
// grid-stride loops, so a capped grid still covers everything); at least 1 block.
VIDLORA_HOST_DEVICE constexpr unsigned grid_size(std::int64_t work, int threads, std::int64_t max_blocks = 65535 * 16) {
  const std::int64_t b = ceil_div(work > 0 ? work : 1, threads);
  return static_cast<unsigned>(b < max_blocks ? b : max_blocks);
}

// Largest power of two <= n (n >= 1): block sizes for row reductions (32 .. 1024).
VIDLORA_HOST_DEVICE constexpr int floor_pow2(int n) {
  int p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

// Threads for a kernel that gives one block to a row of `n` elements: a power of two in [32, 1024].
VIDLORA_HOST_DEVICE constexpr int row_block_threads(std::int64_t n) {
  const int want = floor_pow2(static_cast<int>(n < 1024 ? (n > 32 ? n : 32) : 1024));
  return want;
}

}  // namespace vidlora::cuda
