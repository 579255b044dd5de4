#pragma once
// The device-memory cap of a run: the preset's vram_gb minus a fixed reserve, unless the user sets
// another (DeviceMemoryOptions::max_memory_gb, train_captioner's --max-memory-gb). The cap bounds what the
// caching allocator (core/caching_allocator.hpp) holds, so a run on a bigger card fails where the preset's
// card would, with an error naming the tensor.
//
// The reserve, 2 GiB, covers what the allocator does not see: the cards report less than their nominal
// size (a "16 GB" T4 about 15.0 GiB, a "24 GB" L4 about 22.5 GiB, an 80 GB H100 about 79.6 GiB), and the
// CUDA context with its kernels and cuBLASLt's handle take about 0.3-0.6 GiB outside any allocator.
// Sizes in "GB" here are GiB (2^30 bytes), as vram_gb is in presets/memory_estimate.hpp.

#include <fmt/format.h>

#include <cmath>
#include <cstddef>
#include <optional>
#include <string>

#include <vidlora/core/error.hpp>
#include <vidlora/core/memory_stats.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/presets/memory_estimate.hpp>

namespace vidlora::presets {

inline constexpr double kDeviceMemoryReserveGiB = 2.0;

// The run's memory setting (a TrainerConfig / train_captioner field).
struct DeviceMemoryOptions {
  double max_memory_gb = 0.0;  // the cap in GiB; 0: the preset's vram_gb - kDeviceMemoryReserveGiB
};

// vram_gb - reserve, in bytes.
constexpr std::size_t default_memory_cap_bytes(int vram_gb) {
  const double gib = static_cast<double>(vram_gb) - kDeviceMemoryReserveGiB;
  return gib > 0 ? static_cast<std::size_t>(gib * kGiB) : 0;
}

template <Preset P>
constexpr std::size_t default_memory_cap_bytes() {
  static_assert(P::vram_gb > kDeviceMemoryReserveGiB, "vidlora preset: vram_gb must exceed the 2 GiB device reserve");
  return default_memory_cap_bytes(P::vram_gb);
}

// The cap a run uses: options.max_memory_gb when set, else the default for vram_gb. A negative, non-finite
// or sub-MiB value is an error naming the option.
inline std::size_t memory_cap_bytes(int vram_gb, const DeviceMemoryOptions& options) {
  const double gb = options.max_memory_gb;
  require(std::isfinite(gb) && gb >= 0.0, "max_memory_gb must be a finite number of GiB >= 0 (got {})", gb);
  if (gb == 0.0) {
    require(vram_gb > kDeviceMemoryReserveGiB,
            "max_memory_gb: the default cap is vram_gb {} - {} GiB reserve, which is "
            "not positive; set max_memory_gb",
            vram_gb, kDeviceMemoryReserveGiB);
    return default_memory_cap_bytes(vram_gb);
  }
  require(gb * kGiB >= 1024.0 * 1024.0, "max_memory_gb {} is below 1 MiB", gb);
  require(gb <= 1024.0 * 1024.0, "max_memory_gb {} is more than any device holds", gb);
  return static_cast<std::size_t>(gb * kGiB);
}

template <Preset P>
std::size_t memory_cap_bytes(const DeviceMemoryOptions& options = {}) {
  return memory_cap_bytes(P::vram_gb, options);
}

// The cap is what the allocator may hold; the card may hold less. Given the device's free and total memory when
// the run starts (cudaMemGetInfo, the CUDA context already made), a cap above the free memory is worth a warning: a step
// that needs more than the free memory stops with the GPU's out-of-memory error (the allocator names the tensor and
// says the device ran out below the cap) instead of the cap's. The L4 preset's default is such a cap on an L4 itself
// (22 GiB of a card that reports about 22.5 GiB, less the context), and any preset's is on a smaller card.
// Returns the warning, or nothing when the cap fits.
inline std::optional<std::string> cap_above_free_memory(std::size_t cap_bytes, std::size_t free_bytes,
                                                        std::size_t total_bytes) {
  if (cap_bytes <= free_bytes) return std::nullopt;
  return fmt::format(
      "the device memory cap, {}, is above this GPU's free memory, {} of {}: a step that needs more than the free "
      "memory stops with the GPU's out-of-memory error before it reaches the cap (--max-memory-gb sets a lower cap)",
      format_bytes(cap_bytes), format_bytes(free_bytes), format_bytes(total_bytes));
}

// What the constexpr estimate expects the allocator to hold for model m: its total without the runtime
// overhead it adds for the CUDA context (that part is outside the allocator, inside the reserve).
template <Preset P>
constexpr double estimated_allocator_bytes(const ModelShape& m) {
  const MemoryEstimate e = estimate_memory<P>(m);
  return e.total() - e.overhead;
}

}  // namespace vidlora::presets
