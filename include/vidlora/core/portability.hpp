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

// Before a VIDLORA_HOST_DEVICE template whose policy argument is host-only or device-only (a block body run by a
// host policy in the tests and a device policy in a kernel): nvcc checks each instantiation where it is used, not
// both sides of every one.
#if defined(__CUDACC__)
#define VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE _Pragma("nv_exec_check_disable")
#else
#define VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
#endif

// Before a loop over a per-thread register array in a VIDLORA_HOST_DEVICE body: nvcc unrolls it, so that every index
// is a constant and the array stays in registers (an array indexed at run time goes to local memory).
#if defined(__CUDACC__)
#define VIDLORA_UNROLL _Pragma("unroll")
#else
#define VIDLORA_UNROLL
#endif

#if defined(_MSC_VER)
#define VIDLORA_FORCE_INLINE __forceinline
#else
#define VIDLORA_FORCE_INLINE inline __attribute__((always_inline))
#endif
