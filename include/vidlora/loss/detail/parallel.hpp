#pragma once
// Row-parallel loops: OpenMP when the including program enables it, a plain loop otherwise.

#define VIDLORA_LOSS_PRAGMA(x) _Pragma(#x)
#if defined(_OPENMP)
#define VIDLORA_LOSS_PARALLEL_FOR_IF(condition) VIDLORA_LOSS_PRAGMA(omp parallel for schedule(static) if(condition))
#else
#define VIDLORA_LOSS_PARALLEL_FOR_IF(condition)
#endif

namespace vidlora::loss::detail {
// Below this many elements a row loop stays on one thread.
inline constexpr long kParallelElements = 1L << 15;
}  // namespace vidlora::loss::detail
