#pragma once
// One decoder block written once as a sequence of steps over an executor: the CPU executor
// (model/decoder_layer_cpu.hpp, what model::Decoder runs) and the CUDA executor
// (model/cuda/decoder_layer.cuh) run this same sequence, and tests/cuda/test_decoder_layer.cu runs both
// from the same inputs and compares them (llama.cpp's test-backend-ops is the model).
//
//   forward:  x1 = n1(h);  q, k, v = q/k/v(x1);  [qwen3: q, k = head_norm(q, k)];  rope(q), rope(k)
//             h_mid = h + o(attn(q, k, v));  x2 = n2(h_mid);  out = h_mid + down(silu(gate(x2)) ⊙ up(x2))
//   backward: the same steps in reverse; LoRA gradients accumulate inside the executor's linears.
//
// A LoRA slot's backward needs its forward input (grad_A = gᵀ·dropout(x)). An executor whose slots keep it themselves
// (the CPU's lora::LoraLinear) says so with backward_takes_input(m) = false. One that keeps only the dropout keep
// bits (the CUDA executor: a saving of about 40% of a 7B block's activations) says true, and the backward hands the
// slot its input: the attention output is kept in `attn` for o_proj, and the others are recomputed from what the
// block keeps anyway: x1 = n1(h_in) for q/k/v, x2 = n2(h_mid) for gate/up, m = silu(gate) ⊙ up for down. A
// recomputation runs the forward's op on the forward's operands, so it gives the forward's bits.
//
// An executor `E` provides (tensors are `E::tensor_type`, [rows, cols] row-major, value semantics):
//   copy(x) -> tensor                                   a copy of x
//   add(a, b) -> tensor;  accumulate(a, b)              a + b;  a += b
//   rms_norm(x, LayerNorm, rows_type* inv) -> tensor    RMSNorm (q_head / k_head: per head), 1/rms to inv (or null)
//   rms_norm_backward(x, LayerNorm, inv, dy) -> tensor  its input gradient (frozen weight)
//   linear(LayerLinear, x) -> tensor                    slot forward (frozen base + LoRA), caching for backward
//   linear_backward(LayerLinear, dy, x) -> tensor       its input gradient; LoRA grads accumulate. x: the forward's
//                                                       input when backward_takes_input(m); otherwise not read (it
//                                                       may be empty, or another slot's input)
//   backward_takes_input(LayerLinear) -> bool           the slot's backward reads x from the caller
//   rope(x, inverse)                                    in place, at the executor's positions
//   attention(saved) -> tensor                          causal GQA over saved.q/k/v; keeps its state in saved
//   attention_backward(saved, d_out) -> QkvGrads        dq, dk, dv (zero-initialised, then accumulated)
//   swiglu(gate, up) -> tensor;  swiglu_backward(gate, up, dm) -> SwigluGrads
//   qk_norm() -> bool                                   Qwen3's per-head q/k norm
// fmt-free (nvcc compiles it): no error formatting here; the executors check their arguments.

#include <utility>

#include <vidlora/core/backend.hpp>

namespace vidlora::model {

// The seven linear slots of a block, in kDecoderModules order.
enum class LayerLinear : int { q = 0, k = 1, v = 2, o = 3, gate = 4, up = 5, down = 6 };
// The four norms of a block: input_layernorm, post_attention_layernorm, Qwen3's q_norm and k_norm.
enum class LayerNorm : int { input = 0, post_attention = 1, q_head = 2, k_head = 3 };

// What a block's forward keeps for its backward. Tensor: [rows, cols]; Rows: one value per row;
// Attention: the executor's attention state (CPU: softmax per sequence; CUDA: log-sum-exp).
template <class Tensor, class Rows, class Attention>
struct DecoderLayerSavedOf {
  Tensor h_in, h_mid;   // layer input, after the attention residual [tokens, hidden]
  Rows inv1, inv2;      // RMSNorm scales [tokens]
  Tensor q_raw, k_raw;  // qwen3: q, k before the head norm
  Rows q_inv, k_inv;    // qwen3: head-norm scales [tokens·heads]
  Tensor q, k, v;       // rotated q, k and v
  Attention attention;  // what attention_backward needs besides q, k, v
  Tensor attn;          // the attention output [tokens, q features]: o_proj's input, kept when its backward takes it
  Tensor gate, up;      // MLP pre-activations [tokens, intermediate]
};

// The activations of a block's saved state (what DecoderStepOptions::pack_saved stores in bf16): every [rows, cols]
// tensor of DecoderLayerSavedOf; not the per-row scales or the attention's state. f(tensor&) for each, in a fixed order.
template <class Saved, class F>
void for_each_saved_activation(Saved& a, F&& f) {
  f(a.h_in);
  f(a.h_mid);
  f(a.q_raw);
  f(a.k_raw);
  f(a.q);
  f(a.k);
  f(a.v);
  f(a.attn);
  f(a.gate);
  f(a.up);
}

// What the step functions need of an executor's types (the ops are checked where they are called).
template <class E>
concept LayerExecutor = requires {
  typename E::tensor_type;
  typename E::rows_type;
  typename E::saved_type;
  typename E::backend_policy;
}
&&backend::Backend<typename E::backend_policy>;

template <class Tensor>
struct QkvGrads {
  Tensor dq, dk, dv;
};
template <class Tensor>
struct SwigluGrads {
  Tensor dgate, dup;
};

// h: [tokens, hidden] -> the block's output [tokens, hidden]; fills `a` for decoder_layer_backward_steps, keeping h
// itself as a.h_in (a caller done with h, as the step list is with each block's input, hands it over: no copy).
template <class Exec, class Saved>
typename Exec::tensor_type decoder_layer_forward_steps(Exec& exec, typename Exec::tensor_type&& h, Saved& a) {
  static_assert(LayerExecutor<Exec>,
                "decoder_layer_forward_steps: Exec must name tensor_type, rows_type, saved_type and a backend_policy "
                "(backend::Cpu or backend::Cuda), as model::CpuLayerExecutor and model::cuda::DecoderLayerExecutor do");
  if constexpr (!LayerExecutor<Exec>) {
    return {};  // (only the sentence above for a type that is not an executor)
  } else {
    a.h_in = std::move(h);
    const auto x1 = exec.rms_norm(a.h_in, LayerNorm::input, &a.inv1);
    a.q = exec.linear(LayerLinear::q, x1);
    a.k = exec.linear(LayerLinear::k, x1);
    a.v = exec.linear(LayerLinear::v, x1);
    if (exec.qk_norm()) {
      a.q_raw = std::move(a.q);
      a.k_raw = std::move(a.k);
      a.q = exec.rms_norm(a.q_raw, LayerNorm::q_head, &a.q_inv);
      a.k = exec.rms_norm(a.k_raw, LayerNorm::k_head, &a.k_inv);
    }
    exec.rope(a.q, false);
    exec.rope(a.k, false);
    a.attn = exec.attention(a);
    a.h_mid = exec.add(a.h_in, exec.linear(LayerLinear::o, a.attn));
    if (!exec.backward_takes_input(LayerLinear::o)) a.attn = typename Exec::tensor_type{};
    const auto x2 = exec.rms_norm(a.h_mid, LayerNorm::post_attention, &a.inv2);
    a.gate = exec.linear(LayerLinear::gate, x2);
    a.up = exec.linear(LayerLinear::up, x2);
    const auto m = exec.swiglu(a.gate, a.up);
    return exec.add(a.h_mid, exec.linear(LayerLinear::down, m));
  }
}
// The same over a copy of h (exec.copy), for a caller that keeps h.
template <class Exec, class Saved>
typename Exec::tensor_type decoder_layer_forward_steps(Exec& exec, const typename Exec::tensor_type& h, Saved& a) {
  return decoder_layer_forward_steps(exec, exec.copy(h), a);
}

// d_out: d loss / d block output -> d loss / d block input. Needs the forward's `a` (and the executor's
// linears still holding what their forward cached).
template <class Exec, class Saved>
typename Exec::tensor_type decoder_layer_backward_steps(Exec& exec, const Saved& a,
                                                        const typename Exec::tensor_type& d_out) {
  static_assert(LayerExecutor<Exec>,
                "decoder_layer_backward_steps: Exec must name tensor_type, rows_type, saved_type and a backend_policy "
                "(backend::Cpu or backend::Cuda), as model::CpuLayerExecutor and model::cuda::DecoderLayerExecutor do");
  using Tensor = typename Exec::tensor_type;
  // A slot's forward input for its backward: recomputed (or kept) only when the executor's slot takes it.
  auto takes = [&exec](LayerLinear m) { return exec.backward_takes_input(m); };
  // Each gradient is released after its last use (dm after SwiGLU's backward, dgate and dup after their slots', dx2
  // after the norm's; d_attn after the attention's, dq, dk and dv after their slots'), so the block's backward holds
  // few at once: on the 7B, dm, dgate and dup alone are 3·tokens·intermediate floats (2.4 GiB at the H100 preset's
  // 16 frames), which used to stay alive through the attention's backward.
  // MLP
  Tensor dm =
      exec.linear_backward(LayerLinear::down, d_out, takes(LayerLinear::down) ? exec.swiglu(a.gate, a.up) : Tensor{});
  auto sg = exec.swiglu_backward(a.gate, a.up, dm);
  dm = Tensor{};
  Tensor dx2 = [&] {
    const Tensor x2 = takes(LayerLinear::gate) || takes(LayerLinear::up)
                          ? exec.rms_norm(a.h_mid, LayerNorm::post_attention, nullptr)
                          : Tensor{};
    auto d = exec.linear_backward(LayerLinear::gate, sg.dgate, x2);
    sg.dgate = Tensor{};
    exec.accumulate(d, exec.linear_backward(LayerLinear::up, sg.dup, x2));
    sg.dup = Tensor{};
    return d;
  }();
  const Tensor dh_mid = exec.add(d_out, exec.rms_norm_backward(a.h_mid, LayerNorm::post_attention, a.inv2, dx2));
  dx2 = Tensor{};
  // attention
  Tensor d_attn = exec.linear_backward(LayerLinear::o, dh_mid, a.attn);
  auto g = exec.attention_backward(a, d_attn);
  d_attn = Tensor{};
  exec.rope(g.dq, true);
  exec.rope(g.dk, true);
  if (exec.qk_norm()) {
    g.dq = exec.rms_norm_backward(a.q_raw, LayerNorm::q_head, a.q_inv, g.dq);
    g.dk = exec.rms_norm_backward(a.k_raw, LayerNorm::k_head, a.k_inv, g.dk);
  }
  const Tensor dx1 = [&] {
    const bool any = takes(LayerLinear::q) || takes(LayerLinear::k) || takes(LayerLinear::v);
    const Tensor x1 = any ? exec.rms_norm(a.h_in, LayerNorm::input, nullptr) : Tensor{};
    auto d = exec.linear_backward(LayerLinear::q, g.dq, x1);
    g.dq = Tensor{};
    exec.accumulate(d, exec.linear_backward(LayerLinear::k, g.dk, x1));
    g.dk = Tensor{};
    exec.accumulate(d, exec.linear_backward(LayerLinear::v, g.dv, x1));
    return d;
  }();
  g.dv = Tensor{};
  return exec.add(dh_mid, exec.rms_norm_backward(a.h_in, LayerNorm::input, a.inv1, dx1));
}

}  // namespace vidlora::model
