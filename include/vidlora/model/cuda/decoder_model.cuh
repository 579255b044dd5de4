#pragma once
// DecoderModel: the whole decoder of model::Decoder on the device, for one training step: frozen weights uploaded
// from a DecoderHostWeights (model/decoder_weights_export.hpp fills one from a CPU Decoder; dense fp32 or NF4/FP4
// blocks, dequantized per GEMM as DecoderLayerDeviceWeights allows), LoRA factors and their fp32 gradients on the
// device. loss_and_backward runs decoder_loss_and_backward_steps (model/decoder_model_steps.hpp), what
// Decoder::loss_and_backward computes: every block by DecoderLayerExecutor
// (model/decoder_layer_steps.hpp), the final RMSNorm, the streamed LM-head cross-entropy on next-token targets
// (loss/cuda/lm_head_cross_entropy.cuh: vocabulary chunks, never [T, V]), and the backward through every block,
// accumulating LoRA gradients and returning d loss / d input embeddings (for a projector). fp32; deterministic
// (no order-dependent atomics in the reductions it adds). Gradient checkpointing per block when asked
// (set_gradient_checkpointing; DecoderStepOptions): only each block's input is kept and the block is recomputed
// before its backward, the same bits. Memory: every device tensor of the model (weights, LoRA factors and
// gradients, activations, temporaries, the loss's workspace) comes from one CudaCachingAllocator with a tag naming
// it ("layers.3.self_attn.q_proj.weight", "layers.3.mlp.up_proj", "lm_head.logits"): the caller's (capped at the
// preset's memory: presets::memory_cap_bytes) or, given none, vidlora::cuda::default_device_allocator() (uncapped).
// Asking for more than the cap is a DeviceMemoryError naming the tensor; each step's peak is in
// StepResult::memory and last_step_memory(). Status: compiled for sm_75..90, checked against the CPU Decoder by
// tests/cuda/test_decoder_model.cu, which has not yet run on a GPU (docs/cuda.md).

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <vidlora/core/cuda/cuda_upstream.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/memory_stats.hpp>
#include <vidlora/loss/cuda/lm_head_cross_entropy.cuh>
#include <vidlora/model/cuda/decoder_layer.cuh>
#include <vidlora/model/decoder_host_weights.hpp>
#include <vidlora/model/decoder_model_steps.hpp>
#include <vidlora/model/decoder_step_memory.hpp>

namespace vidlora::model::cuda {

// A right-padded batch: row b·seq_len + t is token t of sequence b (model::SequenceBatch without Eigen).
struct DecoderBatch {
  std::int64_t batch = 1, seq_len = 0;
  std::vector<int> attention_mask;  // [batch·seq_len], 1 token, 0 padding; empty: all tokens
  std::int64_t tokens() const { return batch * seq_len; }
};

// Next-token targets, as model::next_token_targets: target (b, t) = labels(b, t + 1); the last position of every
// sequence gets ignore_index.
inline std::vector<std::int32_t> next_token_targets(const std::vector<int>& labels, const DecoderBatch& batch,
                                                    int ignore_index = -100) {
  vidlora::cuda::check_arg(static_cast<std::int64_t>(labels.size()) == batch.tokens(), "cuda::DecoderModel",
                           std::to_string(labels.size()) + " labels for " + std::to_string(batch.batch) + "x" +
                               std::to_string(batch.seq_len) + " tokens");
  std::vector<std::int32_t> targets(labels.size(), ignore_index);
  for (std::int64_t b = 0; b < batch.batch; ++b)
    for (std::int64_t t = 0; t + 1 < batch.seq_len; ++t)
      targets[static_cast<std::size_t>(b * batch.seq_len + t)] =
          labels[static_cast<std::size_t>(b * batch.seq_len + t + 1)];
  return targets;
}

// Checks a step's input against the model: embeds [rows, cols] for the batch, the mask's length.
inline void check_decoder_input(std::int64_t hidden, std::int64_t rows, std::int64_t cols, const DecoderBatch& batch) {
  vidlora::cuda::check_arg(batch.batch > 0 && batch.seq_len > 0, "cuda::DecoderModel",
                           "empty batch (" + std::to_string(batch.batch) + " x " + std::to_string(batch.seq_len) + ")");
  vidlora::cuda::check_arg(rows == batch.tokens() && cols == hidden, "cuda::DecoderModel",
                           "input embeddings [" + std::to_string(rows) + ", " + std::to_string(cols) +
                               "] do not match batch " + std::to_string(batch.batch) + " x seq_len " +
                               std::to_string(batch.seq_len) + " x hidden " + std::to_string(hidden));
  vidlora::cuda::check_arg(
      batch.attention_mask.empty() || static_cast<std::int64_t>(batch.attention_mask.size()) == batch.tokens(),
      "cuda::DecoderModel",
      "attention mask of " + std::to_string(batch.attention_mask.size()) + " for " + std::to_string(batch.tokens()) +
          " tokens");
}

// A sequence of `positions` against the model's sliding window (model::Decoder::begin_positions' refusal).
inline void check_sliding_window(const DecoderHostWeights& w, std::int64_t positions, const char* who) {
  vidlora::cuda::check_arg(w.sliding_window <= 0 || positions <= w.sliding_window, who,
                           "a sequence of " + std::to_string(positions) + " positions is longer than sliding_window " +
                               std::to_string(w.sliding_window) +
                               " (sliding-window attention is only supported for sequences that fit the window, where "
                               "it equals full attention)");
}

// The layer shape of a model for one batch.
inline DecoderLayerShape decoder_layer_shape(const DecoderHostWeights& w, const DecoderBatch& batch) {
  DecoderLayerShape s;
  s.batch = batch.batch;
  s.seq_len = batch.seq_len;
  s.hidden = w.hidden;
  s.intermediate = w.intermediate;
  s.q_heads = w.q_heads;
  s.kv_heads = w.kv_heads;
  s.head_dim = w.head_dim;
  s.rms_norm_eps = w.rms_norm_eps;
  s.rope = w.rope.current();
  s.qk_norm = w.qk_norm;
  return s;
}

// What a step of this model on this batch holds, tensor by tensor (model/decoder_step_memory.hpp): fp32 values,
// each block's LoRA slots as the weights say (the first block's: every block has the same targets).
inline DecoderMemoryShape decoder_memory_shape(const DecoderHostWeights& w, const DecoderBatch& batch) {
  DecoderMemoryShape s;
  s.batch = batch.batch;
  s.seq_len = batch.seq_len;
  s.hidden = w.hidden;
  s.intermediate = w.intermediate;
  s.q_heads = w.q_heads;
  s.kv_heads = w.kv_heads;
  s.head_dim = w.head_dim;
  s.layers = static_cast<std::int64_t>(w.layers.size());
  s.qk_norm = w.qk_norm;
  s.masked = !batch.attention_mask.empty();
  if (!w.layers.empty())
    for (std::size_t m = 0; m < 7; ++m) {
      const HostLinearWeights& lin = w.layers[0].linears[m];
      s.slots[m] = {lin.has_lora(), lin.rank, lin.dropout > 0.0f};
    }
  return s;
}

}  // namespace vidlora::model::cuda

#if VIDLORA_KERNELS
namespace vidlora::model::cuda {

class DecoderModel {
 public:
  // One trainable tensor (a LoRA factor): value and gradient on the device, `size` floats each.
  struct LoraTensor {
    std::string name;  // "layers.3.mlp.up_proj.lora_A"
    float* value = nullptr;
    float* grad = nullptr;
    std::int64_t size = 0;
  };
  struct StepResult {
    double loss = 0.0;
    long valid_tokens = 0;
    DeviceTensor grad_embeds;  // d loss / d input embeddings [tokens, hidden] (from the model's allocator)
    MemoryStats memory;        // the allocator after the step; peaks since the step began
  };

  // allocator: where every device tensor of the model comes from (it must outlive the model and the step results);
  // null: vidlora::cuda::default_device_allocator(). options: gradient checkpointing (also set_gradient_checkpointing).
  DecoderModel(vidlora::cuda::GemmRunner& gemm, const DecoderHostWeights& w, cudaStream_t stream = nullptr,
               vidlora::cuda::CudaCachingAllocator* allocator = nullptr, DecoderStepOptions options = {})
      : gemm_(gemm),
        host_(shape_of(w)),
        stream_(stream),
        allocator_(allocator ? allocator : &vidlora::cuda::default_device_allocator()),
        options_(options) {
    vidlora::cuda::require_legacy_ordered_stream(stream, "cuda::DecoderModel");
    check_decoder_host_weights(w);
    final_norm_ = vidlora::cuda::DeviceBuffer<float>(allocator_, w.final_norm, "norm.weight");
    head_ = vidlora::cuda::DeviceBuffer<float>(allocator_, w.head, "lm_head.weight");
    for (std::size_t l = 0; l < w.layers.size(); ++l) {
      lora_first_.push_back(lora_.size());
      layers_.push_back(std::make_unique<Layer>(w, l, lora_, allocator_));
    }
    lora_first_.push_back(lora_.size());
    rng_.resize(layers_.size());
    pinned_.resize(layers_.size());
    zero_grad();
  }

  // Keep only each block's input in the forward and recompute the block before its backward (all but the last
  // block); the loss and every gradient are the same bits either way.
  void set_gradient_checkpointing(bool on) { options_.checkpoint_layers = on; }
  bool gradient_checkpointing() const { return options_.checkpoint_layers; }
  // With checkpointing: keep the blocks' inputs in pinned host memory between their forward and their recompute
  // (copied on the model's stream, not overlapped with compute yet). The pinned buffers stay for the next step.
  void set_offload_checkpoints(bool on) { options_.offload_checkpoints = on; }
  // Every GEMM of the step (the blocks' frozen bases and LoRA pieces, the LM head's logits and d hidden): fp32
  // (the default; the CPU's results to 1e-5) or TF32 tensor cores (sm_80+: 10-bit mantissa products, fp32
  // accumulation, as PyTorch's allow_tf32; cuBLASLt runs fp32 where the GPU has no TF32).
  void set_gemm_compute(vidlora::cuda::Compute c) { compute_ = c; }
  vidlora::cuda::Compute gemm_compute() const { return compute_; }
  // The blocks' frozen GEMMs (every slot's base, forward and input gradient) on 16-bit operands: BF16 or F16 tensor
  // cores with fp32 accumulation and outputs (lora::cuda::LoraLinearParams::base_operands), or F32 (the default: at
  // the compute above). The LoRA pieces and the LM head keep that compute.
  void set_base_operands(vidlora::cuda::DType t) { base_operands_ = t; }
  vidlora::cuda::DType base_operands() const { return base_operands_; }
  // With 16-bit operands, the norms, RoPE and SwiGLU write their output's 16-bit rounding for the GEMM or attention
  // after them (DecoderLayerExecutor::set_producer_rounding; on by default, the same bits as off).
  void set_producer_rounding(bool on) { producer_rounding_ = on; }
  bool offload_checkpoints() const { return options_.offload_checkpoints; }
  // Keep every block's saved activations but the last's in bf16 between its forward and its backward (without
  // checkpointing; DecoderStepOptions::pack_saved): half their memory; the loss is the same bits, the gradients
  // those of activations rounded to bf16.
  void set_pack_saved(bool on) { options_.pack_saved = on; }
  bool pack_saved() const { return options_.pack_saved; }
  std::size_t pinned_host_bytes() const {
    std::size_t n = 0;
    for (const PinnedHost& p : pinned_) n += p.bytes;
    return n;
  }

  // The allocator every tensor of the model comes from, its stats now, and those at the end of the last step
  // (peak_allocated_bytes / peak_reserved_bytes: that step's peaks).
  vidlora::cuda::CudaCachingAllocator& allocator() const { return *allocator_; }
  MemoryStats memory_stats() const { return allocator_->stats(); }
  const MemoryStats& last_step_memory() const { return last_step_memory_; }

  std::int64_t num_layers() const { return static_cast<std::int64_t>(layers_.size()); }
  cudaStream_t stream() const { return stream_; }
  std::int64_t hidden() const { return host_.hidden; }
  std::int64_t vocab() const { return host_.vocab; }
  // Every LoRA factor, layer by layer, slots in q..down order, A then B (model::Decoder::for_each_lora's order).
  const std::vector<LoraTensor>& lora_tensors() const { return lora_; }
  // Block l's entries of lora_tensors(): [first, second).
  std::pair<std::size_t, std::size_t> lora_tensors_of_layer(std::size_t l) const {
    return {lora_first_.at(l), lora_first_.at(l + 1)};
  }
  // Called by loss_and_backward once block l's backward is enqueued on stream() (its LoRA gradients are then final for
  // the call), from the last block down to block 0; empty (the default): nothing. The CUDA trainer's step starts the
  // sums of those gradients over the ranks there, while the blocks below run (train/cuda/decoder_step.cuh).
  void set_after_layer_backward(std::function<void(std::size_t)> f) { after_layer_backward_ = std::move(f); }

  // Every LoRA slot's dropout step (lora::LoraLinear::step()), one per slot in lora_tensors()' order (a training
  // forward with dropout uses it and advances it, as the CPU layer does); set: from the CPU layers before a step.
  std::vector<std::uint64_t> dropout_steps() const {
    std::vector<std::uint64_t> steps;
    for (const auto& layer : layers_)
      for (const DeviceLinear& lin : layer->weights.linears)
        if (lin.has_lora) steps.push_back(lin.step);
    return steps;
  }
  void set_dropout_steps(const std::vector<std::uint64_t>& steps) {
    vidlora::cuda::check_arg(
        steps.size() * 2 == lora_.size(), "cuda::DecoderModel::set_dropout_steps",
        std::to_string(steps.size()) + " steps for " + std::to_string(lora_.size() / 2) + " LoRA slots");
    std::size_t i = 0;
    for (auto& layer : layers_)
      for (DeviceLinear& lin : layer->weights.linears)
        if (lin.has_lora) lin.step = steps[i++];
  }

  void zero_grad() {
    for (const LoraTensor& t : lora_)
      VIDLORA_CUDA_CHECK(cudaMemsetAsync(t.grad, 0, static_cast<std::size_t>(t.size) * sizeof(float), stream_));
  }

  // embeds: device [batch·seq_len, hidden]; labels: host [batch·seq_len] (shifted here to next-token targets,
  // ignore_index as options.ignore_index). Accumulates LoRA gradients; returns the loss (as
  // Decoder::loss_and_backward) and d loss / d embeds. Synchronizes the stream once (the loss).
  StepResult loss_and_backward(const DeviceTensor& embeds, const DecoderBatch& batch, const std::vector<int>& labels,
                               const loss::cuda::LmHeadCeOptions& options = {}) {
    check_decoder_input(host_.hidden, embeds.rows, embeds.cols, batch);
    begin_positions(batch.seq_len, "cuda::DecoderModel");
    const std::vector<std::int32_t> targets = next_token_targets(labels, batch, options.ignore_index);
    allocator_->reset_peak();
    StepResult r;
    {
      loss::cuda::LmHeadCeOptions ce = options;
      ce.compute = compute_;
      ModelExecutor exec(*this, decoder_layer_shape(host_, batch), batch.attention_mask, targets, ce);
      DecoderStepOf<DeviceTensor> step = decoder_loss_and_backward_steps(exec, embeds, options_);
      r.loss = step.totals.loss;
      r.valid_tokens = step.totals.valid_tokens;
      r.grad_embeds = std::move(step.grad_embeds);
    }
    last_step_memory_ = r.memory = allocator_->stats();
    return r;
  }

  // The evaluation's loss (no backward, no dropout): what Decoder::forward(embeds, batch, false) followed by the
  // LM-head cross-entropy gives, by decoder_loss_steps (model/decoder_model_steps.hpp). Nothing is accumulated and
  // no dropout stream moves; one block's state is alive at a time.
  DecoderLossTotals loss(const DeviceTensor& embeds, const DecoderBatch& batch, const std::vector<int>& labels,
                         const loss::cuda::LmHeadCeOptions& options = {}) {
    check_decoder_input(host_.hidden, embeds.rows, embeds.cols, batch);
    begin_positions(batch.seq_len, "cuda::DecoderModel");
    const std::vector<std::int32_t> targets = next_token_targets(labels, batch, options.ignore_index);
    loss::cuda::LmHeadCeOptions ce = options;
    ce.compute = compute_;
    ModelExecutor exec(*this, decoder_layer_shape(host_, batch), batch.attention_mask, targets, ce,
                       /*training=*/false);
    return decoder_loss_steps(exec, embeds);
  }

  // Generation's KV cache (one sequence): every layer's K and V [capacity, kv_features] on the device, from the
  // model's allocator ("kv_cache.layers.3.k"). A copy is a new cache holding the same positions (beam search copies
  // a parent's); it grows when a forward_cached needs more positions than it has room for.
  class KvCache {
   public:
    KvCache() = default;
    KvCache(KvCache&&) noexcept = default;
    KvCache& operator=(KvCache&&) noexcept = default;
    KvCache(const KvCache& o)
        : allocator_(o.allocator_), stream_(o.stream_), kv_features_(o.kv_features_), k_(o.k_.size()), v_(o.v_.size()) {
      reserve(o.capacity_);
      copy_rows(o, o.length_);
      length_ = o.length_;
    }
    KvCache& operator=(const KvCache& o) {
      if (this != &o) *this = KvCache(o);
      return *this;
    }
    std::int64_t length() const { return length_; }      // positions held
    std::int64_t capacity() const { return capacity_; }  // positions there is room for
    std::size_t layers() const { return k_.size(); }
    std::size_t bytes() const {
      return 2 * k_.size() * static_cast<std::size_t>(capacity_ * kv_features_) * sizeof(float);
    }

   private:
    friend class DecoderModel;
    KvCache(vidlora::cuda::CudaCachingAllocator* allocator, cudaStream_t stream, std::size_t layers,
            std::int64_t kv_features)
        : allocator_(allocator), stream_(stream), kv_features_(kv_features), k_(layers), v_(layers) {}
    // Room for `positions` (the rows held are kept).
    void reserve(std::int64_t positions) {
      if (positions <= capacity_) return;
      KvCache grown(allocator_, stream_, k_.size(), kv_features_);
      grown.capacity_ = positions;
      const std::size_t count = static_cast<std::size_t>(positions * kv_features_);
      for (std::size_t l = 0; l < k_.size(); ++l) {
        const std::string layer = "kv_cache.layers." + std::to_string(l);
        grown.k_[l] = vidlora::cuda::DeviceBuffer<float>(allocator_, count, layer + ".k");
        grown.v_[l] = vidlora::cuda::DeviceBuffer<float>(allocator_, count, layer + ".v");
      }
      grown.copy_rows(*this, length_);
      grown.length_ = length_;
      *this = std::move(grown);
    }
    void copy_rows(const KvCache& from, std::int64_t rows) {
      const std::size_t bytes = static_cast<std::size_t>(rows * kv_features_) * sizeof(float);
      if (!bytes) return;
      for (std::size_t l = 0; l < k_.size(); ++l) {
        VIDLORA_CUDA_CHECK(cudaMemcpyAsync(k_[l].data(), from.k_[l].data(), bytes, cudaMemcpyDeviceToDevice, stream_));
        VIDLORA_CUDA_CHECK(cudaMemcpyAsync(v_[l].data(), from.v_[l].data(), bytes, cudaMemcpyDeviceToDevice, stream_));
      }
    }
    vidlora::cuda::CudaCachingAllocator* allocator_ = nullptr;
    cudaStream_t stream_ = nullptr;
    std::int64_t kv_features_ = 0, capacity_ = 0, length_ = 0;
    std::vector<vidlora::cuda::DeviceBuffer<float>> k_, v_;
  };

  KvCache make_cache() const { return KvCache(allocator_, stream_, layers_.size(), host_.kv_heads * host_.head_dim); }

  // Runs `embeds` [n, hidden] (device) as the next n positions after what `cache` holds, appends their K/V, and
  // returns their final-norm hidden states [n, hidden]: model::Decoder::forward_cached on the device (the slots
  // infer: no dropout; nothing is kept for a backward).
  DeviceTensor forward_cached(const DeviceTensor& embeds, KvCache& cache) {
    vidlora::cuda::check_arg(embeds.rows > 0 && embeds.cols == host_.hidden, "cuda::DecoderModel::forward_cached",
                             "embeds [" + std::to_string(embeds.rows) + ", " + std::to_string(embeds.cols) +
                                 "] need rows and " + std::to_string(host_.hidden) + " columns");
    vidlora::cuda::check_arg(cache.layers() == layers_.size() && cache.allocator_ == allocator_,
                             "cuda::DecoderModel::forward_cached",
                             "the cache was not made by this model's make_cache()");
    const std::int64_t n = embeds.rows, past = cache.length_;
    begin_positions(past + n, "cuda::DecoderModel::forward_cached");
    if (past + n > cache.capacity_)  // room for a caption's worth of tokens after a prompt, then by quarters
      cache.reserve(std::max(past + n + kCacheHeadroom, cache.capacity_ + cache.capacity_ / 4));
    DecoderBatch one;
    one.seq_len = n;
    const DecoderLayerShape shape = decoder_layer_shape(host_, one);
    DeviceTensor h;
    tables_.prepare(shape, past, {}, stream_);  // once for every block of this forward
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      const LayerKvCache view{cache.k_[l].data(), cache.v_[l].data(), cache.capacity_, past};
      DecoderLayerExecutor exec(gemm_, layers_[l]->weights, shape, view, stream_,
                                DecoderLayerMemory{allocator_, "layers." + std::to_string(l) + "."}, compute_,
                                &tables_);
      exec.set_base_operands(base_operands_);
      exec.set_producer_rounding(producer_rounding_);
      DecoderLayerExecutor::saved_type scratch;
      h = l == 0 ? decoder_layer_forward_steps(exec, embeds, scratch)
                 : decoder_layer_forward_steps(exec, std::move(h), scratch);
    }
    cache.length_ = past + n;
    return final_norm(h, nullptr);
  }

  // LM-head logits of hidden states [rows, hidden] (device), downloaded: [rows, vocab] row-major.
  std::vector<float> logits(const DeviceTensor& hidden) {
    vidlora::cuda::check_arg(
        hidden.cols == host_.hidden, "cuda::DecoderModel::logits",
        "hidden states of " + std::to_string(hidden.cols) + " columns for a model of " + std::to_string(host_.hidden));
    DeviceTensor out(allocator_, hidden.rows, host_.vocab, "lm_head.logits");
    vidlora::cuda::GemmProblem g =
        vidlora::cuda::linear_forward(hidden.rows, host_.hidden, host_.vocab, vidlora::cuda::DType::F32);
    g.compute = compute_;
    gemm_.run(g, hidden.data(), head_.data(), out.data(), 1.0f, 0.0f, nullptr, stream_);
    std::vector<float> host(static_cast<std::size_t>(out.size()));
    if (!host.empty())
      VIDLORA_CUDA_CHECK(
          cudaMemcpyAsync(host.data(), out.data(), host.size() * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    VIDLORA_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return host;
  }

 private:
  // The model executor of decoder_loss_and_backward_steps (model/decoder_model_steps.hpp) for one batch: a
  // DecoderLayerExecutor per block (kept from its forward to its backward), the final norm and the streamed loss.
  class ModelExecutor {
   public:
    using tensor_type = DeviceTensor;
    using rows_type = DeviceTensor;
    using saved_type = DecoderLayerExecutor::saved_type;

    // training false: an evaluation's forward (no dropout; decoder_loss_steps).
    ModelExecutor(DecoderModel& model, const DecoderLayerShape& shape, const std::vector<int>& key_mask,
                  const std::vector<std::int32_t>& targets, const loss::cuda::LmHeadCeOptions& options,
                  bool training = true)
        : model_(model),
          shape_(shape),
          key_mask_(key_mask),
          targets_(targets),
          options_(options),
          training_(training),
          layers_(model.layers_.size()),
          offloaded_(model.layers_.size()) {}

    std::size_t num_layers() const { return layers_.size(); }
    DecoderLayerExecutor& layer(std::size_t l) {
      if (!layers_[l]) {
        // Built on the first block's call of a step (and again only if something changed them since)
        model_.tables_.prepare(shape_, 0, key_mask_, model_.stream_);
        layers_[l] = std::make_unique<DecoderLayerExecutor>(
            model_.gemm_, model_.layers_[l]->weights, shape_, key_mask_, training_, model_.stream_,
            DecoderLayerMemory{model_.allocator_, "layers." + std::to_string(l) + "."}, model_.compute_,
            &model_.tables_);
      }
      layers_[l]->set_base_operands(model_.base_operands_);
      layers_[l]->set_producer_rounding(model_.producer_rounding_);
      return *layers_[l];
    }
    void release_layer(std::size_t l) { layers_[l].reset(); }
    void layer_backward_done(std::size_t l) {
      if (model_.after_layer_backward_) model_.after_layer_backward_(l);
    }
    // A checkpointed block's recompute draws the LoRA dropout masks of its first forward.
    void save_layer_rng(std::size_t l) {
      for (std::size_t m = 0; m < 7; ++m) model_.rng_[l][m] = model_.layers_[l]->weights.linears[m].step;
    }
    void restore_layer_rng(std::size_t l) {
      for (std::size_t m = 0; m < 7; ++m) model_.layers_[l]->weights.linears[m].step = model_.rng_[l][m];
    }
    // The copy is queued on the stream before any kernel that reuses the freed block: stream order keeps it safe.
    void offload_input(std::size_t l, DeviceTensor x) {
      PinnedHost& host = model_.pinned_.at(l);
      const std::size_t bytes = static_cast<std::size_t>(x.size()) * sizeof(float);
      host.reserve(bytes, model_.stream_);
      if (bytes)
        VIDLORA_CUDA_CHECK(cudaMemcpyAsync(host.data, x.data(), bytes, cudaMemcpyDeviceToHost, model_.stream_));
      offloaded_[l] = {x.rows, x.cols};
    }
    void pack_saved(std::size_t l, saved_type& a) {
      const std::string tag = "layers." + std::to_string(l) + ".saved_bf16";
      for_each_saved_activation(a, [&](DeviceTensor& t) { pack_bf16(t, model_.allocator_, tag, model_.stream_); });
    }
    void unpack_saved(std::size_t l, saved_type& a) {
      const std::string tag = "layers." + std::to_string(l) + ".saved";
      for_each_saved_activation(a, [&](DeviceTensor& t) { unpack_bf16(t, model_.allocator_, tag, model_.stream_); });
    }
    DeviceTensor reload_input(std::size_t l) {
      const auto [rows, cols] = offloaded_.at(l);
      DeviceTensor x(model_.allocator_, rows, cols, "layers." + std::to_string(l) + ".input");
      if (x.size())
        VIDLORA_CUDA_CHECK(cudaMemcpyAsync(x.data(), model_.pinned_.at(l).data,
                                           static_cast<std::size_t>(x.size()) * sizeof(float), cudaMemcpyHostToDevice,
                                           model_.stream_));
      return x;
    }

    DeviceTensor copy(const DeviceTensor& x) const {
      DeviceTensor y(model_.allocator_, x.rows, x.cols, "hidden");
      if (x.size())
        VIDLORA_CUDA_CHECK(cudaMemcpyAsync(y.data(), x.data(), static_cast<std::size_t>(x.size()) * sizeof(float),
                                           cudaMemcpyDeviceToDevice, model_.stream_));
      return y;
    }
    DeviceTensor final_norm(const DeviceTensor& h, DeviceTensor* inv) const { return model_.final_norm(h, inv); }
    DeviceTensor final_norm_backward(const DeviceTensor& h, const DeviceTensor& inv, const DeviceTensor& dy) const {
      DeviceTensor dx(model_.allocator_, h.rows, h.cols, "norm.grad");
      RmsNormParams p{
          h.data(), model_.final_norm_.data(), nullptr, const_cast<float*>(inv.data()), dy.data(), dx.data(), h.rows,
          h.cols,   model_.host_.rms_norm_eps, {}};
      model::cuda::rms_norm_backward(p, model_.stream_);
      return dx;
    }
    DecoderLossTotals lm_head_loss(const DeviceTensor& hidden, DeviceTensor& d_hidden) {
      d_hidden = DeviceTensor(model_.allocator_, hidden.rows, hidden.cols, "lm_head.grad");
      const loss::cuda::LmHeadCeShape shape{hidden.rows, hidden.cols, model_.host_.vocab, hidden.cols, hidden.rows};
      const loss::cuda::LmHeadCeResult ce =
          loss::cuda::lm_head_cross_entropy(model_.gemm_, hidden.data(), model_.head_.data(), shape, targets_, options_,
                                            d_hidden.data(), model_.stream_, model_.allocator_);
      return {ce.loss, ce.valid_tokens};
    }
    DecoderLossTotals lm_head_loss_forward(const DeviceTensor& hidden) {
      const loss::cuda::LmHeadCeShape shape{hidden.rows, hidden.cols, model_.host_.vocab, hidden.cols, hidden.rows};
      const loss::cuda::LmHeadCeResult ce =
          loss::cuda::lm_head_cross_entropy(model_.gemm_, hidden.data(), model_.head_.data(), shape, targets_, options_,
                                            nullptr, model_.stream_, model_.allocator_);
      return {ce.loss, ce.valid_tokens};
    }

   private:
    DecoderModel& model_;
    DecoderLayerShape shape_;
    const std::vector<int>& key_mask_;
    const std::vector<std::int32_t>& targets_;
    loss::cuda::LmHeadCeOptions options_;
    bool training_ = true;
    std::vector<std::unique_ptr<DecoderLayerExecutor>> layers_;
    std::vector<std::pair<std::int64_t, std::int64_t>> offloaded_;  // [rows, cols] of each offloaded input
  };

  // Page-locked host memory for an offloaded block input (grows, never shrinks).
  struct PinnedHost {
    void* data = nullptr;
    std::size_t bytes = 0;
    PinnedHost() = default;
    PinnedHost(PinnedHost&& o) noexcept : data(std::exchange(o.data, nullptr)), bytes(std::exchange(o.bytes, 0)) {}
    PinnedHost& operator=(PinnedHost&&) = delete;
    ~PinnedHost() {
      if (!data) return;
      // A backward's reload from it may still be queued (a step that threw, a model destroyed without a synchronize):
      // wait for it rather than count on cudaFreeHost to (which its documentation does not promise).
      (void)cudaDeviceSynchronize();
      (void)cudaFreeHost(data);
    }
    void reserve(std::size_t n, cudaStream_t stream) {
      if (n <= bytes) return;
      if (data) {
        VIDLORA_CUDA_CHECK(cudaStreamSynchronize(stream));  // a previous step's copy may still read it
        VIDLORA_CUDA_CHECK(cudaFreeHost(data));
      }
      data = nullptr;
      bytes = 0;
      VIDLORA_CUDA_CHECK(cudaMallocHost(&data, n));
      bytes = n;
    }
  };

  // The device copies of one block's weights, wired into the executor's DecoderLayerDeviceWeights.
  struct Layer {
    vidlora::cuda::DeviceBuffer<float> norm1, norm2, q_norm, k_norm;
    vidlora::cuda::DeviceBuffer<float> w[7], bias[7], a[7], b[7], grad_a[7], grad_b[7], absmax[7], nested[7];
    vidlora::cuda::DeviceBuffer<std::uint8_t> packed[7], qabsmax[7];
    DecoderLayerDeviceWeights weights;

    Layer(const DecoderHostWeights& host, std::size_t l, std::vector<LoraTensor>& lora,
          vidlora::cuda::CudaCachingAllocator* alloc) {
      const HostLayerWeights& src = host.layers[l];
      const std::string layer = "layers." + std::to_string(l) + ".";
      auto up = [alloc](const auto& v, const std::string& tag) {
        using T = typename std::decay_t<decltype(v)>::value_type;
        return vidlora::cuda::DeviceBuffer<T>(alloc, v, tag);
      };
      norm1 = up(src.norm1, layer + "input_layernorm.weight");
      norm2 = up(src.norm2, layer + "post_attention_layernorm.weight");
      weights.norm1 = norm1.data();
      weights.norm2 = norm2.data();
      if (host.qk_norm) {
        q_norm = up(src.q_norm, layer + "self_attn.q_norm.weight");
        k_norm = up(src.k_norm, layer + "self_attn.k_norm.weight");
        weights.q_norm = q_norm.data();
        weights.k_norm = k_norm.data();
      }
      for (std::size_t m = 0; m < 7; ++m) {
        const HostLinearWeights& s = src.linears[m];
        const std::string name = host_slot_name(l, m);
        DeviceLinear& lin = weights.linears[m];
        lora::cuda::LoraLinearParams& p = lin.params;
        p.in = s.in;
        p.out = s.out;
        if (s.quantized) {
          packed[m] = up(s.q.packed, name + ".weight");
          p.base = s.q.nf4 ? lora::cuda::BaseKind::NF4 : lora::cuda::BaseKind::FP4;
          p.qw.packed = packed[m].data();
          if (s.q.qabsmax.empty()) {
            absmax[m] = up(s.q.absmax, name + ".weight.absmax");
            p.qw.absmax = absmax[m].data();
          } else {
            qabsmax[m] = up(s.q.qabsmax, name + ".weight.quant_absmax");
            nested[m] = up(s.q.nested_absmax, name + ".weight.nested_absmax");
            p.qw.qabsmax = qabsmax[m].data();
            p.qw.nested_absmax = nested[m].data();
            p.qw.absmax_offset = s.q.absmax_offset;
          }
          p.qw.numel = s.out * s.in;
          int log2 = 0;
          while ((1 << log2) < s.q.blocksize) ++log2;
          p.qw.blocksize_log2 = log2;
        } else {
          w[m] = up(s.w, name + ".weight");
          p.base = lora::cuda::BaseKind::Dense;
          p.w = w[m].data();
        }
        if (!s.bias.empty()) {
          bias[m] = up(s.bias, name + ".bias");
          p.bias = bias[m].data();
        }
        lin.has_lora = s.has_lora();
        lin.layer_index = s.layer_index;
        lin.step = s.step;
        if (!lin.has_lora) continue;
        a[m] = up(s.lora_a, name + ".lora_A.weight");
        b[m] = up(s.lora_b, name + ".lora_B.weight");
        grad_a[m] = vidlora::cuda::DeviceBuffer<float>(alloc, s.lora_a.size(), name + ".lora_A.grad");
        grad_b[m] = vidlora::cuda::DeviceBuffer<float>(alloc, s.lora_b.size(), name + ".lora_B.grad");
        p.rank = s.rank;
        p.a = a[m].data();
        p.b = b[m].data();
        p.grad_a = grad_a[m].data();
        p.grad_b = grad_b[m].data();
        p.scaling = s.scaling;
        p.dropout = s.dropout;
        p.seed = s.seed;
        lora.push_back({name + ".lora_A", a[m].data(), grad_a[m].data(), static_cast<std::int64_t>(s.lora_a.size())});
        lora.push_back({name + ".lora_B", b[m].data(), grad_b[m].data(), static_cast<std::int64_t>(s.lora_b.size())});
      }
    }
  };

  // Once per forward over positions [0, positions), as model::Decoder's begin_positions: the sliding-window limit and
  // dynamic NTK RoPE's update of the frequencies (the tables follow them: LayerTablesHost compares them).
  void begin_positions(std::int64_t positions, const char* who) {
    check_sliding_window(host_, positions, who);
    host_.rope.prepare(positions);
  }

  // The shape fields only (the tensors live on the device).
  static DecoderHostWeights shape_of(const DecoderHostWeights& w) {
    DecoderHostWeights s;
    s.hidden = w.hidden;
    s.intermediate = w.intermediate;
    s.q_heads = w.q_heads;
    s.kv_heads = w.kv_heads;
    s.head_dim = w.head_dim;
    s.vocab = w.vocab;
    s.rms_norm_eps = w.rms_norm_eps;
    s.rope = w.rope;
    s.qk_norm = w.qk_norm;
    s.sliding_window = w.sliding_window;
    return s;
  }

  // The final RMSNorm of h [rows, hidden]; its 1/rms into *inv (null: not kept).
  DeviceTensor final_norm(const DeviceTensor& h, DeviceTensor* inv) const {
    DeviceTensor y(allocator_, h.rows, h.cols, "norm");
    if (inv) *inv = DeviceTensor(allocator_, h.rows, 1, "norm.inv");
    RmsNormParams p{h.data(), final_norm_.data(), y.data(), inv ? inv->data() : nullptr, nullptr, nullptr, h.rows,
                    h.cols,   host_.rms_norm_eps, {}};
    model::cuda::rms_norm(p, stream_);
    return y;
  }

  static constexpr std::int64_t kCacheHeadroom = 64;  // positions a cache gains beyond the first forward's

  vidlora::cuda::GemmRunner& gemm_;
  DecoderHostWeights host_;  // the shape and the RoPE frequencies only
  cudaStream_t stream_ = nullptr;
  vidlora::cuda::CudaCachingAllocator* allocator_ = nullptr;  // outlives every buffer below
  DecoderStepOptions options_;
  vidlora::cuda::Compute compute_ = vidlora::cuda::Compute::F32;
  vidlora::cuda::DType base_operands_ = vidlora::cuda::DType::F32;
  bool producer_rounding_ = true;
  MemoryStats last_step_memory_{};
  vidlora::cuda::DeviceBuffer<float> final_norm_, head_;
  LayerTablesHost tables_;  // the blocks' position and RoPE tables and mask, built once per step or cached forward
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<LoraTensor> lora_;
  std::vector<std::size_t> lora_first_;  // block l's LoRA tensors: lora_[lora_first_[l], lora_first_[l + 1])
  std::function<void(std::size_t)> after_layer_backward_;
  std::vector<std::array<std::uint64_t, 7>> rng_;  // save_layer_rng: each block's dropout steps
  std::vector<PinnedHost> pinned_;                 // offload_checkpoints: each block's input between its passes
};

}  // namespace vidlora::model::cuda
#endif
