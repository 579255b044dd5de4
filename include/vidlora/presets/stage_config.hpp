#pragma once
// The two training stages of the recipe.

#include <string_view>

namespace vidlora::presets {

struct StageConfig {
  std::string_view name;
  bool train_projector = true;
  bool train_lora = false;  // false: decoder frozen, no LoRA (stage 1)
  int num_epochs = 1;
  double learning_rate = 2e-4;
  double warmup_ratio = 0.1;
};

// Stage 1 aligns the projector with the frozen decoder: the recipe's own values, the same for every preset.
inline constexpr StageConfig kRecipeStage1{.name = "stage1-projector",
                                           .train_projector = true,
                                           .train_lora = false,
                                           .num_epochs = 1,
                                           .learning_rate = 2e-4,
                                           .warmup_ratio = 0.1};

// Stage 2 adds LoRA and keeps training the projector for the recipe's 4 epochs, at the preset's learning rate
// and warmup ratio (each preset: `stage2 = recipe_stage2(learning_rate, warmup_ratio)`).
constexpr StageConfig recipe_stage2(double learning_rate, double warmup_ratio) {
  return {.name = "stage2-projector+lora",
          .train_projector = true,
          .train_lora = true,
          .num_epochs = 4,
          .learning_rate = learning_rate,
          .warmup_ratio = warmup_ratio};
}

struct RecipeStages {
  static constexpr StageConfig stage1 = kRecipeStage1;
};

}  // namespace vidlora::presets
