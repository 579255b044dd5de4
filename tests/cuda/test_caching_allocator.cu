// CachingAllocator over cudaMalloc / cudaFree: aligned, usable device blocks, reuse without a cudaMalloc,
// the cap error, and cudaMalloc's out-of-memory turned into a DeviceMemoryError naming the tensor (the
// context still works afterwards).
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include <vidlora/core/cuda/cuda_upstream.cuh>
#include <vidlora/core/cuda/memory.cuh>

using namespace vidlora;

namespace {
constexpr std::size_t MiB = std::size_t{1} << 20, GiB = std::size_t{1} << 30;
}

TEST_CASE("cuda caching allocator hands out aligned, writable device blocks and reuses them", "[core]") {
  cuda::CudaCachingAllocator a(CachingAllocatorOptions{.cap_bytes = 256 * MiB});
  std::vector<void*> ps;
  for (std::size_t n : {std::size_t{1}, std::size_t{1000}, 3 * MiB + 7}) {
    void* p = a.allocate(n, "block");
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % kAllocationAlignment == 0);
    VIDLORA_CUDA_CHECK(cudaMemset(p, 0x3C, n));
    std::vector<unsigned char> back(n);
    VIDLORA_CUDA_CHECK(cudaMemcpy(back.data(), p, n, cudaMemcpyDeviceToHost));
    CHECK(back.front() == 0x3C);
    CHECK(back.back() == 0x3C);
    ps.push_back(p);
  }
  for (void* p : ps) a.deallocate(p);
  CHECK(a.allocate(3 * MiB, "reuse") == ps[2]);
  CHECK(a.stats().upstream_allocations == 3);
  CHECK(a.stats().cache_hits == 1);
}

TEST_CASE("cuda caching allocator refuses past its cap and maps cudaMalloc's out-of-memory", "[core]") {
  cuda::CudaCachingAllocator capped(CachingAllocatorOptions{.cap_bytes = 64 * MiB});
  void* w = capped.allocate(48 * MiB, "weights");
  CHECK_THROWS_WITH(capped.allocate(32 * MiB, "activations"),
                    Catch::Contains("'activations'") && Catch::Contains("cap 64.00 MiB"));
  capped.deallocate(w);

  cuda::CudaCachingAllocator uncapped;
  try {
    (void)uncapped.allocate(std::size_t{1} << 46, "too big for any card");  // 64 TiB
    FAIL("no error");
  } catch (const DeviceMemoryError& e) {
    CHECK(e.reason == DeviceMemoryError::Reason::upstream);
    CHECK(std::string(e.what()).find("cuda upstream") != std::string::npos);
  }
  // The failed cudaMalloc left the context usable.
  void* p = uncapped.allocate(GiB / 4, "after");
  VIDLORA_CUDA_CHECK(cudaMemset(p, 0, GiB / 4));
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
  uncapped.deallocate(p);
}
