// The training log's step line carries the device allocator's stats and the fp16 loss scale when a run has
// them (GPU runs), and nothing new otherwise.
#include <catch2/catch.hpp>

#include <vidlora/core/caching_allocator.hpp>
#include <vidlora/core/host_upstream.hpp>
#include <vidlora/train/training_log.hpp>

using namespace vidlora;

TEST_CASE("a step record writes the step's memory stats and loss scale, and only when present", "[train][log]") {
  HostCachingAllocator alloc(CachingAllocatorOptions{.cap_bytes = std::size_t{64} << 20});
  void* a = alloc.allocate(std::size_t{5} << 20, "activations");
  alloc.deallocate(a);
  alloc.reset_peak();  // the next step's peak starts here
  void* b = alloc.allocate(std::size_t{3} << 20, "activations");
  const auto j =
      train::to_json(train::StepRecord{.step = 7, .loss = 1.0, .memory = alloc.stats(), .loss_scale = 32768.0});
  CHECK(j["memory"]["peak_allocated_bytes"].get<std::size_t>() == (std::size_t{4} << 20));  // 3 MiB -> a 4 MiB class
  CHECK(j["memory"]["cap_bytes"].get<std::size_t>() == (std::size_t{64} << 20));
  CHECK(j["memory"]["cache_hits"].get<long>() == 0);  // 5 MiB's 6 MiB block is more than 1/8 above 4 MiB
  CHECK(memory_stats_from_json(j["memory"]).peak_reserved_bytes == (std::size_t{10} << 20));
  CHECK(j["loss_scale"].get<double>() == 32768.0);
  const auto plain = train::to_json(train::StepRecord{.step = 8, .loss = 1.0});
  CHECK_FALSE(plain.contains("memory"));
  CHECK_FALSE(plain.contains("loss_scale"));
  alloc.deallocate(b);
}
