#pragma once
// Device memory as a CachingAllocator upstream: cudaMalloc / cudaFree (256-byte aligned by the runtime).
// cudaErrorMemoryAllocation is "exhausted" (nullptr, so the allocator can free its cache and retry, then
// report the tag and sizes); every other status throws CudaError. Needs the CUDA runtime (nvcc, or a C++ TU
// linked to vidlora::cuda).

#include <cstddef>
#include <string_view>

#include <vidlora/core/caching_allocator.hpp>
#include <vidlora/core/cuda/status.cuh>

#if VIDLORA_HAS_CUDA_RUNTIME
namespace vidlora::cuda {

struct CudaUpstream {
  static constexpr std::string_view name = "cuda";
  void* allocate(std::size_t bytes) {
    void* p = nullptr;
    const cudaError_t status = cudaMalloc(&p, bytes);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear the runtime's last-error slot for this failed call
      return nullptr;
    }
    check_cuda(status, "cudaMalloc", __FILE__, __LINE__);
    return p;
  }
  void deallocate(void* p, std::size_t) { VIDLORA_CUDA_CHECK(cudaFree(p)); }
};

// The training run's device allocator: one per process, capped at the preset's memory
// (presets/memory_cap.hpp) unless the user set another cap.
using CudaCachingAllocator = CachingAllocator<CudaUpstream>;

// The allocator of device code given none: one per process, uncapped, never destroyed (buffers from it may outlive
// any object; at exit the driver takes its memory back).
inline CudaCachingAllocator& default_device_allocator() {
  static CudaCachingAllocator* const allocator = new CudaCachingAllocator();
  return *allocator;
}

}  // namespace vidlora::cuda
#endif
