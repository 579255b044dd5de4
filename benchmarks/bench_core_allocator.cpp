// Cost of CachingAllocator's bookkeeping on a cache hit (mutex, size-class lookup, live-block map), over
// host memory, against the upstream call it saves (aligned operator new / delete of the same size). On a
// GPU the saved call is cudaMalloc + cudaFree, far slower than host new / delete, so this bounds the
// allocator's overhead per tensor rather than its gain.
//   bench_core_allocator --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <vidlora/core/host_upstream.hpp>

#include <new>
#include <vector>

namespace {

using namespace vidlora;

// Baseline: what a cache miss pays on the host upstream.
void BM_AlignedNewDelete(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    void* p = ::operator new (bytes, std::align_val_t{kAllocationAlignment});
    benchmark::DoNotOptimize(p);
    ::operator delete (p, std::align_val_t{kAllocationAlignment});
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_CachingAllocatorHit(benchmark::State& state) {
  const auto bytes = static_cast<std::size_t>(state.range(0));
  HostCachingAllocator a;
  a.deallocate(a.allocate(bytes, "warm"));
  for (auto _ : state) {
    void* p = a.allocate(bytes, "activation");
    benchmark::DoNotOptimize(p);
    a.deallocate(p);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["upstream_calls"] = static_cast<double>(a.stats().upstream_allocations);
}

// A layer-like step: 64 live tensors of mixed sizes, then all freed; every step after the first is all hits.
void BM_CachingAllocatorStep(benchmark::State& state) {
  HostCachingAllocator a;
  std::vector<std::size_t> sizes;
  for (int i = 0; i < 64; ++i) sizes.push_back(static_cast<std::size_t>(256 + (i * 7919) % (4 << 20)));
  std::vector<void*> live(sizes.size());
  for (auto _ : state) {
    for (std::size_t i = 0; i < sizes.size(); ++i) live[i] = a.allocate(sizes[i], "step");
    for (void* p : live) a.deallocate(p);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<long>(sizes.size()));
  state.counters["upstream_calls"] = static_cast<double>(a.stats().upstream_allocations);
}

BENCHMARK(BM_AlignedNewDelete)->Arg(4096)->Arg(4 << 20);
BENCHMARK(BM_CachingAllocatorHit)->Arg(4096)->Arg(4 << 20);
BENCHMARK(BM_CachingAllocatorStep);

}  // namespace
