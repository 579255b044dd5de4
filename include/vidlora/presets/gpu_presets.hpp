#pragma once
// Per-GPU training configurations as types holding the recipe's values (fields named as the recipe names them).
// The policies are types from their modules: `lr_policy` is a schedule::LrPolicy (the Trainer runs
// Scheduler<P::lr_policy>), `target_set` a lora::TargetModuleSet; lora_r, lora_alpha and lora_dropout come
// from the rules in lora/rules.hpp, the stages from stage_config.hpp.

#include <concepts>
#include <string_view>

#include <vidlora/core/backend.hpp>
#include <vidlora/lora/rules.hpp>
#include <vidlora/lora/target_modules.hpp>
#include <vidlora/presets/model_shape.hpp>
#include <vidlora/presets/stage_config.hpp>
#include <vidlora/schedule/lr_policy.hpp>
#include <vidlora/schedule/policies.hpp>

namespace vidlora::presets {

// Values every preset shares.
struct PresetCommon : RecipeStages {
  static constexpr double weight_decay = 0.01;
  static constexpr double max_grad_norm = 1.0;
  static constexpr int patience = 5;            // early-stopping patience, in evaluations
  static constexpr int tokens_per_frame = 144;  // CLIP ViT-L/14-336: 576 patches, 2x2-pooled to 144
  // The GPU class's dense 16-bit tensor-core peak in TFLOP/s (NVIDIA's datasheets, without sparsity), the
  // denominator of train::lora_mfu; 0: unknown (no MFU is reported).
  static constexpr double peak_tflops_16bit = 0.0;
};

struct T4 : PresetCommon {
  static constexpr std::string_view name = "T4";
  static constexpr double peak_tflops_16bit = 65.0;  // FP16 tensor (no bf16 on sm_75)
  using backend_policy = backend::Cuda;
  static constexpr int cuda_arch = 75;
  static constexpr int vram_gb = 16;
  static constexpr bool load_in_4bit = true;
  static constexpr bool gradient_checkpointing = true;
  static constexpr int lora_r = lora::max_rank_for_vram(vram_gb);
  static constexpr int lora_alpha = lora::default_alpha(lora_r);
  static constexpr double lora_dropout = lora::kDropoutSmallDataset;
  using target_set = lora::Basic;
  static constexpr int batch_size = 1;
  static constexpr int gradient_accumulation_steps = 16;
  static constexpr int num_frames = 4;
  static constexpr double learning_rate = 1e-4;
  using lr_policy = schedule::Cosine;
  static constexpr double warmup_ratio = 0.05;
  static constexpr double label_smoothing = 0.0;
  static constexpr bool fp16 = true;
  static constexpr bool bf16 = false;
  static constexpr ModelShape default_model = models::LlavaNextVideo7B;
};

struct L4 : PresetCommon {
  static constexpr std::string_view name = "L4";
  static constexpr double peak_tflops_16bit = 121.0;  // BF16 tensor, dense (242 with sparsity)
  using backend_policy = backend::Cuda;
  static constexpr int cuda_arch = 89;
  static constexpr int vram_gb = 24;
  static constexpr bool load_in_4bit = true;
  static constexpr bool gradient_checkpointing = true;
  static constexpr int lora_r = lora::max_rank_for_vram(vram_gb);
  static constexpr int lora_alpha = lora::default_alpha(lora_r);
  static constexpr double lora_dropout = lora::kDropoutMediumDataset;
  using target_set = lora::AttentionGateUp;
  static constexpr int batch_size = 2;
  static constexpr int gradient_accumulation_steps = 8;
  static constexpr int num_frames = 8;
  static constexpr double learning_rate = 1e-4;
  using lr_policy = schedule::Cosine;
  static constexpr double warmup_ratio = 0.03;
  static constexpr double label_smoothing = 0.1;
  static constexpr bool fp16 = true;
  static constexpr bool bf16 = false;
  static constexpr ModelShape default_model = models::LlavaNextVideo7B;
};

struct A100 : PresetCommon {
  static constexpr std::string_view name = "A100";
  static constexpr double peak_tflops_16bit = 312.0;  // BF16 tensor, dense
  using backend_policy = backend::Cuda;
  static constexpr int cuda_arch = 80;
  static constexpr int vram_gb = 40;
  static constexpr bool load_in_4bit = true;
  static constexpr bool gradient_checkpointing = false;
  static constexpr int lora_r = lora::max_rank_for_vram(vram_gb);
  static constexpr int lora_alpha = lora::default_alpha(lora_r);
  static constexpr double lora_dropout = lora::kDropoutMediumDataset;
  using target_set = lora::Extended;
  static constexpr int batch_size = 4;
  static constexpr int gradient_accumulation_steps = 4;
  static constexpr int num_frames = 8;
  static constexpr double learning_rate = 2e-4;
  using lr_policy = schedule::Cosine;
  static constexpr double warmup_ratio = 0.03;
  static constexpr double label_smoothing = 0.1;
  static constexpr bool fp16 = false;
  static constexpr bool bf16 = true;
  static constexpr ModelShape default_model = models::LlavaNextVideo7B;
};

struct H100 : PresetCommon {
  static constexpr std::string_view name = "H100";
  static constexpr double peak_tflops_16bit = 989.0;  // BF16 tensor, dense, SXM (PCIe: 756); the H200 has the same
  using backend_policy = backend::Cuda;
  static constexpr int cuda_arch = 90;
  static constexpr int vram_gb = 80;
  static constexpr bool load_in_4bit = true;
  static constexpr bool gradient_checkpointing = false;
  static constexpr int lora_r = lora::max_rank_for_vram(vram_gb);
  static constexpr int lora_alpha = lora::default_alpha(lora_r);
  static constexpr double lora_dropout = lora::kDropoutMediumDataset;
  using target_set = lora::Extended;
  static constexpr int batch_size = 8;
  static constexpr int gradient_accumulation_steps = 2;
  static constexpr int num_frames = 16;
  static constexpr double learning_rate = 2e-4;
  using lr_policy = schedule::CosineRestarts;
  static constexpr double warmup_ratio = 0.03;
  static constexpr double label_smoothing = 0.1;
  static constexpr bool fp16 = false;
  static constexpr bool bf16 = true;
  static constexpr ModelShape default_model = models::LlavaNextVideo7B;  // batch 8 x 16 frames without checkpointing:
      // 61 GiB of bf16 activations, since the LoRA slots keep only their keep bits (docs/presets.md)
};

// Small models on a 2-core, 24 GiB machine (the demo captioner). "vram_gb" is the host-memory budget here.
struct Cpu : PresetCommon {
  static constexpr std::string_view name = "Cpu";
  using backend_policy = backend::Cpu;
  static constexpr int cuda_arch = 0;  // no GPU
  static constexpr int vram_gb = 8;
  static constexpr bool load_in_4bit = false;
  static constexpr bool gradient_checkpointing = false;
  static constexpr int lora_r = lora::max_rank_for_vram(vram_gb);
  static constexpr int lora_alpha = lora::default_alpha(lora_r);
  static constexpr double lora_dropout = lora::kDropoutMediumDataset;
  using target_set = lora::Extended;
  static constexpr int batch_size = 4;
  static constexpr int gradient_accumulation_steps = 1;
  static constexpr int num_frames = 8;
  static constexpr double learning_rate = 1e-3;
  using lr_policy = schedule::Cosine;
  static constexpr double warmup_ratio = 0.03;
  static constexpr double label_smoothing = 0.1;
  static constexpr bool fp16 = false;
  static constexpr bool bf16 = false;
  static constexpr ModelShape default_model = models::Demo;
};

// What a preset type must hold. A type that misses a field fails this concept, naming the preset.
template <class P>
concept Preset = requires {
  { P::name } -> std::convertible_to<std::string_view>;
  requires backend::Backend<typename P::backend_policy>;
  { P::vram_gb } -> std::convertible_to<int>;
  { P::load_in_4bit } -> std::convertible_to<bool>;
  { P::gradient_checkpointing } -> std::convertible_to<bool>;
  { P::lora_r } -> std::convertible_to<int>;
  { P::lora_alpha } -> std::convertible_to<int>;
  { P::lora_dropout } -> std::convertible_to<double>;
  requires lora::TargetModuleSet<typename P::target_set>;
  { P::batch_size } -> std::convertible_to<int>;
  { P::gradient_accumulation_steps } -> std::convertible_to<int>;
  { P::num_frames } -> std::convertible_to<int>;
  { P::learning_rate } -> std::convertible_to<double>;
  requires schedule::LrPolicy<typename P::lr_policy>;
  { P::warmup_ratio } -> std::convertible_to<double>;
  { P::label_smoothing } -> std::convertible_to<double>;
  { P::fp16 } -> std::convertible_to<bool>;
  { P::bf16 } -> std::convertible_to<bool>;
  { P::weight_decay } -> std::convertible_to<double>;
  { P::max_grad_norm } -> std::convertible_to<double>;
  { P::patience } -> std::convertible_to<int>;
  { P::stage1 } -> std::convertible_to<StageConfig>;
  { P::default_model } -> std::convertible_to<ModelShape>;
  { P::peak_tflops_16bit } -> std::convertible_to<double>;
};

// Stage 1 of preset P: the recipe's projector-only stage (P::stage1).
template <Preset P>
constexpr StageConfig stage1_of() {
  return P::stage1;
}

// Stage 2 of preset P: projector + LoRA for the recipe's 4 epochs at the preset's learning_rate and
// warmup_ratio (computed here, so a preset derived from another that changes them gets its own stage 2).
template <Preset P>
constexpr StageConfig stage2_of() {
  return recipe_stage2(P::learning_rate, P::warmup_ratio);
}

// The preset's mixed precision as the recipe's flags name it: "fp16", "bf16", or "fp32" (neither flag).
template <Preset P>
constexpr std::string_view precision_of() {
  return P::bf16 ? "bf16" : (P::fp16 ? "fp16" : "fp32");
}

// What the device step runs a preset in: its own precision (precision_of<P>) where its GPU has the tensor cores for it
// — "bf16" (A100, H100: the frozen GEMMs on bf16 operands, the saved activations in bf16 between forward and backward,
// the LoRA and LM-head GEMMs on TF32, the rest fp32), "fp16" (T4, L4: the frozen GEMMs on fp16 operands under dynamic
// loss scaling, the LoRA and LM-head GEMMs on TF32 where the GPU has it, the rest fp32) — else fp16 for a bf16 preset
// below sm_80; "fp32" for the Cpu preset.
template <Preset P>
constexpr std::string_view device_precision_of() {
  if (P::bf16 && P::cuda_arch < 80) return "fp16";  // bf16 tensor cores: sm_80+
  return precision_of<P>();
}

// What a device step's precision name means, for the programs' messages.
constexpr std::string_view device_precision_meaning(std::string_view precision) {
  return precision == "bf16"
             ? "frozen GEMMs on bf16 tensor cores, saved activations in bf16, LoRA and LM-head GEMMs on TF32, the rest "
               "fp32"
         : precision == "fp16" ? "frozen GEMMs on fp16 tensor cores with loss scaling, LoRA and LM-head GEMMs on TF32 "
                                 "where the GPU has it, the rest fp32"
         : precision == "tf32" ? "GEMMs on TF32 tensor cores, the rest fp32"
                               : "every value and product in fp32";
}

// The backend preset P trains on (T4 / L4 / A100 / H100: Cuda; Cpu: Cpu).
template <Preset P>
using backend_of = typename P::backend_policy;

namespace detail {
template <class P>
concept HasLrPolicy = requires {
  typename P::lr_policy;
}
&&schedule::LrPolicy<typename P::lr_policy>;
template <class P>
concept HasTargetSet = requires {
  typename P::target_set;
}
&&lora::TargetModuleSet<typename P::target_set>;
template <class P>
concept HasBackend = requires {
  typename P::backend_policy;
}
&&backend::Backend<typename P::backend_policy>;
}  // namespace detail

// Checks a preset type field by field with messages a user reads (the Preset concept alone only says "not
// satisfied"); TrainerConfig::from_preset<P>() calls it. Always returns true when it compiles.
template <class P>
consteval bool check_preset() {
  static_assert(detail::HasLrPolicy<P>,
                "vidlora preset: P::lr_policy must name a learning-rate policy type (using lr_policy = "
                "schedule::Cosine; or Constant, Linear, CosineRestarts, WarmRestarts), not a string");
  static_assert(detail::HasTargetSet<P>,
                "vidlora preset: P::target_set must name a target-module set type (using target_set = lora::Basic; "
                "or lora::AttentionGateUp, lora::Extended)");
  static_assert(detail::HasBackend<P>,
                "vidlora preset: P::backend_policy must name a backend policy type (using backend_policy = "
                "backend::Cuda; for a GPU preset, backend::Cpu for the CPU one)");
  static_assert(Preset<P>, "vidlora preset: P misses a field of the Preset concept (presets/gpu_presets.hpp)");
  return true;
}

// Compile-time consistency of a preset's own values.
template <Preset P>
constexpr bool preset_is_consistent() {
  return P::lora_r > 0 && P::lora_alpha > 0 && P::batch_size > 0 && P::gradient_accumulation_steps > 0 &&
         P::num_frames > 0 && !(P::fp16 && P::bf16) && P::warmup_ratio >= 0.0 && P::warmup_ratio < 1.0 &&
         P::lora_dropout >= 0.0 && P::lora_dropout < 1.0 && P::label_smoothing >= 0.0 && P::label_smoothing < 1.0;
}

static_assert(Preset<T4> && Preset<L4> && Preset<A100> && Preset<H100> && Preset<Cpu>);
static_assert(preset_is_consistent<T4>() && preset_is_consistent<L4>() && preset_is_consistent<A100>() &&
              preset_is_consistent<H100>() && preset_is_consistent<Cpu>());
// Every GPU preset trains on its GPU; the CPU preset on the CPU.
static_assert(std::same_as<backend_of<T4>, backend::Cuda> && std::same_as<backend_of<L4>, backend::Cuda> &&
              std::same_as<backend_of<A100>, backend::Cuda> && std::same_as<backend_of<H100>, backend::Cuda> &&
              std::same_as<backend_of<Cpu>, backend::Cpu>);

}  // namespace vidlora::presets
