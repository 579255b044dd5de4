#pragma once
// One training step of a whole decoder written once as a step list over a model executor, one level above
// decoder_layer_*_steps: every block forward, the final RMSNorm, the LM-head loss (which also gives d loss / d its
// input), the final norm's backward and every block backward, releasing each block's state as soon as its backward
// is done. What model::Decoder::loss_and_backward computes (without gradient checkpointing); the CUDA
// DecoderModel (model/cuda/decoder_model.cuh) runs it on the device, and tests/cuda_host/test_decoder_model_host.cpp
// runs it over CPU executors against Decoder::loss_and_backward, bit for bit.
//
// Model executor:
//   tensor_type, rows_type, saved_type (the layer executors' saved_type)
//   num_layers() -> std::size_t
//   layer(l) -> a layer executor for decoder_layer_*_steps; the same object from the forward to release_layer(l)
//   copy(x) -> tensor
//   final_norm(h, rows_type* inv) -> tensor;  final_norm_backward(h, inv, dy) -> tensor
//   lm_head_loss(hidden, tensor& d_hidden) -> DecoderLossTotals   (targets and loss options held by the executor)
//   release_layer(l)
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

// embeds: [tokens, hidden] input embeddings -> the loss and d loss / d embeds; LoRA gradients accumulate in the
// layer executors' slots.
template <class Exec>
DecoderStepOf<typename Exec::tensor_type> decoder_loss_and_backward_steps(Exec& e,
                                                                          const typename Exec::tensor_type& embeds) {
  using Tensor = typename Exec::tensor_type;
  const std::size_t layers = e.num_layers();
  std::vector<typename Exec::saved_type> saved(layers);
  Tensor h = e.copy(embeds);
  for (std::size_t l = 0; l < layers; ++l) h = decoder_layer_forward_steps(e.layer(l), h, saved[l]);
  typename Exec::rows_type inv;
  const Tensor out = e.final_norm(h, &inv);
  Tensor d_out;
  DecoderStepOf<Tensor> r;
  r.totals = e.lm_head_loss(out, d_out);
  Tensor dh = e.final_norm_backward(h, inv, d_out);
  for (std::size_t l = layers; l-- > 0;) {
    dh = decoder_layer_backward_steps(e.layer(l), saved[l], dh);
    saved[l] = {};
    e.release_layer(l);
  }
  r.grad_embeds = std::move(dh);
  return r;
}

}  // namespace vidlora::model
