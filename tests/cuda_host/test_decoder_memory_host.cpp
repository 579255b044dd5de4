// What decoder_loss_and_backward_steps keeps alive, measured: the step list runs over CPU executors whose every
// tensor also takes a block of the size the CUDA executors allocate (outputs, 1/rms rows, the attention's
// log-sum-exp, each LoRA slot's cache, the block executor's tables) from a host CachingAllocator, under the device's
// tags. The bytes held when the loss starts equal model::step_bytes_at_loss (model/decoder_step_memory.hpp), with
// and without checkpointing; checkpointing lowers the step's peak; the results stay bit-identical.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include <vidlora/io/half.hpp>
#include <vidlora/core/host_upstream.hpp>
#include <vidlora/lora/cuda/lora_linear.cuh>
#include <vidlora/model/cuda/decoder_model.cuh>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/decoder_step_memory.hpp>
#include <vidlora/model/decoder_weights_export.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/presets/memory_estimate.hpp>

#include "allocator_block.hpp"
#include "host_decoder_exec.hpp"

using namespace vidlora;

namespace {

// A block of `bytes` from the allocator, given back when destroyed (a device tensor's memory, on the host).
using MemTrackBlock = test::AllocatorBlock<HostCachingAllocator>;

template <class M>
struct MemTracked {
  M m;
  MemTrackBlock mem;
};
using MemTrackMatrix = MemTracked<Matrix>;
using MemTrackRows = MemTracked<Vector>;
using MemTrackAttention = MemTracked<std::vector<Matrix>>;  // the CPU's softmax; the device's lse bytes

// A block executor over test::HostDecoderModelExec's CPU one, allocating what cuda::DecoderLayerExecutor allocates.
struct MemTrackLayerExec {
  using Inner = test::HostDecoderModelExec::LayerExec;
  using tensor_type = MemTrackMatrix;
  using rows_type = MemTrackRows;
  using saved_type = model::DecoderLayerSavedOf<MemTrackMatrix, MemTrackRows, MemTrackAttention>;
  using backend_policy = backend::Cpu;

  Inner& inner;
  HostCachingAllocator& alloc;
  std::string prefix;
  const model::DecoderMemoryShape& shape;
  MemTrackBlock tables[4];
  MemTrackBlock slot_ws[7];
  Matrix slot_input[7];         // what each LoRA slot's forward got (not tracked: the test's own copy) ...
  std::size_t& inputs_checked;  // ... and how many backwards were handed exactly those bits
  bool exact_inputs = true;     // false once the block's saved activations were packed: inputs from bf16 values

  MemTrackLayerExec(Inner& i, HostCachingAllocator& a, std::size_t l, const model::DecoderMemoryShape& s,
                    std::size_t& checked)
      : inner(i), alloc(a), prefix("layers." + std::to_string(l) + "."), shape(s), inputs_checked(checked) {
    tables[0] = block(s.tokens() * 4, "rope.positions");
    tables[1] = block(s.seq_len * (s.head_dim / 2) * 4, "rope.cos");
    tables[2] = block(s.seq_len * (s.head_dim / 2) * 4, "rope.sin");
    if (s.masked) tables[3] = block(s.tokens() * 4, "attention_mask");
  }
  MemTrackBlock block(std::int64_t bytes, const std::string& what) { return {alloc, bytes, prefix + what}; }
  template <class M>
  MemTracked<M> track(M m, const std::string& what) {
    const auto bytes = static_cast<std::int64_t>(m.size() * sizeof(float));
    return {std::move(m), block(bytes, what)};
  }

  bool qk_norm() const { return inner.qk_norm(); }
  MemTrackMatrix copy(const MemTrackMatrix& x) { return track(Matrix(x.m), "input"); }
  MemTrackMatrix add(const MemTrackMatrix& a, const MemTrackMatrix& b) {
    return track(inner.add(a.m, b.m), "residual");
  }
  void accumulate(MemTrackMatrix& a, const MemTrackMatrix& b) { inner.accumulate(a.m, b.m); }
  MemTrackMatrix rms_norm(const MemTrackMatrix& x, model::LayerNorm which, MemTrackRows* inv) {
    Vector r;
    Matrix y = inner.rms_norm(x.m, which, inv ? &r : nullptr);
    if (inv) *inv = track(std::move(r), "norm.inv");
    return track(std::move(y), "norm");
  }
  MemTrackMatrix rms_norm_backward(const MemTrackMatrix& x, model::LayerNorm which, const MemTrackRows& inv,
                                   const MemTrackMatrix& dy) {
    return track(inner.rms_norm_backward(x.m, which, inv.m, dy.m), "norm.grad");
  }
  MemTrackMatrix linear(model::LayerLinear m, const MemTrackMatrix& x) {
    const auto i = static_cast<std::size_t>(m);
    MemTrackMatrix y = track(inner.linear(m, x.m), std::string(model::kSlotMemoryNames[i]));
    const model::SlotMemoryShape& slot = shape.slots[i];
    if (slot.lora) {  // as DecoderLayerExecutor::linear: the kept workspace (keep bits, h); dropout(x) a temporary
      slot_ws[i] =
          block(model::lora_kept_workspace_elements(x.m.rows(), x.m.cols(), slot.rank, slot.dropout) * 4, "workspace");
      MemTrackBlock xd = slot.dropout ? block(x.m.size() * 4, "dropout_input") : MemTrackBlock();
      slot_input[i] = x.m;
    }
    return y;
  }
  bool backward_takes_input(model::LayerLinear m) const { return shape.slots[static_cast<std::size_t>(m)].lora; }
  MemTrackMatrix linear_backward(model::LayerLinear m, const MemTrackMatrix& dy, const MemTrackMatrix& x) {
    const auto i = static_cast<std::size_t>(m);
    const model::SlotMemoryShape& slot = shape.slots[i];
    MemTrackBlock xd, g;
    if (slot.lora) {  // the step list hands back the forward's input, bit for bit (kept or recomputed)
      REQUIRE(x.m.rows() == slot_input[i].rows());
      REQUIRE(x.m.cols() == slot_input[i].cols());
      if (exact_inputs)
        REQUIRE(std::memcmp(x.m.data(), slot_input[i].data(), static_cast<std::size_t>(x.m.size()) * sizeof(float)) ==
                0);
      ++inputs_checked;
      // the device call's temporaries: dropout(x) rebuilt, g
      if (slot.dropout) xd = block(x.m.size() * 4, "dropout_input");
      g = block(x.m.rows() * slot.rank * 4, "grad_low_rank");
    }
    return track(inner.linear_backward(m, dy.m), "linear.grad");
  }
  void rope(MemTrackMatrix& x, bool inverse) { inner.rope(x.m, inverse); }
  Inner::saved_type inner_saved(const saved_type& a) {
    Inner::saved_type s;
    s.q = a.q.m;
    s.k = a.k.m;
    s.v = a.v.m;
    s.attention = a.attention.m;
    return s;
  }
  MemTrackMatrix attention(saved_type& a) {
    Inner::saved_type s = inner_saved(a);
    MemTrackMatrix out = track(inner.attention(s), "self_attn.attention");
    a.attention.m = std::move(s.attention);
    a.attention.mem = block(shape.tokens() * shape.q_heads * 4, "self_attn.lse");
    return out;
  }
  model::QkvGrads<MemTrackMatrix> attention_backward(const saved_type& a, const MemTrackMatrix& d) {
    auto g = inner.attention_backward(inner_saved(a), d.m);
    MemTrackBlock row_dot = block(shape.tokens() * shape.q_heads * 4, "self_attn.row_dot");
    return {track(std::move(g.dq), "dq"), track(std::move(g.dk), "dk"), track(std::move(g.dv), "dv")};
  }
  MemTrackMatrix swiglu(const MemTrackMatrix& gate, const MemTrackMatrix& up) {
    return track(inner.swiglu(gate.m, up.m), "mlp.act");
  }
  model::SwigluGrads<MemTrackMatrix> swiglu_backward(const MemTrackMatrix& gate, const MemTrackMatrix& up,
                                                     const MemTrackMatrix& dm) {
    auto g = inner.swiglu_backward(gate.m, up.m, dm.m);
    return {track(std::move(g.dgate), "dgate"), track(std::move(g.dup), "dup")};
  }
};

// The model executor: test::HostDecoderModelExec's ops, every tensor tracked as DecoderModel's executor allocates.
struct MemTrackModelExec {
  using tensor_type = MemTrackMatrix;
  using rows_type = MemTrackRows;
  using saved_type = MemTrackLayerExec::saved_type;

  test::HostDecoderModelExec& base;
  HostCachingAllocator& alloc;
  model::DecoderMemoryShape shape;
  std::vector<std::unique_ptr<MemTrackLayerExec>> execs;
  std::size_t inputs_checked = 0;  // LoRA slot backwards handed their forward's input
  std::size_t at_loss = 0;         // allocated bytes when the loss starts

  MemTrackModelExec(test::HostDecoderModelExec& b, HostCachingAllocator& a, const model::DecoderMemoryShape& s)
      : base(b), alloc(a), shape(s), execs(b.num_layers()) {}

  std::size_t num_layers() const { return base.num_layers(); }
  MemTrackLayerExec& layer(std::size_t l) {
    if (!execs[l]) execs[l] = std::make_unique<MemTrackLayerExec>(base.layer(l), alloc, l, shape, inputs_checked);
    return *execs[l];
  }
  void release_layer(std::size_t l) {
    execs[l].reset();
    base.release_layer(l);
  }
  void save_layer_rng(std::size_t l) { base.save_layer_rng(l); }
  // offload: the input leaves the device (its block freed); it comes back as a new device tensor.
  void offload_input(std::size_t l, MemTrackMatrix x) { base.offload_input(l, std::move(x.m)); }
  MemTrackMatrix reload_input(std::size_t l) { return track(base.reload_input(l), "input"); }
  void restore_layer_rng(std::size_t l) { base.restore_layer_rng(l); }
  // pack_saved, as the device does it: each saved activation's values rounded to bf16 in a block of half the size
  // (taken before the float one is given back), widened again into a float block before the backward.
  void pack_saved(std::size_t l, saved_type& a) {
    layer(l).exact_inputs = false;  // its slots' inputs will be recomputed from bf16-rounded activations
    model::for_each_saved_activation(a, [&](MemTrackMatrix& t) {
      if (t.m.size() == 0) return;
      for (Eigen::Index i = 0; i < t.m.size(); ++i) t.m.data()[i] = io::round_to_bf16(t.m.data()[i]);
      MemTrackBlock half(alloc, static_cast<std::int64_t>(t.m.size() * 2), "saved_bf16");
      t.mem = std::move(half);
    });
  }
  void unpack_saved(std::size_t, saved_type& a) {
    model::for_each_saved_activation(a, [&](MemTrackMatrix& t) {
      if (t.m.size() == 0) return;
      MemTrackBlock full(alloc, static_cast<std::int64_t>(t.m.size() * 4), "saved");
      t.mem = std::move(full);
    });
  }
  MemTrackMatrix track(Matrix m, const char* tag) {
    const auto bytes = static_cast<std::int64_t>(m.size() * sizeof(float));
    return {std::move(m), MemTrackBlock(alloc, bytes, tag)};
  }
  MemTrackMatrix copy(const MemTrackMatrix& x) { return track(x.m, "hidden"); }
  MemTrackMatrix final_norm(const MemTrackMatrix& h, MemTrackRows* inv) {
    Vector r;
    MemTrackMatrix y = track(base.final_norm(h.m, &r), "norm");
    *inv = {r, MemTrackBlock(alloc, static_cast<std::int64_t>(r.size() * 4), "norm.inv")};
    return y;
  }
  MemTrackMatrix final_norm_backward(const MemTrackMatrix& h, const MemTrackRows& inv, const MemTrackMatrix& dy) {
    return track(base.final_norm_backward(h.m, inv.m, dy.m), "norm.grad");
  }
  model::DecoderLossTotals lm_head_loss(const MemTrackMatrix& hidden, MemTrackMatrix& d_hidden) {
    at_loss = alloc.stats().allocated_bytes;
    Matrix d;
    const model::DecoderLossTotals t = base.lm_head_loss(hidden.m, d);
    MemTrackBlock logits(alloc, hidden.m.rows() * base.lm.chunk_size * 4, "lm_head.logits");  // the device's chunk
    d_hidden = track(std::move(d), "lm_head.grad");
    return t;
  }
};

model::DecoderOptions memtrack_slots(double dropout,
                                     std::vector<std::string> targets = {"q_proj", "v_proj", "o_proj", "down_proj"}) {
  model::DecoderOptions o;
  o.target_modules = std::move(targets);
  o.lora.dropout = dropout;
  o.lora.seed = 9;
  return o;
}

// The device model's own shape helper (DecoderModel's tensors are what the tracked executors mirror).
model::DecoderMemoryShape memtrack_shape(const model::DecoderHostWeights& w, const model::SequenceBatch& b) {
  model::cuda::DecoderBatch db;
  db.batch = b.batch;
  db.seq_len = b.seq_len;
  db.attention_mask = b.attention_mask;
  return model::cuda::decoder_memory_shape(w, db);
}

struct MemTrackRun {
  model::DecoderStepOf<Matrix> step;
  std::size_t at_loss = 0, peak = 0, after = 0;
  std::size_t inputs_checked = 0;
};

MemTrackRun memtrack_run(const model::DecoderConfig& config, const model::DecoderHostWeights& w,
                         const model::SequenceBatch& batch, const std::vector<int>& labels, const Matrix& embeds,
                         bool checkpoint, bool offload = false, bool pack = false) {
  test::HostDecoderModelExec base(config, w, batch, labels, {}, 7);
  HostCachingAllocator alloc;
  MemTrackModelExec exec(base, alloc, memtrack_shape(w, batch));
  MemTrackMatrix in = exec.track(embeds, "embeds");  // the caller's input, outside the step
  const std::size_t before = alloc.stats().allocated_bytes;
  model::DecoderStepOptions o;
  o.checkpoint_layers = checkpoint;
  o.offload_checkpoints = offload;
  o.pack_saved = pack;
  auto r = model::decoder_loss_and_backward_steps(exec, in, o);
  MemTrackRun run;
  run.step.totals = r.totals;
  run.step.grad_embeds = r.grad_embeds.m;
  run.at_loss = exec.at_loss - before;
  run.peak = alloc.stats().peak_allocated_bytes - before;
  run.after = alloc.stats().allocated_bytes - before;  // the returned gradient only
  run.inputs_checked = exec.inputs_checked;
  return run;
}

bool memtrack_same_bits(const Matrix& a, const Matrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("the decoder step holds what decoder_step_memory counts, with and without checkpointing",
          "[decoder_host][memory]") {
  for (const double dropout : {0.0, 0.1}) {
    for (const bool qwen3 : {false, true}) {
      INFO("dropout " << dropout << " qwen3 " << qwen3);
      auto config = model::llama_config(64, 96, 4, 4, 2, 20);
      if (qwen3) config.architecture = model::Architecture::Qwen3;
      config.validate();
      model::Decoder<16, 32> dec(config, model::random_decoder_weights(config, 2), memtrack_slots(dropout));
      const model::DecoderHostWeights w = model::export_decoder_weights(dec);
      model::SequenceBatch batch;
      batch.batch = 2;
      batch.seq_len = 40;
      batch.attention_mask.assign(80, 1);
      for (int i = 75; i < 80; ++i) batch.attention_mask[static_cast<std::size_t>(i)] = 0;
      std::vector<int> labels(80, -100);
      for (int i = 3; i < 75; ++i) labels[static_cast<std::size_t>(i)] = (i * 7) % 20;
      const Matrix embeds = model::random_normal(80, 64, 1.0, 2, 4);

      const MemTrackRun plain = memtrack_run(config, w, batch, labels, embeds, false);
      const MemTrackRun ckpt = memtrack_run(config, w, batch, labels, embeds, true);
      const MemTrackRun offload = memtrack_run(config, w, batch, labels, embeds, true, true);
      const model::DecoderMemoryShape s = memtrack_shape(w, batch);
      model::DecoderStepOptions on, off;
      on.checkpoint_layers = true;
      // Measured against the formula, exactly (each tensor a caching-allocator block).
      CHECK(plain.at_loss == static_cast<std::size_t>(model::step_bytes_at_loss(s, off, true)));
      CHECK(ckpt.at_loss == static_cast<std::size_t>(model::step_bytes_at_loss(s, on, true)));
      model::DecoderStepOptions on_offload = on;
      on_offload.offload_checkpoints = true;
      CHECK(offload.at_loss == static_cast<std::size_t>(model::step_bytes_at_loss(s, on_offload, true)));
      // Every LoRA slot's backward (q, v, o, down in 4 blocks) got its forward's input back, bit for bit: o's kept,
      // q's and v's recomputed by the input norm, down's by SwiGLU.
      CHECK(plain.inputs_checked == 16);
      CHECK(ckpt.inputs_checked == 16);
      CHECK(offload.inputs_checked == 16);
      CHECK(offload.at_loss == ckpt.at_loss - 3 * static_cast<std::size_t>(model::checkpoint_bytes(s, true)));
      CHECK(offload.peak < ckpt.peak);
      // Above what it holds at the loss, the offloading step's peak is the checkpointing one's plus at most the one
      // input it reloaded for a block's recompute (the blocks' backward no longer holds the loss's tensors, so a
      // recomputed block's backward can be the step's peak).
      CHECK(offload.peak - offload.at_loss <=
            ckpt.peak - ckpt.at_loss + static_cast<std::size_t>(model::checkpoint_bytes(s, true)));
      CHECK(offload.step.totals.loss == plain.step.totals.loss);
      CHECK(memtrack_same_bits(offload.step.grad_embeds, plain.step.grad_embeds));
      CHECK(ckpt.at_loss ==
            static_cast<std::size_t>(3 * model::checkpoint_bytes(s, true) + model::block_bytes(s, true) +
                                     (model::step_bytes_at_loss(s, off, true) - 4 * model::block_bytes(s, true))));
      // Peaks: checkpointing lowers it by about three blocks less three inputs; the rest is transient.
      CHECK(ckpt.peak < plain.peak);
      CHECK(plain.peak - plain.at_loss == ckpt.peak - ckpt.at_loss);  // the same loss / last block backward
      CHECK(plain.after == ckpt.after);
      // The same bits.
      CHECK(plain.step.totals.loss == ckpt.step.totals.loss);
      CHECK(memtrack_same_bits(plain.step.grad_embeds, ckpt.step.grad_embeds));
      // bf16 saved activations: three of the four blocks hold theirs at half the bytes; the loss is the same bits.
      const MemTrackRun packed = memtrack_run(config, w, batch, labels, embeds, false, false, true);
      model::DecoderStepOptions pack;
      pack.pack_saved = true;
      CHECK(packed.at_loss == static_cast<std::size_t>(model::step_bytes_at_loss(s, pack, true)));
      CHECK(packed.at_loss == plain.at_loss - 3 * static_cast<std::size_t>(model::block_bytes(s, true) -
                                                                           model::block_bytes(s, true, true)));
      CHECK(packed.at_loss < plain.at_loss * 3 / 4);  // the saved activations are most of a block
      CHECK(packed.step.totals.loss == plain.step.totals.loss);
      CHECK(packed.inputs_checked == 16);
    }
  }
}

TEST_CASE("lora_kept_workspace_elements is lora_workspace_sizes' keep bits and h", "[decoder_host][memory]") {
  for (const float dropout : {0.0f, 0.1f})
    for (const std::int64_t tokens : {1, 7, 80, 1000}) {
      lora::cuda::LoraLinearParams p;
      p.tokens = tokens;
      p.in = 96;
      p.out = 64;
      p.rank = 8;
      p.dropout = dropout;
      p.base = lora::cuda::BaseKind::NF4;
      const auto sizes = lora::cuda::lora_workspace_sizes<float>(p);
      CHECK(model::lora_kept_workspace_elements(tokens, 96, 8, dropout > 0.0f) == sizes.mask + sizes.h);
      // dropout(x), g and the dequantized base are temporaries of one call
      CHECK(sizes.total() == sizes.mask + sizes.h + sizes.xd + sizes.g + sizes.w_dense);
    }
}

namespace {
// A small preset and model for the estimate: 2 samples of 2 frames x 16 tokens + 8 text tokens, LoRA r = 16 on
// q, k, v, o with dropout, fp32 (4-byte values, as the device step runs today).
template <bool Checkpoint>
struct MemTrackPreset : presets::Cpu {
  static constexpr int lora_r = 16;
  static constexpr int lora_alpha = 32;
  using target_set = lora::Basic;
  static constexpr int batch_size = 2;
  static constexpr int num_frames = 2;
  static constexpr bool gradient_checkpointing = Checkpoint;
};
inline constexpr presets::ModelShape kMemTrackModel{.name = "memtrack",
                                                    .hidden = 64,
                                                    .intermediate = 96,
                                                    .layers = 4,
                                                    .heads = 4,
                                                    .kv_heads = 2,
                                                    .head_dim = 16,
                                                    .vocab = 20,
                                                    .vision_hidden = 32,
                                                    .tokens_per_frame = 16,
                                                    .text_tokens = 8};

template <bool Checkpoint>
void check_estimate_against_measured() {
  using P = MemTrackPreset<Checkpoint>;
  INFO("checkpointing " << Checkpoint);
  constexpr presets::MemoryEstimate e = presets::estimate_memory<P>(kMemTrackModel);
  auto config = model::llama_config(64, 96, 4, 4, 2, 20);
  model::Decoder<16, 32> dec(config, model::random_decoder_weights(config, 5),
                             memtrack_slots(P::lora_dropout, {"q_proj", "k_proj", "v_proj", "o_proj"}));
  const model::DecoderHostWeights w = model::export_decoder_weights(dec);
  model::SequenceBatch batch;
  batch.batch = P::batch_size;
  batch.seq_len = kMemTrackModel.tokens_per_sample(P::num_frames);
  REQUIRE(batch.seq_len == 40);
  batch.attention_mask.assign(80, 1);
  batch.attention_mask[79] = 0;
  std::vector<int> labels(80, 3);
  const Matrix embeds = model::random_normal(80, 64, 1.0, 5, 1);
  const MemTrackRun run = memtrack_run(config, w, batch, labels, embeds, Checkpoint);
  // The estimate builds the shape the step runs...
  const model::DecoderMemoryShape s = presets::decoder_memory_shape<P>(kMemTrackModel, 4);
  const model::DecoderMemoryShape measured_shape = memtrack_shape(w, batch);
  for (std::size_t m = 0; m < 7; ++m) {
    CHECK(s.slots[m].lora == measured_shape.slots[m].lora);
    CHECK(s.slots[m].rank == measured_shape.slots[m].rank);
    CHECK(s.slots[m].dropout == measured_shape.slots[m].dropout);
  }
  model::DecoderStepOptions o;
  o.checkpoint_layers = Checkpoint;
  // ... and counts what the step holds when its loss starts: measured through the allocator (size classes), and
  // without the allocator's rounding in the estimate, plus the streamed loss's logits chunk.
  CHECK(run.at_loss == static_cast<std::size_t>(model::step_bytes_at_loss(s, o, true)));
  const double logits = 80.0 * presets::kStreamedLogitsChunk * 4.0;
  CHECK(e.activations == static_cast<double>(model::step_bytes_at_loss(s, o)) + logits);
  CHECK(e.activations_fp32 == e.activations);  // an fp32 preset
  CHECK(e.activations - logits <= static_cast<double>(run.at_loss));
  CHECK(static_cast<double>(run.at_loss) < (e.activations - logits) * 1.1);  // rounding to 256-byte blocks
}
}  // namespace

TEST_CASE("the preset memory estimate counts what the step holds, measured on a small model",
          "[decoder_host][memory]") {
  check_estimate_against_measured<false>();
  check_estimate_against_measured<true>();
  // Checkpointing's saving is the estimate's: three blocks become three inputs.
  constexpr auto plain = presets::estimate_memory<MemTrackPreset<false>>(kMemTrackModel);
  constexpr auto ckpt = presets::estimate_memory<MemTrackPreset<true>>(kMemTrackModel);
  const model::DecoderMemoryShape s = presets::decoder_memory_shape<MemTrackPreset<true>>(kMemTrackModel, 4);
  CHECK(plain.activations - ckpt.activations ==
        3.0 * static_cast<double>(model::block_bytes(s) - model::checkpoint_bytes(s)));
}
