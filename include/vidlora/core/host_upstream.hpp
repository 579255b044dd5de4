#pragma once
// Host memory as a CachingAllocator upstream: aligned operator new / delete (256 bytes, as cudaMalloc).
// What the allocator's host tests run on, and a CPU stand-in wherever a device upstream is expected.

#include <cstddef>
#include <new>
#include <string_view>

#include <vidlora/core/caching_allocator.hpp>

namespace vidlora {

struct HostUpstream {
  static constexpr std::string_view name = "host";
  void* allocate(std::size_t bytes) {
    return ::operator new (bytes, std::align_val_t{kAllocationAlignment}, std::nothrow);  // nullptr when exhausted
  }
  void deallocate(void* p, std::size_t) { ::operator delete (p, std::align_val_t{kAllocationAlignment}); }
};

using HostCachingAllocator = CachingAllocator<HostUpstream>;

}  // namespace vidlora
