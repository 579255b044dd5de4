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

// VIDLORA_KERNELS: whether this translation unit compiles the kernels in include/vidlora/**/cuda/: under nvcc, or
// under a host compiler given VIDLORA_CUDA_EMULATION (tests/cuda_emu: the CUDA tests with every kernel run on host
// fibers, the runtime and cuBLASLt emulated). Those headers test it, never __CUDACC__.
#if defined(__CUDACC__) || defined(VIDLORA_CUDA_EMULATION)
#define VIDLORA_KERNELS 1
#else
#define VIDLORA_KERNELS 0
#endif

// VIDLORA_LAUNCH(grid, block, shared_bytes, stream, kernel)(arguments...): `kernel<<<grid, block, shared_bytes,
// stream>>>(arguments...)`, spelled once so that the emulation can define it as a call (the kernel last: a template
// kernel's commas).
#if !defined(VIDLORA_LAUNCH)
#define VIDLORA_LAUNCH(grid, block, shared_bytes, stream, ...) __VA_ARGS__<<<grid, block, shared_bytes, stream>>>
#endif

// VIDLORA_DYNAMIC_SHARED(alignment, type, name): `name`, the block's dynamic shared memory as an array of `type`
// aligned to `alignment` bytes, for the emulation to define as its block's buffer.
#if !defined(VIDLORA_DYNAMIC_SHARED)
#define VIDLORA_DYNAMIC_SHARED(alignment, type, name) \
  extern __shared__ __align__(alignment)              \
  type name[]
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
