#pragma once
// DecoderStep<Backend, Decoder>: where the Trainer runs a micro-batch's decoder step — the forward over the
// collated embeddings, the streamed LM-head cross-entropy and the backward to the input embeddings, LoRA gradients
// added to the CPU decoder's grad_A / grad_B. The preset chooses it (presets::backend_of<P>):
//   DecoderStep<backend::Cpu, D>   model::Decoder::loss_and_backward on the CPU (the reference path);
//   DecoderStep<backend::Cuda, D>  train/cuda/decoder_step.cuh: the same step by model::cuda::DecoderModel on the
//                                  device; this header includes it when nvcc compiles the translation unit.
// The rest of a training step (projector, gradient sums, clipping, AdamW, checkpoints, adapters) stays on the CPU,
// the same for both. The evaluation after each epoch runs where the step runs: eval_loss (the forward without
// dropout and the LM-head loss of one collated clip) and generate (model::generate's greedy or beam search, with the
// KV cache on the step's backend). Contract with the Trainer: the CPU decoder holds the master LoRA values and the dropout
// counters; a step is built on the decoder and the run's TrainableTensors, whose values_version() moves whenever
// the values may have changed (an optimizer step, a checkpoint, best-parameter or adapter load), so a step that
// keeps a copy of them refreshes it before its next call.
//
// A training step brackets its micro-batches with begin_step(per_clip) and finish_step(StepHandOver): a step that
// keeps the LoRA gradients where it computes them (the device's) sums them there — each clip's in float64 when
// per_clip (TrainerConfig::batch_invariant: it then says sums_on_device for those tensors, and finish_step adds its
// sums into the ClipGradientSum), else in float32 — and hands them to the host once, at finish_step; with a
// comm::DeviceSum (comm::Nccl) it first sums them over the ranks on the device. Every rank calls finish_step in every
// step, also one without clips or whose step failed, since the device sums are collectives. Outside such a bracket
// each call adds its LoRA gradients to the host's, as the CPU step does. When the run's optimizer steps on the device
// (train/device_optimizer.hpp), the step says where each LoRA tensor lives there (device_parameter), finish_step leaves
// the step's gradients in those device buffers instead (StepHandOver::keep_on_device), and values_current(version)
// tells it that its device copy already holds the values of that values_version() (the optimizer changed them there).

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <vidlora/comm/device_sum.hpp>
#include <vidlora/core/backend.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/memory_stats.hpp>
#include <vidlora/loss/cross_entropy_options.hpp>
#include <vidlora/loss/lm_head_cross_entropy.hpp>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/generation.hpp>
#include <vidlora/model/sequence_batch.hpp>
#include <vidlora/optim/device_parameter.hpp>
#include <vidlora/train/clip_gradient_sum.hpp>
#include <vidlora/train/trainable_tensors.hpp>

namespace vidlora::train {

// What a device step needs from the run: its memory cap, checkpoint placement and GEMM precision
// (TrainerConfig::device_memory, offload_checkpoints and precision; gradient checkpointing itself is the decoder's own
// setting, DecoderOptions).
struct DecoderStepSettings {
  // The operands of the blocks' frozen GEMMs (model::cuda::DecoderModel::set_base_operands).
  enum class BaseOperands : std::uint8_t { F32, BF16, F16 };
  std::size_t memory_cap_bytes = 0;  // 0: no cap
  bool offload_checkpoints = false;
  bool tf32 = false;        // TrainerConfig::precision "tf32", "bf16" or "fp16": the fp32 GEMMs on TF32 tensor cores
  bool pack_saved = false;  // precision "bf16": the saved activations in bf16 (DecoderStepOptions::pack_saved)
  BaseOperands base_operands = BaseOperands::F32;  // precision "bf16" / "fp16": the frozen GEMMs on 16-bit operands
};

// What a device decoder step runs for a run's precision (TrainerConfig::precision: "fp32"; "tf32": the fp32 GEMMs on
// TF32 tensor cores; "bf16": those, the frozen GEMMs on bf16 operands and the saved activations in bf16; "fp16": the
// frozen GEMMs on fp16 operands and the others on TF32) under a cap on its device memory (0: none): the Trainer's
// step, and the device generation of a program that only captions (caption's GPU build).
inline DecoderStepSettings decoder_step_settings(std::string_view precision, std::size_t memory_cap_bytes,
                                                 bool offload_checkpoints = false) {
  DecoderStepSettings s;
  s.memory_cap_bytes = memory_cap_bytes;
  s.offload_checkpoints = offload_checkpoints;
  s.tf32 = precision == "tf32" || precision == "bf16" || precision == "fp16";
  s.pack_saved = precision == "bf16";
  s.base_operands = precision == "bf16"   ? DecoderStepSettings::BaseOperands::BF16
                    : precision == "fp16" ? DecoderStepSettings::BaseOperands::F16
                                          : DecoderStepSettings::BaseOperands::F32;
  return s;
}

// How finish_step hands a training step's gradients over.
struct StepHandOver {
  ClipGradientSum* sums = nullptr;  // per_clip: the step's float64 sums, into which the device's are added
  // The host gradients (grad_A / grad_B storage) the step trains; the others are neither summed over the ranks nor
  // copied (stage 1's LoRA). Empty: all; with `sums`, the tensors it holds.
  std::function<bool(const float*)> trained;
  comm::DeviceSum across_ranks;  // set: the device sums the gradients over the ranks before it hands them over
  std::string what;              // for errors, e.g. "step 12: gradients"
  // The optimizer steps on the device: the trained gradients (the float64 sums rounded to float32) stay in the device
  // steps' gradient buffers (device_parameter's `grad`) and nothing is copied to the host. Not with `sums`.
  bool keep_on_device = false;
};

// An evaluation's loss over a collated batch: the per-token losses summed over the supervised tokens, and their count.
struct EvalLoss {
  double loss_sum = 0.0;
  long valid_tokens = 0;
};

namespace detail {
template <class>
inline constexpr bool kDecoderStepMissing = false;
}  // namespace detail

// The primary template is the wrong combination: a backend without a decoder step in this translation unit.
template <backend::Backend B, class Decoder>
class DecoderStep {
  static_assert(detail::kDecoderStepMissing<B>,
                "train::DecoderStep: no decoder step for this backend in this translation unit. backend::Cuda's "
                "(vidlora/train/cuda/decoder_step.cuh) needs a CUDA translation unit: compile this source with nvcc "
                "(CMake: set_source_files_properties("
                "<file> PROPERTIES LANGUAGE CUDA) and link vidlora::cuda), or build for the Cpu preset "
                "(-DVIDLORA_PRESET=Cpu) to train on the CPU");
};

// The CPU reference: Decoder::loss_and_backward, unchanged.
template <class Decoder>
class DecoderStep<backend::Cpu, Decoder> {
 public:
  using backend_type = backend::Cpu;
  DecoderStep(Decoder& decoder, const TrainableTensors&, const DecoderStepSettings& = {}) : decoder_(decoder) {}

  // embeds: [batch·seq_len, hidden]; labels: [batch·seq_len]. Returns the loss and d loss / d embeds; LoRA gradients
  // accumulate in the decoder's grad_A / grad_B.
  model::DecoderLossResultOf<float> loss_and_backward(const Matrix& embeds, const model::SequenceBatch& batch,
                                                      std::span<const int> labels,
                                                      const loss::CrossEntropyOptions& ce) {
    return decoder_.loss_and_backward(embeds, batch, labels, ce);  // the decoder's own values: nothing to refresh
  }
  // Host memory is not tracked: nothing to report.
  std::optional<MemoryStats> take_step_memory() { return std::nullopt; }
  // The gradients are the host's already: the ClipGradientSum takes them, nothing to hand over.
  void begin_step(bool /*per_clip*/) {}
  bool sums_on_device(const float* /*grad*/) const { return false; }
  void finish_step(const StepHandOver& /*hand_over*/) {}
  // No tensor lives on a device: the optimizer steps on the host.
  std::optional<optim::DeviceParameter> device_parameter(const float* /*grad*/) { return std::nullopt; }
  void values_current(std::uint64_t /*values_version*/) {}

  // The evaluation's loss: Decoder::forward without dropout, then the LM-head cross-entropy on next-token targets.
  EvalLoss eval_loss(const Matrix& embeds, const model::SequenceBatch& batch, std::span<const int> labels,
                     const loss::CrossEntropyOptions& ce) {
    const Matrix hidden = decoder_.forward(embeds, batch, false);
    const auto targets = model::next_token_targets(labels, batch, ce.ignore_index);
    const auto r = loss::lm_head_cross_entropy<float>(hidden, decoder_.head_weight(), targets, ce);
    return {r.loss_sum, r.valid_tokens};
  }
  // Generation after prompt embeddings [n, hidden] with the decoder's KV cache.
  model::GenerationResult generate(const Matrix& prompt_embeds, const model::GenerationOptions& options) {
    return model::generate(decoder_, prompt_embeds, options);
  }

 private:
  Decoder& decoder_;
};

// What the Trainer asks of a decoder step policy.
template <class S, class Decoder>
concept DecoderStepPolicy = backend::Backend<typename S::backend_type> &&
    std::constructible_from<S, Decoder&, const TrainableTensors&, const DecoderStepSettings&> &&
    requires(S& s, const Matrix& embeds, const model::SequenceBatch& batch, std::span<const int> labels,
             const loss::CrossEntropyOptions& ce) {
  { s.loss_and_backward(embeds, batch, labels, ce) } -> std::same_as<model::DecoderLossResultOf<float>>;
  // the device memory of the calls since the previous take (peaks over them), or nullopt when not tracked
  { s.take_step_memory() } -> std::same_as<std::optional<MemoryStats>>;
  // a training step's bracket (above): where its per-clip sums are taken, and its gradients handed to the host
  s.begin_step(true);
  { s.sums_on_device(static_cast<const float*>(nullptr)) } -> std::same_as<bool>;
  s.finish_step(StepHandOver{});
  // where a LoRA tensor (named by its host gradient's storage) lives on the step's device, if it does
  { s.device_parameter(static_cast<const float*>(nullptr)) } -> std::same_as<std::optional<optim::DeviceParameter>>;
  s.values_current(std::uint64_t{});
  { s.eval_loss(embeds, batch, labels, ce) } -> std::same_as<EvalLoss>;
  { s.generate(embeds, model::GenerationOptions{}) } -> std::same_as<model::GenerationResult>;
};

}  // namespace vidlora::train

#include <vidlora/core/portability.hpp>

#if VIDLORA_KERNELS
#include <vidlora/train/cuda/decoder_step.cuh>
#endif
