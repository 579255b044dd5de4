// CachingAllocator over a counting fake upstream (no memory touched, every call counted) and over host
// memory: the cap error, reuse without upstream calls, peak accounting, the fragmentation case, alignment,
// and the JSONL stats record.
#include <catch2/catch.hpp>

#include <vidlora/core/caching_allocator.hpp>
#include <vidlora/core/host_upstream.hpp>
#include <vidlora/core/memory_stats.hpp>

#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

using namespace vidlora;

namespace {

constexpr std::size_t KiB = 1024, MiB = 1024 * KiB, GiB = 1024 * MiB;

// Hands out fake addresses (never dereferenced) and counts every call; `device_bytes` plays the card's
// real size (allocate returns nullptr beyond it, as cudaMalloc's out-of-memory).
struct CountingUpstream {
  static constexpr std::string_view name = "fake";
  std::uintptr_t next = 0x100000;
  std::size_t device_bytes = std::size_t{1} << 50;
  std::size_t held = 0;
  long allocs = 0, frees = 0;
  long* frees_out = nullptr;  // also counted here, to outlive the allocator
  std::set<std::uintptr_t> live{};
  std::vector<std::size_t> sizes{};  // of every allocate call
  void* allocate(std::size_t n) {
    if (held + n > device_bytes) return nullptr;
    ++allocs;
    sizes.push_back(n);
    held += n;
    const auto p = next;
    next += (n + 4095) / 4096 * 4096 + 4096;  // gaps: a block never ends where the next starts
    live.insert(p);
    return reinterpret_cast<void*>(p);
  }
  void deallocate(void* p, std::size_t n) {
    REQUIRE(live.erase(reinterpret_cast<std::uintptr_t>(p)) == 1);
    held -= n;
    ++frees;
    if (frees_out) ++*frees_out;
  }
};

using Fake = CachingAllocator<CountingUpstream>;

// What the hook of set_before_release may throw (comm::CommError in the trainer: core does not include comm).
struct comm_like_error : Error {
  using Error::Error;
};

}  // namespace

TEST_CASE("allocation size classes: 256-byte steps to 1 MiB, 2 MiB steps above", "[core][allocator]") {
  STATIC_REQUIRE(allocation_size_class(1) == 256);
  STATIC_REQUIRE(allocation_size_class(256) == 256);
  STATIC_REQUIRE(allocation_size_class(257) == 512);
  STATIC_REQUIRE(allocation_size_class(MiB) == MiB);
  STATIC_REQUIRE(allocation_size_class(MiB + 1) == 2 * MiB);
  STATIC_REQUIRE(allocation_size_class(5 * MiB + 3) == 6 * MiB);
}

TEST_CASE("a freed block is reused for the same size class without an upstream call", "[core][allocator]") {
  Fake a;
  void* p = a.allocate(1000, "x");
  a.deallocate(p);
  CHECK(a.upstream().allocs == 1);
  void* q = a.allocate(900, "y");  // same 1024-byte class
  CHECK(q == p);
  CHECK(a.upstream().allocs == 1);
  CHECK(a.stats().cache_hits == 1);
  // A training step that repeats its shapes: the second step makes no upstream call at all.
  auto step = [&] {
    std::vector<void*> blocks;
    for (std::size_t n : {3 * MiB, 512 * KiB, 40 * MiB, 777ul, 3 * MiB}) blocks.push_back(a.allocate(n, "act"));
    for (void* b : blocks) a.deallocate(b);
  };
  step();
  const long after_first = a.upstream().allocs;
  step();
  step();
  CHECK(a.upstream().allocs == after_first);
  // A cached block up to 1/8 larger serves a smaller class; a bigger one does not.
  a.deallocate(q);
  Fake b;
  void* big = b.allocate(36 * MiB, "big");
  b.deallocate(big);
  void* fits = b.allocate(32 * MiB, "fits");
  CHECK(fits == big);  // 36 <= 32 + 32/8
  b.deallocate(fits);
  void* other = b.allocate(30 * MiB, "30: 36 is more than 1/8 larger");
  CHECK(other != big);
  CHECK(b.upstream().allocs == 2);
}

TEST_CASE("stats count allocated, requested, reserved, cached, peaks and upstream calls", "[core][allocator]") {
  Fake a(CachingAllocatorOptions{.cap_bytes = GiB});
  void* p1 = a.allocate(100, "a");      // 256
  void* p2 = a.allocate(3 * MiB, "b");  // 4 MiB
  auto s = a.stats();
  CHECK(s.allocated_bytes == 256 + 4 * MiB);
  CHECK(s.requested_bytes == 100 + 3 * MiB);
  CHECK(s.reserved_bytes == 256 + 4 * MiB);
  CHECK(s.cached_bytes == 0);
  CHECK(s.peak_allocated_bytes == 256 + 4 * MiB);
  CHECK(s.upstream_allocations == 2);
  CHECK(s.live_allocations == 2);
  CHECK(s.cap_bytes == GiB);
  a.deallocate(p2);
  s = a.stats();
  CHECK(s.allocated_bytes == 256);
  CHECK(s.cached_bytes == 4 * MiB);
  CHECK(s.reserved_bytes == 256 + 4 * MiB);
  CHECK(s.peak_allocated_bytes == 256 + 4 * MiB);  // the peak stays
  // Per-step peak: reset at the start of a step, the step's own high-water mark afterwards.
  a.reset_peak();
  CHECK(a.stats().peak_allocated_bytes == 256);
  void* p3 = a.allocate(MiB, "c");
  void* p4 = a.allocate(MiB, "d");
  a.deallocate(p3);
  a.deallocate(p4);
  s = a.stats();
  CHECK(s.peak_allocated_bytes == 256 + 2 * MiB);
  CHECK(s.allocated_bytes == 256);
  CHECK(s.peak_reserved_bytes == 256 + 6 * MiB);
  CHECK(a.release_cached() == 6 * MiB);
  s = a.stats();
  CHECK(s.reserved_bytes == 256);
  CHECK(s.upstream_frees == 3);
  CHECK(a.upstream().held == 256);
  a.deallocate(p1);
  CHECK(a.stats().requested_bytes == 0);
  CHECK(a.stats().live_allocations == 0);
  CHECK(a.allocate(0, "empty") == nullptr);
  a.deallocate(nullptr);
  CHECK(a.stats().allocations == 4);
}

TEST_CASE("asking for more than the cap is an error naming the tensor and the sizes", "[core][allocator][errors]") {
  Fake a(CachingAllocatorOptions{.cap_bytes = 64 * MiB});
  void* w = a.allocate(40 * MiB, "decoder.layers.0.mlp.up_proj.weight");
  void* x = a.allocate(10 * MiB, "activations");
  try {
    (void)a.allocate(20 * MiB, "lm_head.logits_chunk");
    FAIL("no error");
  } catch (const DeviceMemoryError& e) {
    const std::string m = e.what();
    INFO(m);
    CHECK(e.reason == DeviceMemoryError::Reason::cap);
    CHECK(e.tag == "lm_head.logits_chunk");
    CHECK(e.requested_bytes == 20 * MiB);
    CHECK(e.allocated_bytes == 50 * MiB);
    CHECK(e.cap_bytes == 64 * MiB);
    CHECK(e.peak_allocated_bytes == 50 * MiB);
    CHECK(m.find("'lm_head.logits_chunk'") != std::string::npos);
    CHECK(m.find("20.00 MiB (20971520 bytes)") != std::string::npos);  // requested
    CHECK(m.find("in use 50.00 MiB (52428800 bytes) in 2 blocks") != std::string::npos);
    CHECK(m.find("cap 64.00 MiB (67108864 bytes)") != std::string::npos);
    CHECK(m.find("peak 50.00 MiB") != std::string::npos);
    CHECK(m.find("'decoder.layers.0.mlp.up_proj.weight' 40.00 MiB") != std::string::npos);  // largest in use
    CHECK(m.find("--max-memory-gb") != std::string::npos);
  }
  // Nothing changed: the failed request left no trace, and the allocator keeps working.
  CHECK(a.stats().allocated_bytes == 50 * MiB);
  CHECK(a.stats().live_allocations == 2);
  CHECK_THROWS_AS(a.allocate(65 * MiB, "whole"), DeviceMemoryError);
  CHECK_THROWS_WITH(a.allocate(65 * MiB, "whole"), Catch::Contains("larger than the whole cap"));
  a.deallocate(x);
  CHECK_NOTHROW(a.deallocate(a.allocate(14 * MiB, "fits exactly")));  // 40 live + 10 cached + 14 = the cap
  a.deallocate(w);
  CHECK(a.stats().reserved_bytes <= 64 * MiB);
}

TEST_CASE("fragmentation: cached blocks go back to make room, live ones cannot", "[core][allocator]") {
  Fake a(CachingAllocatorOptions{.cap_bytes = 10 * MiB});
  std::vector<void*> small;
  for (int i = 0; i < 8; ++i) small.push_back(a.allocate(MiB, "small"));
  for (void* p : small) a.deallocate(p);
  CHECK(a.stats().cached_bytes == 8 * MiB);
  // 8 MiB cached in 1 MiB blocks cannot serve 4 MiB (no merging); under the cap only by releasing them.
  void* big = a.allocate(4 * MiB, "big");
  auto s = a.stats();
  CHECK(s.cache_releases == 1);
  CHECK(s.upstream_frees == 2);  // largest first, only as many as needed: 8 + 4 - 10 = 2 MiB
  CHECK(s.reserved_bytes == 10 * MiB);
  CHECK(s.cached_bytes == 6 * MiB);
  a.deallocate(big);
  a.release_cached();
  // Live blocks pin memory: 4 live 1 MiB blocks + 4 cached; 7 MiB (an 8 MiB class) needs 12 MiB even after
  // the cache is released.
  small.clear();
  for (int i = 0; i < 8; ++i) small.push_back(a.allocate(MiB, "pinned"));
  for (int i = 0; i < 8; i += 2) a.deallocate(small[static_cast<std::size_t>(i)]);
  CHECK_THROWS_WITH(a.allocate(7 * MiB, "needs 7"), Catch::Contains("does not fit under the cap") &&
                                                        Catch::Contains("in use 4.00 MiB") &&
                                                        Catch::Contains("cached 0 B"));
  CHECK(a.stats().reserved_bytes == 4 * MiB);  // the cache went back trying
  CHECK_NOTHROW(a.allocate(6 * MiB, "fits"));
}

TEST_CASE("before cached blocks go back, the owner's hook runs (and may stop it with nothing moved)",
          "[core][allocator]") {
  // The CUDA trainer waits there for gradient sums in flight on NCCL's stream, under its timeout, before cudaFree
  // (which waits for the whole device) can block on them (train/cuda/decoder_step.cuh).
  Fake a(CachingAllocatorOptions{.cap_bytes = 10 * MiB});
  int calls = 0;
  a.set_before_release([&calls] { ++calls; });
  void* p = a.allocate(8 * MiB, "cached");
  a.deallocate(p);
  void* q = a.allocate(MiB, "from the cache? no: another class");  // fits beside the cached block: no release
  CHECK(calls == 0);
  a.deallocate(q);
  a.set_before_release([&calls] {
    ++calls;
    throw comm_like_error("rank 0 of 2: step 3: gradients (LoRA) did not complete within 1 s");
  });
  const auto before = a.stats();
  CHECK_THROWS_WITH(a.allocate(4 * MiB, "needs room"), Catch::Contains("did not complete within 1 s"));
  CHECK(calls == 1);
  const auto after = a.stats();
  CHECK(after.cached_bytes == before.cached_bytes);  // nothing moved
  CHECK(after.upstream_frees == before.upstream_frees);
  a.set_before_release({});
  CHECK_NOTHROW(a.deallocate(a.allocate(4 * MiB, "needs room")));
  CHECK(a.stats().upstream_frees > before.upstream_frees);
  CHECK(calls == 1);
}

TEST_CASE("an upstream that runs out below the cap frees the cache, retries, then names the tensor",
          "[core][allocator][errors]") {
  Fake a(CachingAllocatorOptions{.cap_bytes = GiB}, CountingUpstream{.device_bytes = 8 * MiB});
  void* p = a.allocate(6 * MiB, "first");
  a.deallocate(p);
  void* q = a.allocate(8 * MiB, "second");  // 6 cached + 8 > device: cache released, retried
  CHECK(q != nullptr);
  CHECK(a.stats().upstream_frees == 1);
  try {
    (void)a.allocate(2 * MiB, "third");
    FAIL("no error");
  } catch (const DeviceMemoryError& e) {
    CHECK(e.reason == DeviceMemoryError::Reason::upstream);
    CHECK(std::string(e.what()).find("'third'") != std::string::npos);
    CHECK(std::string(e.what()).find("fake upstream") != std::string::npos);
  }
}

TEST_CASE("freeing a pointer twice or from elsewhere is an error", "[core][allocator][errors]") {
  Fake a;
  void* p = a.allocate(10, "x");
  a.deallocate(p);
  CHECK_THROWS_WITH(a.deallocate(p), Catch::Contains("not a live block"));
  int local = 0;
  CHECK_THROWS_WITH(a.deallocate(&local), Catch::Contains("not a live block"));
}

TEST_CASE("the destructor gives every block back to the upstream", "[core][allocator]") {
  long frees = 0;
  {
    Fake a(CachingAllocatorOptions{}, CountingUpstream{.frees_out = &frees});
    void* p = a.allocate(5 * MiB, "cached");
    (void)a.allocate(300, "still live");
    a.deallocate(p);
    CHECK(a.upstream().live.size() == 2);
    CHECK(frees == 0);
  }
  CHECK(frees == 2);  // the cached block and the live one
}

TEST_CASE("host upstream blocks are 256-byte aligned and usable", "[core][allocator]") {
  HostCachingAllocator a(CachingAllocatorOptions{.cap_bytes = 64 * MiB});
  std::vector<void*> ps;
  for (std::size_t n : {1ul, 255ul, 257ul, 4097ul, 3 * MiB + 5}) {
    void* p = a.allocate(n, "host");
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<std::uintptr_t>(p) % kAllocationAlignment == 0);
    std::memset(p, 0xAB, n);  // the whole requested range is writable
    ps.push_back(p);
  }
  for (void* p : ps) a.deallocate(p);
  void* again = a.allocate(257, "reuse");
  CHECK(again == ps[2]);
  CHECK(a.stats().upstream_allocations == 5);
  a.deallocate(again);
  // The fake's blocks too: every pointer the allocator hands out is aligned, whatever the request.
  Fake f;
  for (std::size_t n = 1; n < 5000; n += 97) CHECK(reinterpret_cast<std::uintptr_t>(f.allocate(n, "f")) % 256 == 0);
}

TEST_CASE("memory stats round-trip through the JSONL record and print for the progress line", "[core][allocator]") {
  Fake a(CachingAllocatorOptions{.cap_bytes = 14 * GiB});
  void* p = a.allocate(3 * GiB + 5, "w");
  (void)a.allocate(MiB, "x");
  a.deallocate(p);
  const MemoryStats s = a.stats();
  const auto j = memory_stats_to_json(s);
  CHECK(j["peak_allocated_bytes"].get<std::size_t>() == s.peak_allocated_bytes);
  CHECK(j["cap_bytes"].get<std::size_t>() == 14 * GiB);
  const MemoryStats back = memory_stats_from_json(nlohmann::json::parse(j.dump()));
  CHECK(memory_stats_to_json(back) == j);
  auto bad = j;
  bad.erase("reserved_bytes");
  CHECK_THROWS_WITH(memory_stats_from_json(bad), Catch::Contains("'reserved_bytes'"));
  CHECK(memory_progress_text(s) == "mem 1.00 MiB (peak 3.00 GiB, cap 14.00 GiB)");
  CHECK(format_bytes(12) == "12 B");
  CHECK(format_bytes(1536) == "1.50 KiB");

  // an optimizer step's micro-batches: the later one's state and counters, the larger peaks
  MemoryStats first = s, second = s;
  first.peak_allocated_bytes = 5;
  first.peak_reserved_bytes = 90;
  first.allocations = 3;
  second.allocated_bytes = 7;
  second.peak_allocated_bytes = 8;
  second.peak_reserved_bytes = 60;
  second.allocations = 9;
  const MemoryStats both = combine_intervals(first, second);
  CHECK(both.allocated_bytes == 7);
  CHECK(both.allocations == 9);
  CHECK(both.peak_allocated_bytes == 8);
  CHECK(both.peak_reserved_bytes == 90);
  CHECK(both.cap_bytes == s.cap_bytes);
}
