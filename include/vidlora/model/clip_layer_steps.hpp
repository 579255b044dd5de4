#pragma once
// One CLIP encoder layer written once as a sequence of steps over an executor (as decoder_layer_steps.hpp does for a
// decoder block): model::ClipVision runs it with its CPU executor, model::cuda::ClipVisionCuda
// (model/cuda/clip_vision.cuh) with the kernels, over a batch of frames.
//
//   h = ln1(x);  q, k, v = q/k/v_proj(h);  y = x + out_proj(attention(q, k, v));  out = y + fc2(quick_gelu(fc1(ln2(y))))
//
// An executor `E` provides (tensors are `E::tensor_type`, [tokens, features] row-major, value semantics):
//   layer_norm(x, ClipNorm) -> tensor       LayerNorm with the layer's weight and bias
//   linear(ClipLinear, x) -> tensor         x·Wᵀ + b
//   attention(q, k, v) -> tensor            bidirectional multi-head attention within each frame
//   quick_gelu(x)                           in place: x·σ(1.702·x)
//   add(a, b) -> tensor                     a + b
// fmt-free (nvcc compiles it).

namespace vidlora::model {

// The six linears of a CLIP encoder layer, in the order ClipLayerWeights keeps them.
enum class ClipLinear : int { q = 0, k = 1, v = 2, out = 3, fc1 = 4, fc2 = 5 };
enum class ClipNorm : int { ln1 = 0, ln2 = 1 };

template <class Exec>
typename Exec::tensor_type clip_layer_forward_steps(Exec& e, const typename Exec::tensor_type& x) {
  const auto h = e.layer_norm(x, ClipNorm::ln1);
  const auto q = e.linear(ClipLinear::q, h);
  const auto k = e.linear(ClipLinear::k, h);
  const auto v = e.linear(ClipLinear::v, h);
  const auto y = e.add(x, e.linear(ClipLinear::out, e.attention(q, k, v)));
  auto m = e.linear(ClipLinear::fc1, e.layer_norm(y, ClipNorm::ln2));
  e.quick_gelu(m);
  return e.add(y, e.linear(ClipLinear::fc2, m));
}

}  // namespace vidlora::model
