#pragma once
// The recipe's rules for choosing LoRA hyper-parameters from the data set and the GPU
// (docs/lora.md, "Rank guide"). All constexpr: a bad argument in a constant expression is a
// compile error, at run time a vidlora::Error. The presets (presets/gpu_presets.hpp) take their
// lora_r, lora_alpha and lora_dropout from these definitions.

#include <vidlora/core/error.hpp>

namespace vidlora::lora {

// Data-set sizes at which the recipe's rank grows on the larger cards.
inline constexpr long kRankDataThreshold24To40Gb = 5000;    // 24 < VRAM ≤ 40 GB: 16 below, 32 from here
inline constexpr long kRankDataThresholdAbove40Gb = 10000;  // VRAM > 40 GB: 32 below, 64 from here

// The recipe's rank:
//   VRAM ≤ 16 GB → 8;  ≤ 24 GB → 16;
//   ≤ 40 GB → 16 below 5,000 samples, else 32;
//   > 40 GB → 32 below 10,000 samples, else 64.
constexpr int select_lora_rank(long dataset_size, int gpu_vram_gb) {
  if (dataset_size <= 0) fail("select_lora_rank: dataset_size must be positive, got {}", dataset_size);
  if (gpu_vram_gb <= 0) fail("select_lora_rank: gpu_vram_gb must be positive, got {}", gpu_vram_gb);
  if (gpu_vram_gb <= 16) return 8;
  if (gpu_vram_gb <= 24) return 16;
  if (gpu_vram_gb <= 40) return dataset_size < kRankDataThreshold24To40Gb ? 16 : 32;
  return dataset_size < kRankDataThresholdAbove40Gb ? 32 : 64;
}

// The largest rank select_lora_rank gives on this card (a large enough data set): ≤16 GB → 8, ≤24 → 16,
// ≤40 → 32, more → 64. The T4 / L4 / A100 / H100 presets' lora_r.
constexpr int max_rank_for_vram(int gpu_vram_gb) {
  if (gpu_vram_gb <= 0) fail("max_rank_for_vram: gpu_vram_gb must be positive, got {}", gpu_vram_gb);
  return select_lora_rank(kRankDataThresholdAbove40Gb, gpu_vram_gb);
}

// The alpha = 2·r rule.
constexpr int default_alpha(int rank) {
  if (rank <= 0) fail("default_alpha: rank must be positive, got {}", rank);
  return 2 * rank;
}

// The recipe's three LoRA dropout levels, by data-set size.
inline constexpr double kDropoutSmallDataset = 0.1;    // < 5,000 samples
inline constexpr double kDropoutMediumDataset = 0.05;  // 5,000 to 20,000 samples
inline constexpr double kDropoutLargeDataset = 0.01;   // > 20,000 samples

// LoRA dropout by data-set size: <5k → 0.1, 5k to 20k → 0.05, >20k → 0.01.
constexpr double dropout_for_dataset_size(long dataset_size) {
  if (dataset_size <= 0) fail("dropout_for_dataset_size: dataset_size must be positive, got {}", dataset_size);
  if (dataset_size < 5000) return kDropoutSmallDataset;
  if (dataset_size <= 20000) return kDropoutMediumDataset;
  return kDropoutLargeDataset;
}

}  // namespace vidlora::lora

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using lora::default_alpha;
using lora::dropout_for_dataset_size;
using lora::max_rank_for_vram;
using lora::select_lora_rank;
}  // namespace vidlora
