// LLaVA-NeXT-Video-7B's stage-2 step on each GPU preset, replayed by size on the CPU: decoder_loss_and_backward_steps
// (the step list the device runs) over executors that compute nothing and allocate, in the same order and sizes, what
// cuda::DecoderLayerExecutor, cuda::DecoderModel and the streamed LM-head loss allocate (the LoRA slots' pieces from
// lora::cuda::lora_workspace_sizes itself), from a CachingAllocator over an upstream that hands out addresses but no
// memory. It finds what the step holds when its loss starts equal to model::step_bytes_at_loss (so the replay and the
// count that the estimate uses describe the same step), measures what the blocks' backward holds beyond that, and
// checks that each preset's estimate on the device plus that transient stays under the preset's cap: the GPU gate's
// "every preset fits", predicted here; bench_cuda_preset_step measures it on a GPU.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <vidlora/core/caching_allocator.hpp>
#include <vidlora/lora/cuda/lora_linear.cuh>
#include <vidlora/loss/cuda/lm_head_cross_entropy.cuh>
#include <vidlora/model/decoder_layer_steps.hpp>
#include <vidlora/model/decoder_model_steps.hpp>
#include <vidlora/model/decoder_step_memory.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/presets/memory_cap.hpp>
#include <vidlora/presets/memory_estimate.hpp>

#include "allocator_block.hpp"

using namespace vidlora;

namespace replay {

// Addresses without memory: the allocator's bookkeeping (size classes, its cache, the cap) runs as on the device.
struct AddressOnly {
  static constexpr std::string_view name = "address-only";
  std::uintptr_t next = std::uintptr_t{1} << 20;
  void* allocate(std::size_t n) {
    void* p = reinterpret_cast<void*>(next);
    next += (n + kAllocationAlignment - 1) / kAllocationAlignment * kAllocationAlignment + kAllocationAlignment;
    return p;
  }
  void deallocate(void*, std::size_t) {}
};
using Allocator = CachingAllocator<AddressOnly>;

using Block = test::AllocatorBlock<Allocator>;

// cuda::DeviceTensor's memory: fp32 values, or (packed) their bf16 bits; and the 16-bit copy its producer wrote for
// the consumer after it (DeviceTensor::rounded16).
struct Tensor {
  Block buffer, packed;
  mutable Block rounded16;
  std::int64_t rows = 0, cols = 0;
  Tensor() = default;
  Tensor(Allocator& a, std::int64_t r, std::int64_t c, const std::string& tag)
      : buffer(a, r * c * 4, tag), rows(r), cols(c) {}
  std::int64_t size() const { return rows * cols; }
};

struct Setup {
  model::DecoderMemoryShape shape;
  vidlora::cuda::DType base_operands = vidlora::cuda::DType::F32;
  float dropout = 0.0f;
  // The attention on the register-tile kernels (16-bit operands, sm_80+, head dim 64 or 128), for which RoPE writes
  // q's and k's 16-bit copies and the executor rounds v (and the backward's d_out) once a call.
  bool register_tiles = false;
};

using model::LayerLinear;
using model::LayerNorm;

// cuda::DecoderLayerExecutor's allocations.
struct LayerExec {
  using tensor_type = Tensor;
  using rows_type = Tensor;
  using saved_type = model::DecoderLayerSavedOf<Tensor, Tensor, Tensor>;
  using backend_policy = backend::Cuda;

  Allocator& a;
  const Setup& s;
  std::string prefix;
  Block positions, cos, sin, mask;
  bool swiglu_feeds_down = false;                              // DecoderLayerExecutor's: set by the up slot's forward
  std::array<Block, 7> kept;                                   // each LoRA slot's keep bits and h
  std::vector<std::pair<std::string, std::size_t>> live_at_q;  // tag, bytes

  LayerExec(Allocator& alloc, const Setup& setup, std::size_t l)
      : a(alloc), s(setup), prefix("layers." + std::to_string(l) + ".") {
    const auto& m = s.shape;
    positions = block(m.tokens() * 4, "rope.positions");
    cos = block(m.seq_len * (m.head_dim / 2) * 4, "rope.cos");
    sin = block(m.seq_len * (m.head_dim / 2) * 4, "rope.sin");
    if (m.masked) mask = block(m.tokens() * 4, "attention_mask");
  }
  Block block(std::int64_t bytes, const std::string& what) {
    return bytes > 0 ? Block(a, bytes, prefix + what) : Block();
  }
  Tensor tensor(std::int64_t r, std::int64_t c, const std::string& what) { return Tensor(a, r, c, prefix + what); }
  lora::cuda::LoraLinearParams params(LayerLinear m, std::int64_t tokens) const {
    const auto i = static_cast<std::size_t>(m);
    lora::cuda::LoraLinearParams p;
    p.tokens = tokens;
    p.in = s.shape.slot_in(m);
    p.out = m == LayerLinear::o || m == LayerLinear::down ? s.shape.hidden
            : m == LayerLinear::q                         ? s.shape.q_features()
            : m == LayerLinear::k || m == LayerLinear::v  ? s.shape.kv_features()
                                                          : s.shape.intermediate;
    p.rank = s.shape.slots[i].lora ? s.shape.slots[i].rank : 0;
    p.dropout = s.shape.slots[i].lora && s.shape.slots[i].dropout ? s.dropout : 0.0f;
    p.base = lora::cuda::BaseKind::NF4;
    p.base_operands = s.base_operands;
    return p;
  }

  bool qk_norm() const { return s.shape.qk_norm; }
  Tensor copy(const Tensor& x) { return tensor(x.rows, x.cols, "input"); }
  Tensor add(const Tensor& x, const Tensor&) { return tensor(x.rows, x.cols, "residual"); }
  void accumulate(Tensor&, const Tensor&) {}
  bool narrow() const { return s.base_operands != vidlora::cuda::DType::F32; }
  // The executor's producer rounding (DecoderLayerExecutor::round_in_producer, on by default): a copy beside `y`.
  void round_in_producer(const Tensor& y, const std::string& what) {
    if (narrow()) y.rounded16 = block(y.size() * 2, what);
  }
  Tensor rms_norm(const Tensor& x, LayerNorm which, Tensor* inv) {
    Tensor y = tensor(x.rows, x.cols, "norm");
    if (inv) *inv = tensor(x.rows, 1, "norm.inv");
    if (inv && (which == LayerNorm::input || which == LayerNorm::post_attention)) round_in_producer(y, "norm.16bit");
    return y;
  }
  Tensor rms_norm_backward(const Tensor&, LayerNorm, const Tensor&, const Tensor& dy) {
    return tensor(dy.rows, dy.cols, "norm.grad");
  }
  Tensor linear(LayerLinear m, const Tensor& x) {
    const auto i = static_cast<std::size_t>(m);
    lora::cuda::LoraLinearParams p = params(m, x.rows);
    // its input's 16-bit copy: the producer's, or the group's first slot rounds it (DecoderLayerExecutor::shared_operand)
    if (p.narrow_base() && !x.rounded16.held() && (m == LayerLinear::q || m == LayerLinear::gate))
      x.rounded16 = block(x.size() * 2, "input_16bit");
    const bool rounded = p.narrow_base() && x.rounded16.held();
    if (m == LayerLinear::up) swiglu_feeds_down = true;
    Tensor y = tensor(x.rows, p.out, std::string(model::kSlotMemoryNames[i]));
    const lora::cuda::LoraWorkspaceSizes w = lora::cuda::lora_workspace_sizes<float>(p);
    if (s.shape.slots[i].lora) kept[i] = block((w.mask + w.h) * 4, "workspace");
    {  // this call's temporaries
      Block xd = s.shape.slots[i].lora ? block(w.xd * 4, "dropout_input") : Block();
      Block dense = block(w.w_dense * 4, "dequantized");
      Block op16 = block(rounded ? 0 : w.op16 * 4, "operand_16bit");
    }
    if (m == LayerLinear::v || m == LayerLinear::o || m == LayerLinear::up || m == LayerLinear::down)
      x.rounded16 = Block();
    return y;
  }
  bool backward_takes_input(LayerLinear m) const { return s.shape.slots[static_cast<std::size_t>(m)].lora; }
  Tensor linear_backward(LayerLinear m, const Tensor& dy, const Tensor&) {
    const auto i = static_cast<std::size_t>(m);
    if (m == LayerLinear::q && live_at_q.empty())  // what the block's backward holds when it reaches q_proj
      live_at_q = a.largest_live(1000);
    const lora::cuda::LoraLinearParams p = params(m, dy.rows);
    Tensor dx = tensor(dy.rows, p.in, std::string(model::kSlotMemoryNames[i]) + ".grad");
    const lora::cuda::LoraWorkspaceSizes w = lora::cuda::lora_workspace_sizes<float>(p);
    if (s.shape.slots[i].lora) {
      Block xd = block(w.xd * 4, "dropout_input");
      Block g = block(w.g * 4, "grad_low_rank");
      Block dense = block(w.w_dense * 4, "dequantized");
      Block op16 = block(w.op16 * 4, "operand_16bit");
    } else {
      Block dense = block(w.w_dense * 4, "dequantized");
      Block op16 = block(w.op16 * 4, "operand_16bit");
    }
    return dx;
  }
  void rope(Tensor& x, bool inverse) {
    x.rounded16 = Block();
    if (!inverse && s.register_tiles) round_in_producer(x, "self_attn.rope_16bit");
  }
  // DecoderLayerExecutor::inputs_16bit: q, k, v (and d_out) as 16-bit patterns for the register-tile kernels.
  std::array<Block, 4> inputs_16bit(const saved_type& sv, const Tensor* d_out) {
    std::array<Block, 4> in;
    if (!s.register_tiles || (d_out && !backward_takes_input(LayerLinear::o))) return in;
    if (!sv.q.rounded16.held()) in[0] = block(sv.q.size() * 2, "self_attn.q_16bit");
    if (!sv.k.rounded16.held()) in[1] = block(sv.k.size() * 2, "self_attn.k_16bit");
    in[2] = block(sv.v.size() * 2, "self_attn.v_16bit");
    if (d_out) in[3] = block(d_out->size() * 2, "self_attn.d_out_16bit");
    return in;
  }
  Tensor attention(saved_type& sv) {
    Tensor out = tensor(sv.q.rows, s.shape.q_features(), "self_attn.attention");
    sv.attention = tensor(s.shape.batch, s.shape.q_heads * s.shape.seq_len, "self_attn.lse");
    const auto in16 = inputs_16bit(sv, nullptr);                                // given back when the call returns
    if (s.register_tiles) round_in_producer(out, "self_attn.attention_16bit");  // for o_proj
    sv.q.rounded16 = Block();
    sv.k.rounded16 = Block();
    return out;
  }
  model::QkvGrads<Tensor> attention_backward(const saved_type& sv, const Tensor& d_attn) {
    model::QkvGrads<Tensor> g{tensor(sv.q.rows, sv.q.cols, "self_attn.dq"),
                              tensor(sv.k.rows, sv.k.cols, "self_attn.dk"),
                              tensor(sv.v.rows, sv.v.cols, "self_attn.dv")};
    Tensor row_dot = tensor(s.shape.batch, s.shape.q_heads * s.shape.seq_len, "self_attn.row_dot");
    const auto in16 = inputs_16bit(sv, &d_attn);
    return g;
  }
  Tensor swiglu(const Tensor& gate, const Tensor&) {
    Tensor m = tensor(gate.rows, gate.cols, "mlp.act");
    if (swiglu_feeds_down) round_in_producer(m, "mlp.act.16bit");
    swiglu_feeds_down = false;
    return m;
  }
  model::SwigluGrads<Tensor> swiglu_backward(const Tensor&, const Tensor&, const Tensor& dm) {
    return {tensor(dm.rows, dm.cols, "mlp.gate_proj.dout"), tensor(dm.rows, dm.cols, "mlp.up_proj.dout")};
  }
};

// cuda::DecoderModel's step executor and the streamed LM-head loss's workspace.
struct ModelExec {
  using tensor_type = Tensor;
  using rows_type = Tensor;
  using saved_type = LayerExec::saved_type;
  using backend_policy = backend::Cuda;

  Allocator& a;
  const Setup& s;
  std::vector<std::unique_ptr<LayerExec>> layers;
  std::size_t at_loss = 0, at_loss_requested = 0;  // bytes in use (blocks; asked for) when the loss starts

  std::vector<std::pair<std::string, std::size_t>> live_at_q;  // when the last block's backward reached q_proj

  ModelExec(Allocator& alloc, const Setup& setup)
      : a(alloc), s(setup), layers(static_cast<std::size_t>(setup.shape.layers)) {}
  std::size_t num_layers() const { return layers.size(); }
  LayerExec& layer(std::size_t l) {
    if (!layers[l]) layers[l] = std::make_unique<LayerExec>(a, s, l);
    return *layers[l];
  }
  void release_layer(std::size_t l) {
    if (l + 1 == layers.size() && layers[l] && !layers[l]->live_at_q.empty()) live_at_q = layers[l]->live_at_q;
    layers[l].reset();
  }
  void save_layer_rng(std::size_t) {}
  void restore_layer_rng(std::size_t) {}
  void offload_input(std::size_t, Tensor) {}
  Tensor reload_input(std::size_t) { return Tensor(a, s.shape.tokens(), s.shape.hidden, "input"); }
  void pack_saved(std::size_t, saved_type& sv) {
    model::for_each_saved_activation(sv, [&](Tensor& t) {
      if (t.size() == 0 || !t.buffer.held()) return;
      t.packed = Block(a, t.size() * 2, "saved_bf16");
      t.buffer = Block();
    });
  }
  void unpack_saved(std::size_t, saved_type& sv) {
    model::for_each_saved_activation(sv, [&](Tensor& t) {
      if (!t.packed.held()) return;
      t.buffer = Block(a, t.size() * 4, "saved");
      t.packed = Block();
    });
  }
  Tensor copy(const Tensor& x) { return Tensor(a, x.rows, x.cols, "hidden"); }
  Tensor final_norm(const Tensor& h, Tensor* inv) {
    Tensor y(a, h.rows, h.cols, "final_norm");
    if (inv) *inv = Tensor(a, h.rows, 1, "final_norm.inv");
    return y;
  }
  Tensor final_norm_backward(const Tensor& h, const Tensor&, const Tensor&) {
    return Tensor(a, h.rows, h.cols, "norm.grad");
  }
  model::DecoderLossTotals lm_head_loss(const Tensor& hidden, Tensor& d_hidden) {
    at_loss = a.stats().allocated_bytes;
    at_loss_requested = a.stats().requested_bytes;
    d_hidden = Tensor(a, hidden.rows, hidden.cols, "lm_head.grad");
    const std::int64_t t = hidden.rows, chunk = std::min<std::int64_t>(presets::kStreamedLogitsChunk, 32064);
    Block targets(a, t * 4, "lm_head.targets"), logits(a, t * chunk * 4, "lm_head.logits"),
        state(a, t * static_cast<std::int64_t>(sizeof(loss::cuda::LmHeadRowState)), "lm_head.row_state"),
        row_loss(a, t * 8, "lm_head.row_loss"), row_lse(a, t * 8, "lm_head.row_lse");
    return {};
  }
};

struct Replayed {
  // bytes alive per tag when the last block's backward reached q_proj (first step)
  std::vector<std::pair<std::string, std::size_t>> live_at_q;
  std::size_t at_loss = 0;            // in use when the first step's loss starts, above what was held before the step
  std::size_t at_loss_requested = 0;  // the same, as asked (not rounded to the blocks that served the requests)
  std::size_t peak = 0;               // the steps' peak in use, above the same
  std::size_t reserved = 0;           // the steps' peak reserved, above the same
};

// Two steps (the second over the first one's cached blocks, as every step after the first runs), from an allocator
// that already holds `before` bytes for the model (its weights, LoRA factors and gradients: held, never released).
// In use counts blocks as the allocator holds them: a request served from a cached block up to 1/8 larger counts that
// block (blocks freed by an earlier block's forward serve later ones), so the bytes asked for are the count's.
inline Replayed replay_step(const Setup& s, const model::DecoderStepOptions& o, std::size_t before) {
  Allocator a;
  Block model_state(a, static_cast<std::int64_t>(before), "model");
  const std::size_t held = a.stats().allocated_bytes, reserved0 = a.stats().reserved_bytes;
  Replayed r;
  for (int step = 0; step < 2; ++step) {
    a.reset_peak();
    Tensor embeds(a, s.shape.tokens(), s.shape.hidden, "inputs_embeds");
    ModelExec e(a, s);
    const auto result = model::decoder_loss_and_backward_steps(e, embeds, o);
    const auto input = static_cast<std::size_t>(embeds.size() * 4);
    if (step == 0) {
      r.at_loss = e.at_loss - held - input;
      r.at_loss_requested = e.at_loss_requested - before - input;
      r.live_at_q = e.live_at_q;
    }
    r.peak = std::max(r.peak, a.stats().peak_allocated_bytes - held - input);
    r.reserved = std::max(r.reserved, a.stats().peak_reserved_bytes - reserved0);
    (void)result;
  }
  return r;
}

}  // namespace replay

namespace {

template <presets::Preset P>
void check_preset(const char* name) {
  INFO(name);
  constexpr presets::ModelShape m = presets::models::LlavaNextVideo7B;
  constexpr std::string_view precision = presets::device_precision_of<P>();
  replay::Setup s;
  s.shape = presets::decoder_memory_shape<P>(m, 4);
  s.shape.masked = false;  // the benchmark's batch: every sample full length
  s.base_operands = precision == "bf16"   ? vidlora::cuda::DType::BF16
                    : precision == "fp16" ? vidlora::cuda::DType::F16
                                          : vidlora::cuda::DType::F32;
  s.dropout = static_cast<float>(P::lora_dropout);
  s.register_tiles = s.base_operands != vidlora::cuda::DType::F32 && P::cuda_arch >= 80 &&
                     (s.shape.head_dim == 64 || s.shape.head_dim == 128);
  model::DecoderStepOptions o;
  o.checkpoint_layers = P::gradient_checkpointing;
  o.pack_saved = precision == "bf16";
  const replay::Replayed r = replay::replay_step(s, o, 0);
  // The replay holds what the count says when the loss starts (in blocks, up to the allocator's reuse of larger
  // cached blocks) ...
  CHECK(r.at_loss_requested == static_cast<std::size_t>(model::step_bytes_at_loss(s.shape, o)));
  CHECK(r.at_loss >= static_cast<std::size_t>(model::step_bytes_at_loss(s.shape, o, true)));
  CHECK(static_cast<double>(r.at_loss) <= 1.125 * static_cast<double>(model::step_bytes_at_loss(s.shape, o, true)));
  // ... and the blocks' backward holds more: its gradients and its slots' temporaries.
  REQUIRE(r.peak >= r.at_loss);
  const double transient = static_cast<double>(r.peak - r.at_loss);
  // The estimate on the device (weights, trainable state with AdamW and the float64 sums, the step at the loss with its
  // logits chunk, the projector) without its runtime overhead (outside the allocator), plus that transient, under the
  // preset's cap.
  constexpr presets::MemoryEstimate e = presets::estimate_memory<P>(m);
  const double cap = static_cast<double>(presets::memory_cap_bytes<P>());
  const double step_peak = e.total_device() - e.overhead + transient;
  std::printf(
      "%-20s at the loss %6.2f GiB, peak %6.2f (+%5.2f in the backward), reserved %6.2f; estimate on the "
      "device with that: %6.2f GiB of a %5.1f GiB cap\n",
      name, static_cast<double>(r.at_loss) / presets::kGiB, static_cast<double>(r.peak) / presets::kGiB,
      transient / presets::kGiB, static_cast<double>(r.reserved) / presets::kGiB, step_peak / presets::kGiB,
      cap / presets::kGiB);
  CHECK(step_peak < cap);
}

struct A100Checkpointing : presets::A100 {
  static constexpr bool gradient_checkpointing = true;
};
struct H100Checkpointing : presets::H100 {
  static constexpr bool gradient_checkpointing = true;
};

}  // namespace

TEST_CASE("LLaVA-NeXT-Video-7B's stage-2 step, replayed by size, fits each GPU preset's cap with its backward",
          "[decoder_host][memory]") {
  check_preset<presets::T4>("T4");
  check_preset<presets::L4>("L4");
  check_preset<presets::A100>("A100");
  check_preset<presets::H100>("H100");
  check_preset<A100Checkpointing>("A100_checkpointing");
  check_preset<H100Checkpointing>("H100_checkpointing");
}

TEST_CASE("the replayed step's peak comes from the blocks' backward, and releasing their gradients lowers it",
          "[decoder_host][memory]") {
  // A small shape: the replay's peak above the loss is one block backward's transient, which must not grow with the
  // number of blocks (gradients of an earlier block's backward are released before the next block's).
  replay::Setup s;
  s.shape = model::DecoderMemoryShape{.batch = 2,
                                      .seq_len = 96,
                                      .hidden = 256,
                                      .intermediate = 640,
                                      .q_heads = 8,
                                      .kv_heads = 4,
                                      .head_dim = 32,
                                      .layers = 4};
  for (auto& slot : s.shape.slots) slot = {true, 8, true};
  s.dropout = 0.1f;
  const auto four = replay::replay_step(s, {}, 0);
  s.shape.layers = 12;
  const auto twelve = replay::replay_step(s, {}, 0);
  CHECK(twelve.at_loss_requested == static_cast<std::size_t>(model::step_bytes_at_loss(s.shape, {})));
  CHECK(twelve.peak - twelve.at_loss == four.peak - four.at_loss);
  // When the last block's backward reaches q_proj, nothing of its MLP's backward (dm, dgate, dup, dx2), of its
  // attention's input gradient (d_attn) or of the loss (the final norm's output and 1/rms, the loss gradient, the last
  // block's output) is alive any more: only the block's saved state, its gradients at the block's input side
  // (dh_mid, dq, dk, dv, the recomputed x1) and the earlier blocks' state.
  REQUIRE(!twelve.live_at_q.empty());
  std::string dead;
  std::size_t residuals = 0;  // h_mid (saved) and dh_mid; the block's output (a residual too) was the loss's
  for (const auto& [tag, bytes] : twelve.live_at_q) {
    for (const char* gone : {".dout", "mlp.act", "mlp.down_proj.grad", "mlp.gate_proj.grad", "mlp.up_proj.grad",
                             "self_attn.o_proj.grad", "lm_head.grad", "final_norm"})
      if (tag.find(gone) != std::string::npos) dead += tag + " ";
    if (tag == "layers.11.residual") residuals = bytes;
  }
  INFO(dead);
  CHECK(dead.empty());
  CHECK(residuals == 2 * allocation_size_class(static_cast<std::size_t>(s.shape.tokens() * s.shape.hidden * 4)));
}
