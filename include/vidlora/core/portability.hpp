#pragma once
// Portability macros: the one place that knows whether nvcc is compiling.

#if defined(__CUDACC__) || defined(__HIPCC__)
#define VIDLORA_HOST_DEVICE __host__ __device__
#define VIDLORA_DEVICE __device__
#define VIDLORA_COMPILING_FOR_CUDA 1
#else
// Element-wise math is written once as VIDLORA_HOST_DEVICE functions; on the CPU this is empty.
#define VIDLORA_HOST_DEVICE
#define VIDLORA_DEVICE
#define VIDLORA_COMPILING_FOR_CUDA 0
#endif

#if defined(_MSC_VER)
#define VIDLORA_FORCE_INLINE __forceinline
#else
#define VIDLORA_FORCE_INLINE inline __attribute__((always_inline))
#endif
