// expect: lr_policy must name a learning-rate policy type
// A preset names its scheduler as a type (using lr_policy = schedule::Cosine), never as a string to be mapped
// back to a type at run time; TrainerConfig::from_preset<P>() checks P with presets::check_preset<P>().
#include <string_view>

#include <vidlora/presets.hpp>

namespace p = vidlora::presets;

struct StringScheduler : p::PresetCommon {
  static constexpr std::string_view name = "StringScheduler";
  static constexpr int cuda_arch = 75;
  static constexpr int vram_gb = 16;
  static constexpr bool load_in_4bit = true;
  static constexpr bool gradient_checkpointing = true;
  static constexpr int lora_r = 8;
  static constexpr int lora_alpha = 16;
  static constexpr double lora_dropout = 0.1;
  using target_set = vidlora::lora::Basic;
  static constexpr int batch_size = 1;
  static constexpr int gradient_accumulation_steps = 16;
  static constexpr int num_frames = 4;
  static constexpr double learning_rate = 1e-4;
  static constexpr std::string_view lr_policy = "cosine";  // wrong: a string, not a policy type
  static constexpr double warmup_ratio = 0.05;
  static constexpr double label_smoothing = 0.0;
  static constexpr bool fp16 = true;
  static constexpr bool bf16 = false;
  static constexpr p::ModelShape default_model = p::models::LlavaNextVideo7B;
};

static_assert(p::check_preset<StringScheduler>());

int main() {}
