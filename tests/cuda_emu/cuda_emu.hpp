#pragma once
// The CUDA emulation: what a host compiler needs to compile include/vidlora/**/cuda/*.cuh and tests/cuda/*.cu as
// plain C++ and run every kernel on the CPU. Force-included (-include) before everything else in the
// vidlora_cuda_emu_tests translation units; the runtime and cuBLASLt calls they make are defined in
// cuda_emu_runtime.cpp and cuda_emu_cublaslt.cpp instead of libcudart and libcublasLt.
//
// A kernel launch (VIDLORA_LAUNCH) runs at once, on the calling thread: the blocks one after another, each block's
// threads as fibers switched only at a barrier (__syncthreads, __syncwarp, a shuffle, mma.sync), so a block's
// __shared__ variables (function-local statics here) are the block's. Blocks and threads go in ascending order, or
// in reverse with VIDLORA_EMU_ORDER=reverse. Launches are synchronous, so streams and events are trivially
// ordered; what this cannot find is a race between threads, a missing __syncthreads whose effect only a GPU's
// scheduling shows, and the device's own arithmetic (its exp, its tensor cores' summation order): code under
// __CUDA_ARCH__ (WMMA, cp.async) is not compiled here, so the kernels take their portable paths; mma.sync.m16n8k16
// runs on an emulated warp (VIDLORA_EMULATED_MMA_M16N8K16) and cp.async as per-thread groups
// (VIDLORA_EMULATED_CP_ASYNC_*). The emulated device
// reports compute capability 7.5 unless VIDLORA_EMU_CC says otherwise (e.g. 80, 90). Static __shared__ arrays are
// not poisoned: they start at zero and keep the previous block's values (a GPU's start as garbage).
//
// What it checks that a GPU also would: the launch limits (threads per block, grid dimensions, dynamic shared memory
// above 48 KiB without cudaFuncSetAttribute, above the device's opt-in maximum), a __syncthreads or shuffle that not
// every thread of the block or warp reaches (a deadlock here: an error naming the kernel), cudaMemcpy kinds against
// the allocations (a host pointer given as device memory), and frees of what was not allocated. Device memory is
// host memory, so AddressSanitizer sees a kernel's out-of-bounds access.

#define VIDLORA_CUDA_EMULATION 1
#define VIDLORA_CUDA_RUNTIME 1

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)
#define __restrict__ __restrict

namespace vidlora_emu {

// The current fiber's CUDA thread.
struct ThreadState {
  uint3 thread{};
  uint3 block{};
  dim3 block_dim{};
  dim3 grid_dim{};
};
ThreadState& current();
void* dynamic_shared();
void sync_threads();
void sync_warp();  // the warp's lanes (all of them: a partial mask is not emulated)
// Every lane of the current warp hands in `value` and gets lane `source(lane)`'s back (after a warp barrier).
std::uint64_t warp_exchange(std::uint64_t value, int source_lane);
// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: the warp's lanes hand in their fragments (the PTX ISA's layouts,
// as tests/cuda_host/simt_block.hpp writes them), each computes its own accumulators from the whole tiles, products
// summed in k order onto c.
void warp_mma_m16n8k16(float (&c)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2], bool bf16);
// cp.async.cg.shared.global of 16 bytes (zeros when !valid), cp.async.commit_group and cp.async.wait_group N, per
// thread as the PTX ISA has them, on an emulated sm_80+ (at once below it): a copy's destination reads as 0xFF bytes
// (NaN) from its start until a wait_group completes its group (the destination is undefined until then on a GPU), and
// a group completes only there, so a tile read before its wait shows. A thread that returns with copies not waited
// for is an error.
void cp_async_16(void* shared_dst, const void* global_src, bool valid);
void cp_async_commit();
void cp_async_wait(int pending_groups);
// Whether [p, p + bytes) lies in one allocation of cudaMalloc or cudaMallocHost (what a kernel or cuBLASLt may read).
bool in_device_memory(const void* p, std::size_t bytes);

using KernelEntry = void (*)();
struct LaunchConfig {
  dim3 grid;
  dim3 block;
  std::size_t shared_bytes = 0;
  cudaStream_t stream = nullptr;
};
// Checks the configuration (sets the runtime's last error and returns false when the GPU would refuse it), then
// runs body(state) for every thread of every block.
bool begin_launch(const LaunchConfig& c, const void* kernel, const char* name);
void run_grid(const LaunchConfig& c, const char* name, void (*body)(void*), void* context);

void fail_pointer_argument(const void* p, int index, const char* kernel);
template <class T>
void check_pointer_argument(const T& value, int index, const char* kernel) {
  if constexpr (std::is_pointer_v<T>) {
    if (value != nullptr && !in_device_memory(value, 1)) fail_pointer_argument(value, index, kernel);
  }
}

template <class... P>
struct Launch {
  LaunchConfig config;
  void (*kernel)(P...);
  const char* name;
  template <class... A>
  void operator()(A&&... args) const {
    if (!begin_launch(config, reinterpret_cast<const void*>(kernel), name)) return;
    // The arguments as the kernel's parameter types, converted once (as a launch copies them); every thread gets
    // its own copies of them.
    std::tuple<std::decay_t<P>...> params(static_cast<std::decay_t<P>>(std::forward<A>(args))...);
    // A pointer argument must point into device (or page-locked host) memory, as it must on a GPU.
    std::apply(
        [&](const auto&... p) {
          int index = 0;
          (check_pointer_argument(p, index++, name), ...);
        },
        params);
    struct Context {
      void (*kernel)(P...);
      const std::tuple<std::decay_t<P>...>* params;
    } ctx{kernel, &params};
    run_grid(
        config, name,
        [](void* c) {
          auto* x = static_cast<Context*>(c);
          std::apply([&](const auto&... p) { x->kernel(p...); }, *x->params);
        },
        &ctx);
  }
};
template <class... P>
Launch<P...> launch(dim3 grid, dim3 block, std::size_t shared_bytes, cudaStream_t stream, void (*kernel)(P...),
                    const char* name) {
  return {{grid, block, shared_bytes, stream}, kernel, name};
}

template <class T>
T shuffle_as(T v, int source_lane) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_exchange(bits, source_lane);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}
inline int lane_id() {
  const ThreadState& s = current();
  const unsigned linear = s.thread.x + s.block_dim.x * (s.thread.y + s.block_dim.y * s.thread.z);
  return static_cast<int>(linear % 32);
}

}  // namespace vidlora_emu

#define VIDLORA_LAUNCH(grid, block, shared_bytes, stream, ...)                                                \
  ::vidlora_emu::launch(dim3(grid), dim3(block), static_cast<std::size_t>(shared_bytes), stream, __VA_ARGS__, \
                        #__VA_ARGS__)
#define VIDLORA_DYNAMIC_SHARED(alignment, type, name) type* name = static_cast<type*>(::vidlora_emu::dynamic_shared())

#define VIDLORA_EMULATED_MMA_M16N8K16(c, a, b, bf16) ::vidlora_emu::warp_mma_m16n8k16(c, a, b, bf16)
#define VIDLORA_EMULATED_CP_ASYNC_16(dst, src, valid) ::vidlora_emu::cp_async_16(dst, src, valid)
#define VIDLORA_EMULATED_CP_ASYNC_COMMIT() ::vidlora_emu::cp_async_commit()
#define VIDLORA_EMULATED_CP_ASYNC_WAIT(n) ::vidlora_emu::cp_async_wait(n)

#define threadIdx (::vidlora_emu::current().thread)
#define blockIdx (::vidlora_emu::current().block)
#define blockDim (::vidlora_emu::current().block_dim)
#define gridDim (::vidlora_emu::current().grid_dim)

// The runtime's kernel-pointer overloads (cuda_runtime.h declares them for nvcc only).
template <class... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
template <class... P>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attr, void (*kernel)(P...)) {
  return cudaFuncGetAttributes(attr, reinterpret_cast<const void*>(kernel));
}

inline void __syncthreads() { ::vidlora_emu::sync_threads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { ::vidlora_emu::sync_warp(); }
inline void __threadfence() {}
[[noreturn]] inline void __trap() {
  std::fprintf(stderr, "vidlora CUDA emulation: __trap() in a kernel\n");
  std::abort();
}
// The PTX rule for a width below 32: a source lane in a later segment gives the caller its own value.
template <class T>
T __shfl_xor_sync(unsigned, T v, int lane_mask, int width = 32) {
  const int lane = ::vidlora_emu::lane_id();
  const int src = lane ^ lane_mask;
  const int segment_end = (lane / width + 1) * width;
  return ::vidlora_emu::shuffle_as(v, src < segment_end ? src : lane);
}
template <class T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  const int lane = ::vidlora_emu::lane_id();
  const int base = lane & ~(width - 1);
  const int src = (lane - base) + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return ::vidlora_emu::shuffle_as(v, src);
}
template <class T>
T __shfl_sync(unsigned, T v, int src_lane, int width = 32) {
  const int lane = ::vidlora_emu::lane_id();
  const int base = lane & ~(width - 1);
  return ::vidlora_emu::shuffle_as(v, base + (src_lane % width));
}
// One host thread runs a block's fibers, switching only at barriers: an atomic is a plain read-modify-write.
template <class T>
T atomicAdd(T* p, T v) {
  const T old = *p;
  *p = old + v;
  return old;
}
template <class T>
T atomicMax(T* p, T v) {
  const T old = *p;
  if (v > old) *p = v;
  return old;
}
template <class T>
T __ldg(const T* p) {
  return *p;
}
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline float __double2float_rn(double x) { return static_cast<float>(x); }
inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
inline float __uint_as_float(unsigned x) { return std::bit_cast<float>(x); }
