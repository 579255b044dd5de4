#pragma once
// What a caching allocator (core/caching_allocator.hpp) reports: bytes in use, cached, reserved from the
// device, their peaks, and call counts; as a JSON record for the training log's step lines and as a short
// text for the progress line. fmt-free (nvcc translation units include it).

#include <cstddef>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include <vidlora/core/error_type.hpp>

namespace vidlora {

struct MemoryStats {
  std::size_t allocated_bytes = 0;       // blocks handed out and not yet freed (size-class bytes)
  std::size_t requested_bytes = 0;       // what the callers of those blocks asked for
  std::size_t reserved_bytes = 0;        // held from the upstream (cudaMalloc): allocated + cached
  std::size_t cached_bytes = 0;          // freed blocks kept for reuse
  std::size_t peak_allocated_bytes = 0;  // since construction or the last reset_peak()
  std::size_t peak_reserved_bytes = 0;
  std::size_t cap_bytes = 0;      // the hard cap on reserved bytes (0: none)
  long allocations = 0;           // allocate() calls that returned a block
  long cache_hits = 0;            // ... served from the cache (no upstream call)
  long upstream_allocations = 0;  // cudaMalloc calls
  long upstream_frees = 0;        // cudaFree calls
  long cache_releases = 0;        // times cached blocks were given back to make room under the cap
  long live_allocations = 0;
};

// "1.50 GiB", "768.00 KiB", "12 B".
inline std::string format_bytes(std::size_t bytes) {
  static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 4) v /= 1024.0, ++u;
  char buf[48];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%zu B", bytes);
  else
    std::snprintf(buf, sizeof buf, "%.2f %s", v, units[u]);
  return buf;
}

// The training log's record (one object under "memory" in a step line): byte counts as integers, exact.
inline nlohmann::json memory_stats_to_json(const MemoryStats& s) {
  return {{"allocated_bytes", s.allocated_bytes},
          {"requested_bytes", s.requested_bytes},
          {"reserved_bytes", s.reserved_bytes},
          {"cached_bytes", s.cached_bytes},
          {"peak_allocated_bytes", s.peak_allocated_bytes},
          {"peak_reserved_bytes", s.peak_reserved_bytes},
          {"cap_bytes", s.cap_bytes},
          {"allocations", s.allocations},
          {"cache_hits", s.cache_hits},
          {"upstream_allocations", s.upstream_allocations},
          {"upstream_frees", s.upstream_frees},
          {"cache_releases", s.cache_releases},
          {"live_allocations", s.live_allocations}};
}

inline MemoryStats memory_stats_from_json(const nlohmann::json& j) {
  auto field = [&](const char* key) -> const nlohmann::json& {
    const auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer())
      throw Error(std::string("memory stats record: no integer '") + key + "'");
    return *it;
  };
  MemoryStats s;
  s.allocated_bytes = field("allocated_bytes").get<std::size_t>();
  s.requested_bytes = field("requested_bytes").get<std::size_t>();
  s.reserved_bytes = field("reserved_bytes").get<std::size_t>();
  s.cached_bytes = field("cached_bytes").get<std::size_t>();
  s.peak_allocated_bytes = field("peak_allocated_bytes").get<std::size_t>();
  s.peak_reserved_bytes = field("peak_reserved_bytes").get<std::size_t>();
  s.cap_bytes = field("cap_bytes").get<std::size_t>();
  s.allocations = field("allocations").get<long>();
  s.cache_hits = field("cache_hits").get<long>();
  s.upstream_allocations = field("upstream_allocations").get<long>();
  s.upstream_frees = field("upstream_frees").get<long>();
  s.cache_releases = field("cache_releases").get<long>();
  s.live_allocations = field("live_allocations").get<long>();
  return s;
}

// Stats over consecutive intervals (an optimizer step's micro-batches, each with its own peaks): the later
// interval's current values and counters, the larger of the two peaks.
inline MemoryStats combine_intervals(const MemoryStats& earlier, const MemoryStats& later) {
  MemoryStats s = later;
  if (earlier.peak_allocated_bytes > s.peak_allocated_bytes) s.peak_allocated_bytes = earlier.peak_allocated_bytes;
  if (earlier.peak_reserved_bytes > s.peak_reserved_bytes) s.peak_reserved_bytes = earlier.peak_reserved_bytes;
  return s;
}

// The progress line's part: "mem 3.21 GiB (peak 3.90 GiB, cap 14.00 GiB)".
inline std::string memory_progress_text(const MemoryStats& s) {
  std::string t = "mem " + format_bytes(s.allocated_bytes) + " (peak " + format_bytes(s.peak_allocated_bytes);
  if (s.cap_bytes) t += ", cap " + format_bytes(s.cap_bytes);
  return t + ")";
}

}  // namespace vidlora
