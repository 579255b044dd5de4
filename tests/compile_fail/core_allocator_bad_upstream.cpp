// expect: Upstream is not an allocator upstream
// CachingAllocator<Upstream> needs an upstream policy (HostUpstream, cuda::CudaUpstream); a type without
// allocate / deallocate / name is refused with a readable message.
#include <vidlora/core/caching_allocator.hpp>

struct Malloc {  // allocate returns an int, no deallocate, no name
  int allocate(std::size_t) { return 0; }
};

int main() {
  vidlora::CachingAllocator<Malloc> a;
  return a.allocate(16, "x") != nullptr;
}
