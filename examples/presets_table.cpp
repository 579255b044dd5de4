// Prints the build's active preset (-DVIDLORA_PRESET=...) and the memory estimate of every preset on the
// 7B / 4B / 8B / 1.7B models as a Markdown table (the table in docs/presets.md comes from this program).
//
//   presets_table --json   the stage-2 step of every GPU preset on LLaVA-NeXT-Video-7B as JSON: what
//                          benchmarks/bench_cuda_preset_step.cu runs and benchmarks/hf_preset_step.py runs in
//                          transformers + PEFT + bitsandbytes, so both take their settings from the preset types
#include <vidlora/presets.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <cstring>
#include <string>
#include <string_view>

namespace {
using namespace vidlora::presets;

// Not presets: the A100 and H100 steps with gradient checkpointing, the configuration the transformers baseline can
// run on those cards (--json's "fallbacks"; bench_cuda_preset_step's rows of the same names).
struct A100Ckpt : A100 {
  static constexpr std::string_view name = "A100_checkpointing";
  static constexpr bool gradient_checkpointing = true;
};
struct H100Ckpt : H100 {
  static constexpr std::string_view name = "H100_checkpointing";
  static constexpr bool gradient_checkpointing = true;
};

template <class P>
void print_preset() {
  fmt::print("active preset: {} (vram {} GB, cuda_arch {})\n", P::name, P::vram_gb, P::cuda_arch);
  fmt::print("  load_in_4bit {}  gradient_checkpointing {}  fp16 {}  bf16 {}\n", P::load_in_4bit,
             P::gradient_checkpointing, P::fp16, P::bf16);
  fmt::print("  lora_r {}  lora_alpha {}  lora_dropout {}  target_modules {}\n", P::lora_r, P::lora_alpha,
             P::lora_dropout, P::target_set::modules);
  fmt::print("  batch_size {} x gradient_accumulation_steps {}  num_frames {}\n", P::batch_size,
             P::gradient_accumulation_steps, P::num_frames);
  fmt::print("  learning_rate {}  lr_scheduler {}  warmup_ratio {}  label_smoothing {}\n", P::learning_rate,
             P::lr_policy::name, P::warmup_ratio, P::label_smoothing);
  fmt::print("  weight_decay {}  max_grad_norm {}  patience {}\n", P::weight_decay, P::max_grad_norm, P::patience);
  for (const StageConfig& s : {stage1_of<P>(), stage2_of<P>()})
    fmt::print("  {}: epochs {} lr {} warmup_ratio {} projector {} lora {}\n", s.name, s.num_epochs, s.learning_rate,
               s.warmup_ratio, s.train_projector, s.train_lora);
  const auto e = estimate_memory<P>(P::default_model);
  fmt::print("  default model {}: {:.2f} GiB of {:.2f} GiB usable -> {}\n\n", P::default_model.name, e.total() / kGiB,
             e.budget / kGiB, e.fits() ? "fits" : "DOES NOT FIT");
}
// One JSON object per GPU preset: the values of its stage-2 step.
template <class P>
std::string step_json() {
  constexpr ModelShape m = models::LlavaNextVideo7B;
  std::string modules;
  for (std::string_view t : P::target_set::modules) modules += fmt::format("{}\"{}\"", modules.empty() ? "" : ", ", t);
  return fmt::format(
      "{{\"name\": \"{}\", \"batch_size\": {}, \"gradient_accumulation_steps\": {}, \"num_frames\": {}, "
      "\"seq_len\": {}, \"lora_r\": {}, \"lora_alpha\": {}, \"lora_dropout\": {}, \"target_modules\": [{}], "
      "\"load_in_4bit\": {}, \"gradient_checkpointing\": {}, \"fp16\": {}, \"bf16\": {}, \"label_smoothing\": {}, "
      "\"memory_cap_gib\": {}, \"peak_tflops_16bit\": {}}}",
      P::name, P::batch_size, P::gradient_accumulation_steps, P::num_frames, m.tokens_per_sample(P::num_frames),
      P::lora_r, P::lora_alpha, P::lora_dropout, modules, P::load_in_4bit, P::gradient_checkpointing, P::fp16, P::bf16,
      P::label_smoothing, static_cast<double>(default_memory_cap_bytes<P>()) / kGiB, P::peak_tflops_16bit);
}

int print_json() {
  constexpr ModelShape m = models::LlavaNextVideo7B;
  fmt::print(
      "{{\"model\": {{\"name\": \"{}\", \"hidden\": {}, \"intermediate\": {}, \"layers\": {}, \"heads\": {}, "
      "\"kv_heads\": {}, \"head_dim\": {}, \"vocab\": {}, \"tokens_per_frame\": {}, \"text_tokens\": {}}},\n "
      "\"presets\": [",
      m.name, m.hidden, m.intermediate, m.layers, m.heads, m.kv_heads, m.head_dim, m.vocab, m.tokens_per_frame,
      m.text_tokens);
  bool first = true;
  for_each_preset([&](auto p) {
    using P = decltype(p);
    if constexpr (P::cuda_arch > 0) {
      fmt::print("{}\n  {}", first ? "" : ",", step_json<P>());
      first = false;
    }
  });
  // the steps with gradient checkpointing that the A100 and H100 presets run without (hf_preset_step.py runs them
  // after the presets: the comparison where transformers + PEFT does not fit without checkpointing)
  fmt::print("],\n \"fallbacks\": [\n  {},\n  {}]}}\n", step_json<A100Ckpt>(), step_json<H100Ckpt>());
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--json") == 0) return print_json();
  if (argc > 1) {
    fmt::print(stderr, "usage: presets_table [--json]\n");
    return 2;
  }
  print_preset<vidlora::ActivePreset>();
  constexpr std::array<ModelShape, 4> shapes{models::LlavaNextVideo7B, models::Qwen3_4B, models::Qwen3_8B,
                                             models::Qwen3_1_7B};
  fmt::print(
      "| model | preset | frozen GiB | trainable GiB | activations GiB | total GiB | usable GiB | fits | activations "
      "GiB, fp32 step | fits, fp32 step | activations GiB, device step today | fits, device step today |\n");
  fmt::print("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  auto row = [](const ModelShape& m, std::string_view name, const MemoryEstimate& e) {
    const double fp32_total = e.total() - e.activations + e.activations_fp32;
    fmt::print("| {} | {} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {} | {:.2f} | {} | {:.2f} | {} |\n", m.name,
               name, e.frozen_weights / kGiB, e.trainable_state / kGiB, e.activations / kGiB, e.total() / kGiB,
               e.budget / kGiB, e.fits() ? "yes" : "**no**", e.activations_fp32 / kGiB,
               fp32_total <= e.budget ? "yes" : "**no**", e.activations_device / kGiB,
               e.total_device() <= e.budget ? "yes" : "**no**");
  };
  for (const ModelShape& m : shapes) {
    for_each_preset([&](auto p) {
      using P = decltype(p);
      if constexpr (P::cuda_arch > 0) row(m, P::name, estimate_memory<P>(m));
    });
  }
  // The presets without checkpointing, with it (all but the last block keep only their input).
  row(models::LlavaNextVideo7B, "A100 + gradient_checkpointing", estimate_memory<A100Ckpt>(models::LlavaNextVideo7B));
  row(models::LlavaNextVideo7B, "H100 + gradient_checkpointing", estimate_memory<H100Ckpt>(models::LlavaNextVideo7B));
  return 0;
}
