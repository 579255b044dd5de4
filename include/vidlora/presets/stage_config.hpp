#pragma once
// The two training stages of the recipe.

#include <string_view>

namespace vidlora::presets {

struct StageConfig {
  std::string_view name;
  bool train_projector = true;
  bool train_lora = false;   // false: decoder frozen, no LoRA (stage 1)
  int num_epochs = 1;
  double learning_rate = 2e-4;
  double warmup_ratio = 0.1;
};

// Stage 1 aligns the projector with the frozen decoder; stage 2 adds LoRA and keeps training the projector.
struct RecipeStages {
  static constexpr StageConfig stage1{.name = "stage1-projector", .train_projector = true, .train_lora = false,
                                      .num_epochs = 1, .learning_rate = 2e-4, .warmup_ratio = 0.1};
  static constexpr StageConfig stage2{.name = "stage2-projector+lora", .train_projector = true, .train_lora = true,
                                      .num_epochs = 4, .learning_rate = 1e-4, .warmup_ratio = 0.03};
};

}  // namespace vidlora::presets
