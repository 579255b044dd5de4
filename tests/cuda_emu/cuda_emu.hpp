#pragma once
// The CUDA emulation: what a host compiler needs to compile include/vidlora/**/cuda/*.cuh and tests/cuda/*.cu as
// plain C++ and run every kernel on the CPU. Force-included (-include) before everything else in the
// vidlora_cuda_emu_tests translation units; the runtime and cuBLASLt calls they make are defined in
// cuda_emu_runtime.cpp and cuda_emu_cublaslt.cpp instead of libcudart and libcublasLt.
//
// A kernel launch (VIDLORA_LAUNCH) is queued on its stream, as a GPU queues it, and runs when the host waits for it
// (streams below), on the waiting thread: the blocks one after another, each block's threads as fibers switched only
// at a barrier (__syncthreads, __syncwarp, a shuffle, mma.sync), so a block's static shared arrays are the block's.
// Blocks and threads go in ascending order, or in reverse with VIDLORA_EMU_ORDER=reverse.
// Streams: kernels, cuBLASLt products, copies and fills wait in their stream's queue until the host waits for them (a
// stream or event synchronize, cudaDeviceSynchronize, a copy into pageable memory or a synchronous one to or from
// page-locked memory, cudaFree and cudaFreeHost), and a wait runs only what CUDA orders before it: the legacy default
// stream and the blocking streams wait for each other's earlier work, a cudaStreamNonBlocking stream for neither,
// cudaStreamWaitEvent for the event's record; work nothing orders runs oldest first (newest first in reverse order).
// Host code that reads a result its waits do not cover reads the memory as it was (VIDLORA_EMU_STREAMS=eager runs
// everything at once).
// What this cannot find is a race between threads, a missing __syncthreads whose effect only a GPU's
// scheduling shows (the racecheck build does: VIDLORA_EMU_RACECHECK in cuda_emu_runtime.cpp), and the device's own
// arithmetic (its exp, its tensor cores' summation order): code under
// __CUDA_ARCH__ (WMMA, cp.async) is not compiled here, so the kernels take their portable paths; mma.sync.m16n8k16
// and ldmatrix.x4 run on an emulated warp (VIDLORA_EMULATED_MMA_M16N8K16, VIDLORA_EMULATED_LDMATRIX_X4) and cp.async as
// per-thread groups
// (VIDLORA_EMULATED_CP_ASYNC_*). The emulated device
// reports compute capability 7.5 unless VIDLORA_EMU_CC says otherwise (e.g. 80, 90). Shared memory starts as 0xFF
// bytes (NaN) in every block: the dynamic buffer, and each static array (VIDLORA_STATIC_SHARED, which the kernels use
// instead of __shared__) when the block first reaches its declaration.
//
// What it checks that a GPU also would: the launch limits (threads per block, grid dimensions, dynamic shared memory
// above 48 KiB without cudaFuncSetAttribute, above the device's opt-in maximum; static shared memory above 48 KiB,
// static and dynamic together above that maximum), a __syncthreads or shuffle that not
// every thread of the block or warp reaches (a deadlock here: an error naming the kernel), cudaMemcpy kinds against
// the allocations (a host pointer given as device memory), a kernel's pointers into neither device nor page-locked
// memory (a host pointer, a freed one), as arguments or as members of its Params structs (nested ones too: the
// members are walked as structured bindings), frees of what was not allocated, cudaEventElapsedTime before both
// records ran, and (by its wrong values) a result read without the wait that orders it. emulation_checks.cpp makes
// each of these mistakes on purpose and checks the emulation names or shows it. Device memory is
// host memory, so AddressSanitizer sees a kernel's out-of-bounds access.

#define VIDLORA_CUDA_EMULATION 1
#define VIDLORA_CUDA_RUNTIME 1

#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

// A static shared array is VIDLORA_STATIC_SHARED (below), which the emulation poisons per block: __shared__ itself
// names the fix in the compiler's error.
#undef __shared__
#define __shared__ use_VIDLORA_STATIC_SHARED_from_core_cuda_launch_cuh_instead_of___shared__
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
// A static shared array's storage (VIDLORA_STATIC_SHARED; `key` names the declaration): the host thread's own, of
// exactly `bytes`, filled with 0xFF bytes (NaN) at the block's first reach, as a GPU's shared memory holds what it held;
// later reaches in the same block leave it alone. Checks the block's static and dynamic shared memory against the
// card's limits.
void* static_shared(const void* key, std::size_t bytes, std::size_t alignment);
void sync_threads();
void sync_warp();  // the warp's lanes (all of them: a partial mask is not emulated)
// Every lane of the current warp hands in `value` and gets lane `source(lane)`'s back (after a warp barrier).
std::uint64_t warp_exchange(std::uint64_t value, int source_lane);
// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}: the warp's lanes hand in their fragments (the PTX ISA's layouts,
// as tests/cuda_host/simt_block.hpp writes them), each computes its own accumulators from the whole tiles, products
// summed in k order onto c.
void warp_mma_m16n8k16(float (&c)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2], bool bf16);
// ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16: the warp's lanes hand in their row addresses (each 16 bytes,
// 16-byte aligned, inside the block's shared memory, else an error naming the lane) and each gets its four registers
// (the PTX ISA's layout, tests/cuda_host/ldmatrix_layout.hpp).
void warp_ldmatrix_x4(std::uint32_t (&r)[4], const void* row, bool trans);
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
  int dynamic_attribute = -1;  // set by begin_launch: the kernel's cudaFuncAttributeMaxDynamicSharedMemorySize, if set
};
// Checks the configuration (sets the runtime's last error and returns false when the GPU would refuse it), then
// runs body(state) for every thread of every block.
bool begin_launch(LaunchConfig& c, const void* kernel, const char* name);
void run_grid(const LaunchConfig& c, const char* name, void (*body)(void*), void* context);

// Streams (cuda_emu_runtime.cpp, "streams"): `work` is queued on `stream` (null: the legacy default stream), after the
// stream's earlier work, what CUDA orders it after on other streams, and operation `also_after` (an event's record;
// 0: none); it runs when the host waits for it (or at once with VIDLORA_EMU_STREAMS=eager). Returns its id.
std::uint64_t enqueue(cudaStream_t stream, std::function<void()> work, std::uint64_t also_after = 0,
                      std::uint64_t* id_into = nullptr);  // id_into: where to store the id, under the queue's lock
// Runs operation `id`, if still queued, and every queued operation it waits for.
void wait_for(std::uint64_t id);
void wait_for_all();

// `member` is -1 for the argument itself, else the index of the member of the argument's class (aggregate) that
// holds the pointer, `type` that class's name; nested aggregates are walked too (the innermost member is named).
// (`argument` is the word for what `index` counts: "argument", or "element" of an uploaded table.)
void fail_pointer_argument(const void* p, int index, const char* kernel, int member, const char* type,
                           const char* argument);

// The members of a kernel's Params struct, as structured bindings: an aggregate's member count is the largest N for
// which T{{x_1}, ..., {x_N}} compiles with x convertible to anything. Each x in braces of its own initialises one
// whole member (an array member included: no brace elision), so N is what structured bindings decompose into.
// (A std::array member counts as one here and is walked by its tuple protocol; an aggregate with a base class would
// not compile: none of the kernels' arguments has one.)
struct AnyMember {
  template <class U>
  operator U() const;  // never defined: unevaluated contexts only
};
inline constexpr std::size_t kMaxMembers = 32;
template <class T, std::size_t... I>
constexpr bool initializable_from(std::index_sequence<I...>) {
  return requires { T{{(static_cast<void>(I), AnyMember{})}...}; };
}
template <class T, std::size_t N = kMaxMembers + 1>
constexpr std::size_t member_count() {
  if constexpr (initializable_from<T>(std::make_index_sequence<N>{}))
    return N;
  else
    return member_count<T, N - 1>();
}
template <std::size_t N, class T, class F>
void for_each_member(const T& t, F&& f) {
  // clang-format off
  if constexpr (N == 0) {}
  else if constexpr (N == 1) { const auto& [m0] = t; (f(m0)); }
  else if constexpr (N == 2) { const auto& [m0, m1] = t; (f(m0), f(m1)); }
  else if constexpr (N == 3) { const auto& [m0, m1, m2] = t; (f(m0), f(m1), f(m2)); }
  else if constexpr (N == 4) { const auto& [m0, m1, m2, m3] = t; (f(m0), f(m1), f(m2), f(m3)); }
  else if constexpr (N == 5) { const auto& [m0, m1, m2, m3, m4] = t; (f(m0), f(m1), f(m2), f(m3), f(m4)); }
  else if constexpr (N == 6) { const auto& [m0, m1, m2, m3, m4, m5] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5)); }
  else if constexpr (N == 7) { const auto& [m0, m1, m2, m3, m4, m5, m6] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6)); }
  else if constexpr (N == 8) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7)); }
  else if constexpr (N == 9) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8)); }
  else if constexpr (N == 10) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9)); }
  else if constexpr (N == 11) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10)); }
  else if constexpr (N == 12) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11)); }
  else if constexpr (N == 13) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12)); }
  else if constexpr (N == 14) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13)); }
  else if constexpr (N == 15) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14)); }
  else if constexpr (N == 16) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15)); }
  else if constexpr (N == 17) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16)); }
  else if constexpr (N == 18) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17)); }
  else if constexpr (N == 19) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18)); }
  else if constexpr (N == 20) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19)); }
  else if constexpr (N == 21) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19), f(m20)); }
  else if constexpr (N == 22) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19), f(m20), f(m21)); }
  else if constexpr (N == 23) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19), f(m20), f(m21), f(m22)); }
  else if constexpr (N == 24) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19), f(m20), f(m21), f(m22), f(m23)); }
  else if constexpr (N == 25) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19), f(m20), f(m21), f(m22), f(m23), f(m24)); }
  else if constexpr (N == 26) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19), f(m20), f(m21), f(m22), f(m23), f(m24), f(m25)); }
  else if constexpr (N == 27) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19), f(m20), f(m21), f(m22), f(m23), f(m24), f(m25), f(m26)); }
  else if constexpr (N == 28) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19), f(m20), f(m21), f(m22), f(m23), f(m24), f(m25), f(m26), f(m27)); }
  else if constexpr (N == 29) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27, m28] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19), f(m20), f(m21), f(m22), f(m23), f(m24), f(m25), f(m26), f(m27), f(m28)); }
  else if constexpr (N == 30) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27, m28, m29] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19), f(m20), f(m21), f(m22), f(m23), f(m24), f(m25), f(m26), f(m27), f(m28), f(m29)); }
  else if constexpr (N == 31) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27, m28, m29, m30] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19), f(m20), f(m21), f(m22), f(m23), f(m24), f(m25), f(m26), f(m27), f(m28), f(m29), f(m30)); }
  else if constexpr (N == 32) { const auto& [m0, m1, m2, m3, m4, m5, m6, m7, m8, m9, m10, m11, m12, m13, m14, m15, m16, m17, m18, m19, m20, m21, m22, m23, m24, m25, m26, m27, m28, m29, m30, m31] = t; (f(m0), f(m1), f(m2), f(m3), f(m4), f(m5), f(m6), f(m7), f(m8), f(m9), f(m10), f(m11), f(m12), f(m13), f(m14), f(m15), f(m16), f(m17), f(m18), f(m19), f(m20), f(m21), f(m22), f(m23), f(m24), f(m25), f(m26), f(m27), f(m28), f(m29), f(m30), f(m31)); }
  // clang-format on
  static_assert(N <= kMaxMembers, "for_each_member: add the bindings of more members");
}

// Whether p points into an allocation of cudaMalloc or cudaMallocHost, or just past one's end (an empty range's
// pointer: a GPU faults only on what a kernel reads).
bool device_address(const void* p);

// A pointer argument, and every pointer inside an argument (a member of its Params struct, of a struct inside that,
// an element of an array or std::array member), must point into device (or page-locked host) memory, as it must on
// a GPU. Not walked: members of classes that are not aggregates (none of the kernels' arguments has one).
template <class T>
void check_pointer_argument(const T& value, int index, const char* kernel, int member = -1, const char* type = nullptr,
                            const char* argument = "argument") {
  if constexpr (std::is_pointer_v<T>) {
    if (value != nullptr && !device_address(value)) fail_pointer_argument(value, index, kernel, member, type, argument);
  } else if constexpr (std::is_array_v<T>) {
    for (const auto& e : value) check_pointer_argument(e, index, kernel, member, type, argument);
  } else if constexpr (requires { std::tuple_size<T>::value; }) {  // std::array, std::pair, std::tuple
    std::apply([&](const auto&... e) { (check_pointer_argument(e, index, kernel, member, type, argument), ...); },
               value);
  } else if constexpr (std::is_class_v<T> && std::is_aggregate_v<T>) {
    constexpr std::size_t n = member_count<T>();
    static_assert(n <= kMaxMembers,
                  "check_pointer_argument: a kernel argument struct of more than kMaxMembers "
                  "members: add their bindings to for_each_member");
    int m = 0;
    for_each_member<n>(
        value, [&](const auto& x) { check_pointer_argument(x, index, kernel, m++, typeid(T).name(), argument); });
  }
}

// A table uploaded for kernels to read (DeviceBuffer::upload): each pointer in its elements (pointers, or pointer
// members of aggregates, nested too) must point into device or page-locked memory, as a kernel's arguments must; a
// table without pointers is not walked.
template <class T>
constexpr bool may_hold_pointers() {
  if constexpr (std::is_pointer_v<T>) {
    return true;
  } else if constexpr (std::is_array_v<T>) {
    return may_hold_pointers<std::remove_extent_t<T>>();
  } else if constexpr (requires { std::tuple_size<T>::value; }) {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return (may_hold_pointers<std::tuple_element_t<I, T>>() || ... || false);
    }
    (std::make_index_sequence<std::tuple_size_v<T>>{});
  } else if constexpr (std::is_class_v<T> && std::is_aggregate_v<T>) {
    return true;  // its members are walked at run time (one walk per element when none is a pointer)
  } else {
    return false;
  }
}
template <class T>
void check_uploaded_table(const T* data, std::size_t count) {
  if constexpr (may_hold_pointers<T>()) {
    for (std::size_t i = 0; i < count; ++i)
      check_pointer_argument(data[i], static_cast<int>(i), "a table uploaded by DeviceBuffer::upload", -1, nullptr,
                             "element");
  }
}

template <class... P>
struct Launch {
  LaunchConfig config;
  void (*kernel)(P...);
  const char* name;
  template <class... A>
  void operator()(A&&... args) const {
    LaunchConfig lc = config;
    if (!begin_launch(lc, reinterpret_cast<const void*>(kernel), name)) return;
    // The arguments as the kernel's parameter types, converted once (as a launch copies them), kept with the queued
    // launch; every thread gets its own copies of them.
    struct Context {
      void (*kernel)(P...);
      std::tuple<std::decay_t<P>...> params;
    };
    auto ctx = std::make_shared<Context>(
        Context{kernel, std::tuple<std::decay_t<P>...>(static_cast<std::decay_t<P>>(std::forward<A>(args))...)});
    // A pointer argument must point into device (or page-locked host) memory, as it must on a GPU.
    std::apply(
        [&](const auto&... p) {
          int index = 0;
          (check_pointer_argument(p, index++, name), ...);
        },
        ctx->params);
    // The grid runs when the host waits for the stream's work (cuda_emu_runtime.cpp, "streams").
    enqueue(lc.stream, [lc, name = name, ctx] {
      run_grid(
          lc, name,
          [](void* c) {
            auto* x = static_cast<Context*>(c);
            std::apply([&](const auto&... p) { x->kernel(p...); }, x->params);
          },
          ctx.get());
    });
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
#define VIDLORA_CHECK_UPLOADED_TABLE(data, count) ::vidlora_emu::check_uploaded_table(data, count)
#define VIDLORA_DYNAMIC_SHARED(alignment, type, name) type* name = static_cast<type*>(::vidlora_emu::dynamic_shared())
// A reference to the runtime's storage for this declaration (a function-local static is its key), poisoned at each
// block's first reach; per host thread, as one host thread runs a launch's blocks in turn and launches from other host
// threads run their own blocks at the same time.
#define VIDLORA_STATIC_SHARED(alignment, type, name, extents) \
  static const char name##_vidlora_static_shared_key = 0;     \
  type(&name) extents = *static_cast<type(*) extents>(        \
      ::vidlora_emu::static_shared(&name##_vidlora_static_shared_key, sizeof(type extents), alignment))

#define VIDLORA_EMULATED_MMA_M16N8K16(c, a, b, bf16) ::vidlora_emu::warp_mma_m16n8k16(c, a, b, bf16)
#define VIDLORA_EMULATED_LDMATRIX_X4(r, row, trans) ::vidlora_emu::warp_ldmatrix_x4(r, row, trans)
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
template <class... P>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, void (*kernel)(P...), int block_size,
                                                          std::size_t dynamic_shared) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, reinterpret_cast<const void*>(kernel), block_size,
                                                       dynamic_shared);
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
// One host thread runs a block's fibers, switching only at barriers: an atomic is a plain read-modify-write, except
// in the racecheck build (-fsanitize=thread), where ThreadSanitizer must see it as the (relaxed) atomic it is.
template <class T>
T atomicAdd(T* p, T v) {
#if defined(__SANITIZE_THREAD__)
  return std::atomic_ref<T>(*p).fetch_add(v, std::memory_order_relaxed);
#else
  const T old = *p;
  *p = old + v;
  return old;
#endif
}
template <class T>
T atomicMax(T* p, T v) {
#if defined(__SANITIZE_THREAD__)
  std::atomic_ref<T> a(*p);
  T old = a.load(std::memory_order_relaxed);
  while (v > old && !a.compare_exchange_weak(old, v, std::memory_order_relaxed)) {
  }
  return old;
#else
  const T old = *p;
  if (v > old) *p = v;
  return old;
#endif
}
template <class T>
T atomicExch(T* p, T v) {
#if defined(__SANITIZE_THREAD__)
  return std::atomic_ref<T>(*p).exchange(v, std::memory_order_relaxed);
#else
  const T old = *p;
  *p = v;
  return old;
#endif
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
