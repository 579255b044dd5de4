#pragma once
// The recipe's rules for choosing LoRA hyper-parameters from the data set and the GPU
// (docs/lora.md, "Rank guide"). All constexpr: a bad argument in a constant expression is a
// compile error, at run time a vidlora::Error.

#include <vidlora/core/error.hpp>

namespace vidlora::lora {

// Largest rank the GPU's memory allows: ≤16 GB → 8, ≤24 → 16, ≤40 → 32, more → 64
// (the T4 / L4 / A100 / H100 presets).
constexpr int max_rank_for_vram(int gpu_vram_gb) {
  if (gpu_vram_gb <= 0) fail("max_rank_for_vram: gpu_vram_gb must be positive, got {}", gpu_vram_gb);
  if (gpu_vram_gb <= 16) return 8;
  if (gpu_vram_gb <= 24) return 16;
  if (gpu_vram_gb <= 40) return 32;
  return 64;
}

// Largest rank the data set supports before over-fitting: <1k samples → 8, <5k → 16, <20k → 32, more → 64.
constexpr int max_rank_for_dataset(long dataset_size) {
  if (dataset_size <= 0) fail("max_rank_for_dataset: dataset_size must be positive, got {}", dataset_size);
  if (dataset_size < 1000) return 8;
  if (dataset_size < 5000) return 16;
  if (dataset_size < 20000) return 32;
  return 64;
}

// The recipe's rank: the smaller of the two caps.
constexpr int select_lora_rank(long dataset_size, int gpu_vram_gb) {
  if (dataset_size <= 0) fail("select_lora_rank: dataset_size must be positive, got {}", dataset_size);
  if (gpu_vram_gb <= 0) fail("select_lora_rank: gpu_vram_gb must be positive, got {}", gpu_vram_gb);
  const int by_vram = max_rank_for_vram(gpu_vram_gb), by_data = max_rank_for_dataset(dataset_size);
  return by_vram < by_data ? by_vram : by_data;
}

// The alpha = 2·r rule.
constexpr int default_alpha(int rank) {
  if (rank <= 0) fail("default_alpha: rank must be positive, got {}", rank);
  return 2 * rank;
}

// LoRA dropout by data-set size: <5k → 0.1, 5k to 20k → 0.05, >20k → 0.01.
constexpr double dropout_for_dataset_size(long dataset_size) {
  if (dataset_size <= 0) fail("dropout_for_dataset_size: dataset_size must be positive, got {}", dataset_size);
  if (dataset_size < 5000) return 0.1;
  if (dataset_size <= 20000) return 0.05;
  return 0.01;
}

}  // namespace vidlora::lora

namespace vidlora {
using lora::default_alpha;
using lora::dropout_for_dataset_size;
using lora::max_rank_for_dataset;
using lora::max_rank_for_vram;
using lora::select_lora_rank;
}  // namespace vidlora
