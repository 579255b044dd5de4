#pragma once
// Decoder<Rank, Alpha, Base>: a LLaMA / Qwen2 / Qwen3 decoder with every linear layer a slot
// (frozen Base, plus a LoraLinear<Rank, Alpha, Base> on the target modules), forward and backward
// over a right-padded batch, per-layer gradient checkpointing and a KV cache for generation.
//
//   h  = embeds
//   L ×: a = o(attn(rope(q(n1(h))), rope(k(n1(h))), v(n1(h))));  h += a
//        h += down(silu(gate(n2(h))) ⊙ up(n2(h)))
//   out = norm(h);  logits = out · headᵀ (head = embed_tokens when tied)
// Qwen3 applies a per-head RMSNorm to q and k before RoPE; Qwen2 has q/k/v biases.
// Gradients flow to the LoRA parameters and to the input embeddings (so they reach a projector);
// frozen weights get none. Every block runs decoder_layer_forward_steps / decoder_layer_backward_steps
// (model/decoder_layer_steps.hpp) over the CPU executor (model/decoder_layer_cpu.hpp), for training and
// for KV-cache decoding alike; the CUDA executor runs the same steps (model/cuda/decoder_layer.cuh).

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/parallel.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/lora/lora_linear.hpp>
#include <vidlora/lora/target_modules.hpp>
#include <vidlora/loss/cross_entropy_options.hpp>
#include <vidlora/loss/lm_head_cross_entropy.hpp>
#include <vidlora/model/attention.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/decoder_layer_cpu.hpp>
#include <vidlora/model/decoder_layer_steps.hpp>
#include <vidlora/model/elementwise.hpp>
#include <vidlora/model/generation.hpp>
#include <vidlora/model/linear_slot.hpp>
#include <vidlora/model/rms_norm.hpp>
#include <vidlora/model/rotary.hpp>
#include <vidlora/model/sequence_batch.hpp>
#include <vidlora/model/tensor_source.hpp>

namespace vidlora::model {

// The seven linear modules of a decoder block, in HF names and in slot order.
inline constexpr std::array<std::string_view, 7> kDecoderModules{"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"};

struct DecoderOptions {
  std::vector<std::string> target_modules;  // HF module names (or paths) that get LoRA; empty: none
  lora::LoraOptions lora{};                 // dropout, seed, rsLoRA (layer is set per slot)
  bool gradient_checkpointing = false;      // keep only each layer's input; recompute in backward
};

// Activation memory held for the backward pass (bytes).
struct ActivationStats {
  std::size_t after_forward = 0;  // held between forward() and backward()
  std::size_t peak = 0;           // the most held at once during forward + backward
};

template <class Scalar>
struct DecoderLossResultOf {
  double loss = 0.0;
  long valid_tokens = 0;
  MatrixOf<Scalar> grad_embeds;  // d loss / d input embeddings [tokens, hidden]
};

// Next-token targets of a right-padded batch: target of (b, t) is labels(b, t+1); the last position
// and positions whose next label is ignore_index get ignore_index (transformers' shift_labels).
inline std::vector<int> next_token_targets(std::span<const int> labels, const SequenceBatch& batch,
                                           int ignore_index = -100) {
  require(static_cast<Eigen::Index>(labels.size()) == batch.tokens(), "next_token_targets: {} labels for {}x{} tokens",
          labels.size(), batch.batch, batch.seq_len);
  std::vector<int> targets(labels.size(), ignore_index);
  for (Eigen::Index b = 0; b < batch.batch; ++b)
    for (Eigen::Index t = 0; t + 1 < batch.seq_len; ++t)
      targets[static_cast<std::size_t>(b * batch.seq_len + t)] =
          labels[static_cast<std::size_t>(b * batch.seq_len + t + 1)];
  return targets;
}

template <int Rank = 16, int Alpha = 32, lora::FrozenWeight Base = lora::DenseWeight>
class Decoder {
 public:
  using scalar_type = typename Base::scalar_type;
  using matrix_type = MatrixOf<scalar_type>;
  using vector_type = VectorOf<scalar_type>;
  using slot_type = LinearSlot<Rank, Alpha, Base>;
  using lora_type = typename slot_type::lora_type;
  using base_type = Base;
  static constexpr int rank = Rank;
  static constexpr int alpha = Alpha;

  // One cached K/V history per layer (batch of one sequence): [positions, kv_heads·head_dim].
  struct KvCache {
    std::vector<matrix_type> k, v;
    Eigen::Index length = 0;
  };

  // Loads weights by HF key name from `source` (a decoder checkpoint or a LLaVA one; the prefix is
  // detected: model., model.language_model., language_model.model.).
  template <TensorSource S>
  Decoder(const DecoderConfig& config, const S& source, DecoderOptions options = {})
      : config_(config),
        options_(std::move(options)),
        rope_(config.head_dim, config.rope_theta, config.rope_scaling, config.max_position_embeddings) {
    config_.validate();
    for (const auto& t : options_.target_modules)
      require(std::any_of(kDecoderModules.begin(), kDecoderModules.end(),
                          [&](std::string_view m) { return std::string_view(t).ends_with(m); }),
              "Decoder: target module \"{}\" is none of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj",
              t);
    prefix_ = find_prefix(source, {"model.", "model.language_model.", "language_model.model.", ""},
                          "embed_tokens.weight", "decoder embeddings (embed_tokens.weight)");
    const Eigen::Index d = config_.hidden_size, v = config_.vocab_size;
    embed_ = load_matrix<scalar_type>(source, prefix_ + "embed_tokens.weight", v, d);
    final_norm_ = load_vector<scalar_type>(source, prefix_ + "norm.weight", d);
    // The LM head: lm_head.weight when the checkpoint holds it, even where the config ties it (transformers does
    // not tie a head the checkpoint gives, warning when it differs from the embeddings); else the embeddings when
    // tied, else an error naming the missing tensor.
    const std::string head_key =
        (prefix_ == "language_model.model." ? "language_model." : "") + std::string("lm_head.weight");
    if (!config_.tie_word_embeddings || source.contains(head_key)) {
      config_.tie_word_embeddings = false;
      head_ = load_matrix<scalar_type>(source, head_key, v, d);
    }
    layers_.reserve(static_cast<std::size_t>(config_.num_hidden_layers));
    for (int l = 0; l < config_.num_hidden_layers; ++l) layers_.push_back(load_layer(source, l));
    acts_.resize(layers_.size());
    checkpoints_.resize(layers_.size());
  }

  const DecoderConfig& config() const { return config_; }
  const DecoderOptions& options() const { return options_; }
  void set_gradient_checkpointing(bool on) { options_.gradient_checkpointing = on; }
  bool gradient_checkpointing() const { return options_.gradient_checkpointing; }
  const matrix_type& embed_tokens() const { return embed_; }                                       // [vocab, hidden]
  const matrix_type& head_weight() const { return config_.tie_word_embeddings ? embed_ : head_; }  // [vocab, hidden]
  Eigen::Index num_layers() const { return static_cast<Eigen::Index>(layers_.size()); }
  const vector_type& final_norm() const { return final_norm_; }  // [hidden]
  // The RoPE frequencies as the last forward left them (what export_decoder_weights copies for another backend).
  const RopeFrequencyState& rope_frequencies() const { return rope_.frequency_state(); }
  // Layer l's norms and slots (what export_decoder_weights copies for another backend).
  const DecoderLayerWeights<slot_type>& layer_weights(Eigen::Index l) const {
    return layers_.at(static_cast<std::size_t>(l));
  }

  // The slot of `module` ("q_proj" … "down_proj") in layer `layer`.
  slot_type& slot(Eigen::Index layer, std::string_view module) {
    return layers_.at(layer).slots.at(slot_index(module));
  }
  const slot_type& slot(Eigen::Index layer, std::string_view module) const {
    return layers_.at(layer).slots.at(slot_index(module));
  }
  // HF module path of a slot, e.g. "model.layers.3.mlp.up_proj".
  std::string module_path(Eigen::Index layer, std::string_view module) const {
    const bool attn = slot_index(module) < 4;
    return fmt::format("{}layers.{}.{}.{}", prefix_, layer, attn ? "self_attn" : "mlp", module);
  }

  // Calls fn(path, LoraLinear&) for every LoRA slot, layer by layer in kDecoderModules order.
  template <class Fn>
  void for_each_lora(Fn&& fn) {
    for (Eigen::Index l = 0; l < num_layers(); ++l)
      for (std::size_t m = 0; m < kDecoderModules.size(); ++m) {
        auto& s = layers_[static_cast<std::size_t>(l)].slots[m];
        if (s.has_lora()) fn(module_path(l, kDecoderModules[m]), s.lora());
      }
  }
  void zero_grad() {
    for_each_lora([](const std::string&, lora_type& lin) { lin.zero_grad(); });
  }
  Eigen::Index trainable_parameters() {
    Eigen::Index n = 0;
    for_each_lora([&](const std::string&, lora_type& lin) { n += lin.trainable_parameters(); });
    return n;
  }

  // Sets lora_A / lora_B of every LoRA slot from a PEFT adapter (adapter_model.safetensors keys
  // base_model.model.<module path>.lora_A.weight [r, in] and .lora_B.weight [out, r]).
  template <TensorSource S>
  void load_adapter(const S& adapter) {
    std::string prefix;
    bool found = false;
    for_each_lora([&](const std::string& path, lora_type& lin) {
      const std::string tail = path.substr(prefix_.size()) + ".lora_A.weight";
      if (!found) {
        prefix = find_prefix(adapter,
                             {"base_model.model." + prefix_, "base_model.model.model.language_model.",
                              "base_model.model.language_model.model.", "base_model.model.model.", "base_model.model."},
                             tail, "LoRA adapter tensors");
        found = true;
      }
      const std::string stem = prefix + path.substr(prefix_.size());
      lin.lora_A() = load_matrix<scalar_type>(adapter, stem + ".lora_A.weight", Rank, lin.in_features());
      lin.lora_B() = load_matrix<scalar_type>(adapter, stem + ".lora_B.weight", lin.out_features(), Rank);
    });
  }

  // Token embeddings [ids, hidden].
  matrix_type embed(std::span<const int> ids) const {
    matrix_type out(static_cast<Eigen::Index>(ids.size()), config_.hidden_size);
    for (std::size_t i = 0; i < ids.size(); ++i) {
      require(ids[i] >= 0 && ids[i] < config_.vocab_size, "Decoder::embed: token id {} at {} is outside [0, {})",
              ids[i], i, config_.vocab_size);
      out.row(static_cast<Eigen::Index>(i)) = embed_.row(ids[i]);
    }
    return out;
  }

  // embeds: [batch·seq_len, hidden] -> final-norm hidden states [batch·seq_len, hidden]; keeps what
  // backward() needs (or only each layer's input with gradient checkpointing).
  matrix_type forward(const matrix_type& embeds, const SequenceBatch& batch, bool training = true) {
    require(batch.batch > 0 && batch.seq_len > 0, "Decoder::forward: empty batch ({} x {})", batch.batch,
            batch.seq_len);
    require(embeds.rows() == batch.tokens() && embeds.cols() == config_.hidden_size,
            "Decoder::forward: embeds {} do not match batch {} x seq_len {} x hidden {}", shape_string(embeds),
            batch.batch, batch.seq_len, config_.hidden_size);
    require(batch.attention_mask.empty() || static_cast<Eigen::Index>(batch.attention_mask.size()) == batch.tokens(),
            "Decoder::forward: attention mask of {} for {} tokens", batch.attention_mask.size(), batch.tokens());
    begin_positions(batch.seq_len);
    batch_ = batch;
    positions_.resize(static_cast<std::size_t>(batch.tokens()));
    for (Eigen::Index i = 0; i < batch.tokens(); ++i) positions_[static_cast<std::size_t>(i)] = i % batch.seq_len;
    training_ = training;
    checkpointed_ = options_.gradient_checkpointing;
    stats_ = {};
    matrix_type h = embeds;
    std::size_t held = 0;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      auto& layer = layers_[l];
      // The last layer is never checkpointed: backward needs it first, so recomputing it would only cost time.
      if (checkpointed_ && l + 1 < layers_.size()) {
        for (std::size_t m = 0; m < layer.slots.size(); ++m) layer.steps[m] = layer.slots[m].step();
        checkpoints_[l] = h;
        held += bytes(checkpoints_[l]);
        LayerActivations scratch;
        h = layer_forward(layer, h, scratch);
        stats_.peak = std::max(stats_.peak, held + activation_bytes(scratch) + slot_bytes(layer));
        for (auto& s : layer.slots) s.release();
      } else {
        h = layer_forward(layer, h, acts_[l]);
        held += activation_bytes(acts_[l]) + slot_bytes(layer);
        stats_.peak = std::max(stats_.peak, held);
      }
    }
    last_hidden_ = std::move(h);
    matrix_type out = rms_norm<scalar_type>(last_hidden_, final_norm_, config_.rms_norm_eps, &final_inv_);
    held += bytes(last_hidden_) + bytes(final_inv_);
    stats_.after_forward = held;
    stats_.peak = std::max(stats_.peak, held);
    forwarded_ = true;
    return out;
  }

  // logits = hidden · headᵀ  [tokens, vocab].
  matrix_type logits(const matrix_type& hidden) const { return hidden * head_weight().transpose(); }

  // d_hidden: d loss / d forward() output -> d loss / d embeds. LoRA grads accumulate.
  matrix_type backward(const matrix_type& d_hidden) {
    require(forwarded_, "Decoder::backward: call forward() first (once per backward)");
    require(d_hidden.rows() == last_hidden_.rows() && d_hidden.cols() == last_hidden_.cols(),
            "Decoder::backward: gradient {} does not match the forward output {}", shape_string(d_hidden),
            shape_string(last_hidden_));
    forwarded_ = false;
    matrix_type dh = rms_norm_backward<scalar_type>(last_hidden_, final_norm_, final_inv_, d_hidden);
    std::size_t held = stats_.after_forward;
    for (std::size_t l = layers_.size(); l-- > 0;) {
      auto& layer = layers_[l];
      if (checkpointed_ && l + 1 < layers_.size()) {
        for (std::size_t m = 0; m < layer.slots.size(); ++m) layer.slots[m].set_step(layer.steps[m]);
        LayerActivations recomputed;
        layer_forward(layer, checkpoints_[l], recomputed);
        stats_.peak = std::max(stats_.peak, held + activation_bytes(recomputed) + slot_bytes(layer));
        dh = layer_backward(layer, recomputed, dh);
        held -= bytes(checkpoints_[l]);
        checkpoints_[l] = matrix_type();
      } else {
        dh = layer_backward(layer, acts_[l], dh);
        held -= activation_bytes(acts_[l]) + slot_bytes(layer);
        acts_[l] = LayerActivations();
      }
      for (auto& s : layer.slots) s.release();
    }
    return dh;
  }

  // Forward, streamed LM-head cross-entropy on next-token targets (labels shifted left by one within
  // each sequence; -100 ignored), and backward. Returns the loss and d loss / d embeds.
  DecoderLossResultOf<scalar_type> loss_and_backward(const matrix_type& embeds, const SequenceBatch& batch,
                                                     std::span<const int> labels,
                                                     const loss::CrossEntropyOptions& ce = {},
                                                     const loss::LmHeadOptions& lm = {}) {
    const matrix_type hidden = forward(embeds, batch, true);
    const std::vector<int> targets = next_token_targets(labels, batch, ce.ignore_index);
    auto res = loss::lm_head_cross_entropy<scalar_type>(hidden, head_weight(), targets, ce, lm);
    DecoderLossResultOf<scalar_type> out;
    out.loss = res.loss;
    out.valid_tokens = res.valid_tokens;
    out.grad_embeds = backward(res.grad_hidden);
    return out;
  }

  const ActivationStats& activation_stats() const { return stats_; }

  // Bytes of the frozen linear weights of all layers as stored by Base (embeddings and head excluded).
  std::size_t linear_weight_bytes() const {
    std::size_t n = 0;
    for (const auto& layer : layers_)
      for (const auto& s : layer.slots) n += s.weight_bytes();
    return n;
  }

  // Bytes of every frozen tensor as held: linear weights (in Base's format) and biases, norms, the
  // embeddings and the LM head (LoRA parameters not included).
  std::size_t weight_bytes() const {
    std::size_t n = linear_weight_bytes() + bytes(embed_) + bytes(head_) + bytes(final_norm_);
    for (const auto& layer : layers_) {
      n += bytes(layer.norm1) + bytes(layer.norm2) + bytes(layer.q_norm) + bytes(layer.k_norm);
      for (const auto& s : layer.slots) n += s.bias_bytes();
    }
    return n;
  }

  // ---- generation (one sequence) ----

  KvCache make_cache() const {
    KvCache c;
    c.k.assign(layers_.size(), matrix_type(0, config_.kv_features()));
    c.v.assign(layers_.size(), matrix_type(0, config_.kv_features()));
    return c;
  }

  // Runs `embeds` [n, hidden] as the next n positions after what `cache` holds, appends their K/V,
  // and returns their final-norm hidden states [n, hidden]. Nothing is cached for backward.
  matrix_type forward_cached(const matrix_type& embeds, KvCache& cache) {
    require(embeds.cols() == config_.hidden_size, "Decoder::forward_cached: embeds {} need {} columns",
            shape_string(embeds), config_.hidden_size);
    require(cache.k.size() == layers_.size(), "Decoder::forward_cached: cache was not made by make_cache()");
    const Eigen::Index n = embeds.rows(), past = cache.length;
    begin_positions(past + n);
    std::vector<Eigen::Index> pos(static_cast<std::size_t>(n));
    for (Eigen::Index i = 0; i < n; ++i) pos[static_cast<std::size_t>(i)] = past + i;
    matrix_type h = embeds;
    LayerActivations scratch;  // what the steps keep; nothing of it is needed after each block
    for (std::size_t l = 0; l < layers_.size(); ++l) {
      executor_type exec(layers_[l], config_, rope_, pos, cache.k[l], cache.v[l], past);
      h = decoder_layer_forward_steps(exec, std::move(h), scratch);
    }
    cache.length = past + n;
    return rms_norm<scalar_type>(h, final_norm_, config_.rms_norm_eps);
  }

  // Greedy decoding after prompt embeddings [n, hidden]: up to max_new_tokens ids, stopping after
  // eos_token_id (when >= 0). use_cache = false recomputes the whole sequence at every step.
  std::vector<int> generate_greedy(const matrix_type& prompt_embeds, int max_new_tokens, int eos_token_id = -1,
                                   bool use_cache = true) {
    GenerationOptions o;
    o.max_new_tokens = max_new_tokens;
    o.eos_token_id = eos_token_id;
    GenerationResult r;
    if (use_cache) {
      r = generate(*this, prompt_embeds, o);
    } else {
      RecomputingDecoder<Decoder> recompute{*this};
      r = generate(recompute, prompt_embeds, o);
    }
    if (r.finished) r.ids.push_back(r.eos_id);  // this API returns the EOS it stopped at
    return r.ids;
  }
  std::vector<int> generate_greedy(std::span<const int> prompt_ids, int max_new_tokens, int eos_token_id = -1,
                                   bool use_cache = true) {
    return generate_greedy(embed(prompt_ids), max_new_tokens, eos_token_id, use_cache);
  }

 private:
  using Layer = DecoderLayerWeights<slot_type>;
  using executor_type = CpuLayerExecutor<slot_type>;
  using LayerActivations = typename executor_type::saved_type;

  static std::size_t activation_bytes(const LayerActivations& a) {
    std::size_t n = bytes(a.h_in) + bytes(a.h_mid) + bytes(a.inv1) + bytes(a.inv2) + bytes(a.q_raw) + bytes(a.k_raw) +
                    bytes(a.q_inv) + bytes(a.k_inv) + bytes(a.q) + bytes(a.k) + bytes(a.v) + bytes(a.gate) +
                    bytes(a.up);
    for (const auto& p : a.attention) n += bytes(p);
    return n;
  }

  template <class M>
  static std::size_t bytes(const M& m) {
    return static_cast<std::size_t>(m.size()) * sizeof(scalar_type);
  }
  static std::size_t slot_bytes(const Layer& layer) {
    std::size_t n = 0;
    for (const auto& s : layer.slots) n += s.cached_bytes();
    return n;
  }

  static std::size_t slot_index(std::string_view module) {
    for (std::size_t i = 0; i < kDecoderModules.size(); ++i)
      if (kDecoderModules[i] == module) return i;
    fail("Decoder: unknown module \"{}\" (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)", module);
  }

  // Once per forward over positions [0, seq_len): the sliding-window limit and dynamic RoPE's update.
  void begin_positions(Eigen::Index seq_len) {
    require(config_.sliding_window <= 0 || seq_len <= config_.sliding_window,
            "Decoder: a sequence of {} positions is longer than sliding_window {} (sliding-window attention is "
            "only supported for sequences that fit the window, where it equals full attention)",
            seq_len, config_.sliding_window);
    rope_.prepare(static_cast<std::int64_t>(seq_len));
  }

  bool is_lora_target(const std::string& path) const {
    for (const auto& t : options_.target_modules)
      if (lora::matches_target(path, t)) return true;
    return false;
  }

  template <TensorSource S>
  Layer load_layer(const S& source, int l) {
    const Eigen::Index d = config_.hidden_size, inter = config_.intermediate_size;
    const Eigen::Index qf = config_.q_features(), kvf = config_.kv_features();
    const std::string p = fmt::format("{}layers.{}.", prefix_, l);
    Layer layer;
    layer.norm1 = load_vector<scalar_type>(source, p + "input_layernorm.weight", d);
    layer.norm2 = load_vector<scalar_type>(source, p + "post_attention_layernorm.weight", d);
    if (config_.qk_norm()) {
      layer.q_norm = load_vector<scalar_type>(source, p + "self_attn.q_norm.weight", config_.head_dim);
      layer.k_norm = load_vector<scalar_type>(source, p + "self_attn.k_norm.weight", config_.head_dim);
    }
    const std::array<std::pair<Eigen::Index, Eigen::Index>, 7> shapes{
        {{qf, d}, {kvf, d}, {kvf, d}, {d, qf}, {inter, d}, {inter, d}, {d, inter}}};
    for (std::size_t m = 0; m < kDecoderModules.size(); ++m) {
      const std::string path = module_path(l, kDecoderModules[m]);
      const std::string key =
          fmt::format("{}layers.{}.{}.{}", prefix_, l, m < 4 ? "self_attn" : "mlp", kDecoderModules[m]);
      matrix_type w = load_matrix<scalar_type>(source, key + ".weight", shapes[m].first, shapes[m].second);
      const bool has_bias = m < 3 ? config_.qkv_bias() : (m == 3 ? config_.o_bias() : config_.has_mlp_bias());
      std::optional<vector_type> bias;
      if (has_bias) bias = load_vector<scalar_type>(source, key + ".bias", shapes[m].first);
      lora::LoraOptions lo = options_.lora;
      lo.layer = static_cast<std::uint32_t>(l * 7 + static_cast<int>(m));
      layer.slots.emplace_back(std::move(w), std::move(bias), is_lora_target(path), lo);
    }
    return layer;
  }

  // One block over the whole batch; fills `a` with what layer_backward needs.
  matrix_type layer_forward(Layer& layer, const matrix_type& h, LayerActivations& a) {
    executor_type exec(layer, config_, rope_, positions_, batch_, training_);
    return decoder_layer_forward_steps(exec, h, a);
  }

  matrix_type layer_backward(Layer& layer, const LayerActivations& a, const matrix_type& d_out) {
    executor_type exec(layer, config_, rope_, positions_, batch_, training_);
    return decoder_layer_backward_steps(exec, a, d_out);
  }

  DecoderConfig config_;
  DecoderOptions options_;
  RotaryTable rope_;
  std::string prefix_;        // "model." etc.: where the decoder's keys live in the checkpoint
  matrix_type embed_, head_;  // [vocab, hidden]; head_ empty when tied
  vector_type final_norm_;
  std::vector<Layer> layers_;
  // forward state
  SequenceBatch batch_;
  std::vector<Eigen::Index> positions_;
  bool training_ = true, forwarded_ = false, checkpointed_ = false;
  std::vector<LayerActivations> acts_;
  std::vector<matrix_type> checkpoints_;
  matrix_type last_hidden_;
  vector_type final_inv_;
  ActivationStats stats_;
};

}  // namespace vidlora::model
