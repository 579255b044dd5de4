#pragma once
// One training step of a whole decoder written once as a step list over a model executor, one level above
// decoder_layer_*_steps: every block forward, the final RMSNorm, the LM-head loss (which also gives d loss / d its
// input), the final norm's backward and every block backward, releasing each block's state as soon as its backward
// is done. What model::Decoder::loss_and_backward computes, with or without its gradient checkpointing; the CUDA
// DecoderModel (model/cuda/decoder_model.cuh) runs it on the device, and tests/cuda_host/test_decoder_model_host.cpp
// runs it over CPU executors against Decoder::loss_and_backward, bit for bit.
//
// Gradient checkpointing (DecoderStepOptions::checkpoint_layers), as model::Decoder does it: the forward of every
// block but the last keeps only the block's input (its activations and its linears' caches are released as soon as
// its output exists); before that block's backward its forward runs again from the kept input, with the LoRA
// dropout streams rewound to where the first forward drew them, so the recomputed activations, the loss and every
// gradient are the same bits as without checkpointing. The last block is never checkpointed: its backward comes
// first, so recomputing it would only cost time. What stays alive (model/decoder_step_memory.hpp counts it):
// without checkpointing every block's saved state; with it, L - 1 block inputs plus one block's saved state. With
// DecoderStepOptions::offload_checkpoints too, the kept inputs wait in host memory (pinned, on the GPU: what Unsloth
// does on small cards) and come back just before their recompute, so the device holds one block's state.
//
// Model executor:
//   tensor_type, rows_type, saved_type (the layer executors' saved_type)
//   num_layers() -> std::size_t
//   layer(l) -> a layer executor for decoder_layer_*_steps; the same object from a forward to release_layer(l)
//   copy(x) -> tensor
//   final_norm(h, rows_type* inv) -> tensor;  final_norm_backward(h, inv, dy) -> tensor
//   lm_head_loss(hidden, tensor& d_hidden) -> DecoderLossTotals   (targets and loss options held by the executor)
//   release_layer(l)                 drops what layer(l) keeps (the linears' caches); the next layer(l) is a new one
//   save_layer_rng(l), restore_layer_rng(l)   with checkpoint_layers only: remember block l's LoRA dropout streams
//                                    before its first forward, and rewind them to that before the recompute
//   offload_input(l, tensor&&), reload_input(l) -> tensor   with offload_checkpoints only: move block l's kept
//                                    input off the device (its device memory freed) and back
//   pack_saved(l, saved&), unpack_saved(l, saved&)   with pack_saved only: store block l's saved activations (the
//                                    tensors of DecoderLayerSavedOf, not its per-row scales or the attention's
//                                    log-sum-exp) in bf16 between its forward and its backward, and widen them again
//   layer_backward_done(l)           optional: called once block l's backward has been enqueued (its LoRA gradients
//                                    for this step are final: no later step of the list writes them), from block L-1
//                                    down to block 0 (the CUDA step starts summing them over the ranks there)
// decoder_loss_steps (an evaluation's loss: no backward) needs only num_layers, layer, release_layer, copy,
// final_norm and
//   lm_head_loss_forward(hidden) -> DecoderLossTotals   the loss alone (no d hidden)
// over an executor whose layers run without training (no dropout), as model::Decoder::forward(…, false) does.
// fmt-free (nvcc compiles it).

#include <cstddef>
#include <utility>
#include <vector>

#include <vidlora/model/decoder_layer_steps.hpp>

namespace vidlora::model {

struct DecoderLossTotals {
  double loss = 0.0;
  long valid_tokens = 0;
};

template <class Tensor>
struct DecoderStepOf {
  DecoderLossTotals totals;
  Tensor grad_embeds;  // d loss / d input embeddings [tokens, hidden]
};

struct DecoderStepOptions {
  bool checkpoint_layers = false;    // keep only each block's input (all but the last); recompute before the backward
  bool offload_checkpoints = false;  // with checkpoint_layers: keep those inputs in host memory until the recompute
  // Keep the saved activations of every block that is not checkpointed (but the last, whose backward comes first) in
  // bf16 from its forward to its backward: half their memory. The forward and the loss are unchanged; the backward
  // reads the activations rounded to bf16, as a bf16 autocast step's backward does.
  bool pack_saved = false;
};

// Whether decoder_loss_and_backward_steps checkpoints block l of `layers` under `o` (all but the last block).
constexpr bool checkpoints_layer(const DecoderStepOptions& o, std::size_t l, std::size_t layers) {
  return o.checkpoint_layers && l + 1 < layers;
}

// Whether decoder_loss_and_backward_steps keeps block l's saved activations in bf16 under `o`.
constexpr bool packs_layer(const DecoderStepOptions& o, std::size_t l, std::size_t layers) {
  return o.pack_saved && !checkpoints_layer(o, l, layers) && l + 1 < layers;
}

// embeds: [tokens, hidden] input embeddings -> the loss and d loss / d embeds; LoRA gradients accumulate in the
// layer executors' slots.
template <class Exec>
DecoderStepOf<typename Exec::tensor_type> decoder_loss_and_backward_steps(Exec& e,
                                                                          const typename Exec::tensor_type& embeds,
                                                                          const DecoderStepOptions& options = {}) {
  using Tensor = typename Exec::tensor_type;
  const std::size_t layers = e.num_layers();
  std::vector<typename Exec::saved_type> saved(layers);
  std::vector<Tensor> inputs(layers);  // checkpointed blocks: their input, the only thing their forward keeps
  Tensor h = e.copy(embeds);
  for (std::size_t l = 0; l < layers; ++l) {
    if (!checkpoints_layer(options, l, layers)) {
      h = decoder_layer_forward_steps(e.layer(l), std::move(h), saved[l]);  // the block keeps h as its input
      if (packs_layer(options, l, layers)) e.pack_saved(l, saved[l]);
      continue;
    }
    e.save_layer_rng(l);
    Tensor out = decoder_layer_forward_steps(e.layer(l), std::move(h), saved[l]);
    inputs[l] = std::move(saved[l].h_in);  // the block's input
    saved[l] = {};
    e.release_layer(l);
    if (options.offload_checkpoints) e.offload_input(l, std::move(inputs[l]));
    h = std::move(out);
  }
  DecoderStepOf<Tensor> r;
  // The final norm's output, its 1/rms, the loss gradient and the last block's output are released before the blocks'
  // backward (on the 7B at the H100 preset, 0.9 GiB that stayed alive through it).
  Tensor dh = [&] {
    typename Exec::rows_type inv;
    const Tensor out = e.final_norm(h, &inv);
    Tensor d_out;
    r.totals = e.lm_head_loss(out, d_out);
    return e.final_norm_backward(h, inv, d_out);
  }();
  h = Tensor{};
  for (std::size_t l = layers; l-- > 0;) {
    if (checkpoints_layer(options, l, layers)) {
      e.restore_layer_rng(l);
      if (options.offload_checkpoints) inputs[l] = e.reload_input(l);
      (void)decoder_layer_forward_steps(e.layer(l), std::move(inputs[l]), saved[l]);  // the first forward's bits
      inputs[l] = {};
    }
    if (packs_layer(options, l, layers)) e.unpack_saved(l, saved[l]);
    dh = decoder_layer_backward_steps(e.layer(l), saved[l], dh);
    saved[l] = {};
    e.release_layer(l);
    if constexpr (requires { e.layer_backward_done(l); }) e.layer_backward_done(l);
  }
  r.grad_embeds = std::move(dh);
  return r;
}

// embeds: [tokens, hidden] -> the loss (the evaluation's: Decoder::forward(embeds, batch, false), then the LM-head
// cross-entropy). Each block's state is released as soon as its output exists, so one block is alive at a time.
template <class Exec>
DecoderLossTotals decoder_loss_steps(Exec& e, const typename Exec::tensor_type& embeds) {
  using Tensor = typename Exec::tensor_type;
  Tensor h = e.copy(embeds);
  for (std::size_t l = 0; l < e.num_layers(); ++l) {
    typename Exec::saved_type scratch;
    h = decoder_layer_forward_steps(e.layer(l), std::move(h), scratch);
    scratch = {};
    e.release_layer(l);
  }
  typename Exec::rows_type inv;
  return e.lm_head_loss_forward(e.final_norm(h, &inv));
}

}  // namespace vidlora::model
