#pragma once
// A caching allocator with a hard cap, over an upstream policy (cudaMalloc / cudaFree on the GPU:
// core/cuda/cuda_upstream.cuh; aligned new / delete on the host: core/host_upstream.hpp; a counting fake in
// the tests). Every device tensor of a training run goes through one of these, so that
// - a run on a bigger card behaves like the preset's card: the cap bounds the bytes held from the
//   upstream (allocated + cached), and asking for more is a DeviceMemoryError naming the allocation's tag
//   and the sizes (requested, in use, cap, peak), never an undefined state;
// - freed blocks are reused: a step that repeats the last step's shapes makes no upstream call;
// - every step can report its peak (stats(), reset_peak(); core/memory_stats.hpp).
//
// Size classes: requests round up to 256 bytes (the alignment every block has) up to 1 MiB, and to 2 MiB
// multiples above. A free block is reused for a request of class c when its size is in [c, c + c/8].
// Blocks are never split or merged: when a new block would cross the cap, cached blocks go back to the
// upstream, largest first, until it fits (torch's allocator does the same before it reports out of
// memory); live blocks stay where they are, so a cap can still be missed by fragmentation (the error
// then says how much is cached vs in use). Frees are stream-ordered on one compute stream: a block freed
// by the host is reused by kernels queued after it on the same stream. Thread-safe (one mutex).

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <vidlora/core/error_type.hpp>
#include <vidlora/core/memory_stats.hpp>

namespace vidlora {

inline constexpr std::size_t kAllocationAlignment = 256;
inline constexpr std::size_t kSmallAllocationLimit = std::size_t{1} << 20;  // <= 1 MiB: 256-byte classes
inline constexpr std::size_t kLargeAllocationRound = std::size_t{2} << 20;  // > 1 MiB: 2 MiB classes

// The block size a request of `bytes` gets (bytes > 0).
constexpr std::size_t allocation_size_class(std::size_t bytes) {
  const std::size_t round = bytes <= kSmallAllocationLimit ? kAllocationAlignment : kLargeAllocationRound;
  return (bytes + round - 1) / round * round;
}

// Where blocks come from. allocate(n) returns a pointer aligned to kAllocationAlignment, or nullptr when the
// memory is exhausted (other failures throw); deallocate(p, n) gives back what allocate(n) returned.
template <class U>
concept AllocatorUpstream = requires(U& u, std::size_t n, void* p) {
  { U::name } -> std::convertible_to<std::string_view>;
  { u.allocate(n) } -> std::same_as<void*>;
  u.deallocate(p, n);
};

// A request the allocator cannot serve: over the cap, or the upstream (the card) is exhausted below it.
struct DeviceMemoryError : Error {
  enum class Reason { cap, upstream };
  Reason reason;
  std::string tag;
  std::size_t requested_bytes, allocated_bytes, cached_bytes, cap_bytes, peak_allocated_bytes;
  DeviceMemoryError(std::string message, Reason r, std::string t, std::size_t requested, std::size_t allocated,
                    std::size_t cached, std::size_t cap, std::size_t peak)
      : Error(std::move(message)),
        reason(r),
        tag(std::move(t)),
        requested_bytes(requested),
        allocated_bytes(allocated),
        cached_bytes(cached),
        cap_bytes(cap),
        peak_allocated_bytes(peak) {}
};

struct CachingAllocatorOptions {
  std::size_t cap_bytes = 0;  // hard cap on bytes held from the upstream; 0: no cap
};

template <class Upstream>
class CachingAllocator {
  static_assert(AllocatorUpstream<Upstream>,
                "CachingAllocator<Upstream>: Upstream is not an allocator upstream (vidlora::AllocatorUpstream: a "
                "static `name`, `void* allocate(std::size_t)` returning nullptr when exhausted, and "
                "`deallocate(void*, std::size_t)`; e.g. HostUpstream or cuda::CudaUpstream)");

 public:
  using upstream_type = Upstream;

  explicit CachingAllocator(CachingAllocatorOptions options = {}, Upstream upstream = {})
      : upstream_(std::move(upstream)) {
    stats_.cap_bytes = options.cap_bytes;
  }
  ~CachingAllocator() {
    // Everything goes back, live blocks included (their owners outlived the allocator); never throws.
    for (auto& [p, b] : live_) give_back_noexcept(p, b.size);
    for (auto& [size, p] : cached_) give_back_noexcept(p, size);
  }
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // A block of at least `bytes` (aligned to 256), or nullptr for 0 bytes. `tag` names the tensor in
  // errors and in largest_live(). Throws DeviceMemoryError when it does not fit under the cap.
  void* allocate(std::size_t bytes, std::string_view tag) {
    if (bytes == 0) return nullptr;
    std::lock_guard lock(mutex_);
    if (bytes > std::numeric_limits<std::size_t>::max() - kLargeAllocationRound)
      fail_locked(DeviceMemoryError::Reason::cap, tag, bytes, "is not a size");
    const std::size_t size_class = allocation_size_class(bytes);
    void* p = nullptr;
    std::size_t size = 0;
    if (auto it = cached_.lower_bound(size_class); it != cached_.end() && it->first <= size_class + size_class / 8) {
      size = it->first;
      p = it->second;
      cached_.erase(it);
      stats_.cached_bytes -= size;
      ++stats_.cache_hits;
    } else {
      const std::size_t cap = stats_.cap_bytes;
      if (cap && size_class > cap)
        fail_locked(DeviceMemoryError::Reason::cap, tag, bytes, "is larger than the whole cap");
      if (cap && stats_.reserved_bytes + size_class > cap) {
        release_cached_locked(stats_.reserved_bytes + size_class - cap);
        if (stats_.reserved_bytes + size_class > cap)
          fail_locked(DeviceMemoryError::Reason::cap, tag, bytes, "does not fit under the cap");
      }
      p = upstream_.allocate(size_class);
      if (p == nullptr && !cached_.empty()) {  // the card is fuller than the cap assumed: free the cache, retry
        release_cached_locked(std::numeric_limits<std::size_t>::max());
        p = upstream_.allocate(size_class);
      }
      if (p == nullptr)
        fail_locked(DeviceMemoryError::Reason::upstream, tag, bytes,
                    std::string("was refused by the ") + std::string(Upstream::name) +
                        " upstream (the device holds less free memory than the cap)");
      if (reinterpret_cast<std::uintptr_t>(p) % kAllocationAlignment != 0) {
        upstream_.deallocate(p, size_class);
        throw Error("CachingAllocator: the " + std::string(Upstream::name) +
                    " upstream returned a pointer not aligned to " + std::to_string(kAllocationAlignment) + " bytes");
      }
      size = size_class;
      stats_.reserved_bytes += size;
      stats_.peak_reserved_bytes = std::max(stats_.peak_reserved_bytes, stats_.reserved_bytes);
      ++stats_.upstream_allocations;
    }
    live_.emplace(p, Live{size, bytes, std::string(tag)});
    stats_.allocated_bytes += size;
    stats_.requested_bytes += bytes;
    stats_.peak_allocated_bytes = std::max(stats_.peak_allocated_bytes, stats_.allocated_bytes);
    ++stats_.allocations;
    ++stats_.live_allocations;
    return p;
  }

  // Returns a block to the cache (nullptr: nothing). A pointer this allocator did not hand out is an error.
  void deallocate(void* p) {
    if (p == nullptr) return;
    std::lock_guard lock(mutex_);
    const auto it = live_.find(p);
    if (it == live_.end()) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%p", p);
      throw Error(std::string("CachingAllocator: deallocate(") + buf +
                  "): not a live block of this allocator (freed twice, or from elsewhere)");
    }
    const Live b = std::move(it->second);
    live_.erase(it);
    cached_.emplace(b.size, p);
    stats_.cached_bytes += b.size;
    stats_.allocated_bytes -= b.size;
    stats_.requested_bytes -= b.requested;
    --stats_.live_allocations;
  }

  // Called before cached blocks go back to the upstream (under the cap, or when the upstream is exhausted), while
  // the allocator's mutex is held; empty: nothing. The CUDA upstream's cudaFree waits for the whole device, so an
  // owner with work that waits on other processes (a data-parallel step's gradient sums running on NCCL's stream,
  // train/cuda/decoder_step.cuh) completes that work here first, under its own timeout, rather than block in
  // cudaFree without one. It may throw; no block has moved then.
  void set_before_release(std::function<void()> f) {
    std::lock_guard lock(mutex_);
    before_release_ = std::move(f);
  }

  // Gives every cached block back to the upstream; returns the bytes released.
  std::size_t release_cached() {
    std::lock_guard lock(mutex_);
    return release_cached_locked(std::numeric_limits<std::size_t>::max());
  }

  MemoryStats stats() const {
    std::lock_guard lock(mutex_);
    return stats_;
  }
  // Peaks restart from the current values (call at the start of each step for a per-step peak).
  void reset_peak() {
    std::lock_guard lock(mutex_);
    stats_.peak_allocated_bytes = stats_.allocated_bytes;
    stats_.peak_reserved_bytes = stats_.reserved_bytes;
  }
  std::size_t cap_bytes() const {
    std::lock_guard lock(mutex_);
    return stats_.cap_bytes;
  }

  // Bytes in use per tag, largest first (at most n tags): what an out-of-memory report lists.
  std::vector<std::pair<std::string, std::size_t>> largest_live(std::size_t n) const {
    std::lock_guard lock(mutex_);
    return largest_live_locked(n);
  }

  Upstream& upstream() { return upstream_; }
  const Upstream& upstream() const { return upstream_; }

 private:
  struct Live {
    std::size_t size;       // block bytes (size class, or the reused cached block's size)
    std::size_t requested;  // what the caller asked for
    std::string tag;
  };

  std::size_t release_cached_locked(std::size_t at_least) {
    if (!cached_.empty() && at_least > 0 && before_release_) before_release_();
    std::size_t released = 0;
    bool any = false;
    while (!cached_.empty() && released < at_least) {
      auto last = std::prev(cached_.end());  // largest first: the fewest upstream calls for the room needed
      upstream_.deallocate(last->second, last->first);
      released += last->first;
      stats_.cached_bytes -= last->first;
      stats_.reserved_bytes -= last->first;
      ++stats_.upstream_frees;
      cached_.erase(last);
      any = true;
    }
    if (any) ++stats_.cache_releases;
    return released;
  }

  std::vector<std::pair<std::string, std::size_t>> largest_live_locked(std::size_t n) const {
    std::unordered_map<std::string, std::size_t> by_tag;
    for (const auto& [p, b] : live_) by_tag[b.tag] += b.size;
    std::vector<std::pair<std::string, std::size_t>> out(by_tag.begin(), by_tag.end());
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
      return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    if (out.size() > n) out.resize(n);
    return out;
  }

  [[noreturn]] void fail_locked(DeviceMemoryError::Reason reason, std::string_view tag, std::size_t bytes,
                                const std::string& why) const {
    auto sized = [](std::size_t b) { return format_bytes(b) + " (" + std::to_string(b) + " bytes)"; };
    std::string m = "device memory: allocating '" + std::string(tag) + "' of " + sized(bytes) + " " + why +
                    ": in use " + sized(stats_.allocated_bytes) + " in " + std::to_string(stats_.live_allocations) +
                    " blocks, cached " + format_bytes(stats_.cached_bytes) + ", cap " +
                    (stats_.cap_bytes ? sized(stats_.cap_bytes) : std::string("none")) + ", peak " +
                    format_bytes(stats_.peak_allocated_bytes);
    const auto top = largest_live_locked(3);
    if (!top.empty()) {
      m += "; largest in use:";
      for (std::size_t i = 0; i < top.size(); ++i)
        m += (i ? ", '" : " '") + top[i].first + "' " + format_bytes(top[i].second);
    }
    m += reason == DeviceMemoryError::Reason::cap
             ? ". Raise the cap (--max-memory-gb), or hold less per micro-batch: fewer frames (--frames), the saved "
               "layer inputs on the host (--offload-checkpoints, with gradient checkpointing), the optimizer state on "
               "the host (--host-optimizer); --batch changes it only with --float32-batches (else each clip is its "
               "own micro-batch)"
             : ". Lower the cap (--max-memory-gb) to what the card holds";
    throw DeviceMemoryError(std::move(m), reason, std::string(tag), bytes, stats_.allocated_bytes, stats_.cached_bytes,
                            stats_.cap_bytes, stats_.peak_allocated_bytes);
  }

  void give_back_noexcept(void* p, std::size_t size) noexcept {
    try {
      upstream_.deallocate(p, size);
    } catch (...) {  // a destructor must not throw; the context is already broken then
    }
  }

  Upstream upstream_;
  mutable std::mutex mutex_;
  std::multimap<std::size_t, void*> cached_;  // block size -> block
  std::unordered_map<void*, Live> live_;
  MemoryStats stats_{};
  std::function<void()> before_release_;  // set_before_release
};

}  // namespace vidlora
