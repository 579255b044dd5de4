#pragma once
// The RoPE frequencies a model's forwards rotate with: the inverse frequencies of the head_dim/2 rotation pairs and
// the factor on cos and sin (RopeFrequencies), and RopeFrequencyState, which holds them from one forward to the next
// as transformers' rotary embedding module does: fixed for every type but dynamic NTK, whose frequencies each forward
// updates from its length (dynamic_rope_update). model::RotaryTable (the CPU decoder) and the CUDA decoder
// (DecoderHostWeights::rope) both keep one, so both rotate with the same frequencies forward after forward.
// fmt-free (nvcc includes it); model/rope_scaling.hpp makes the first frequencies from a config's RoPE parameters.

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include <vidlora/model/elementwise.hpp>

namespace vidlora::model {

// Inverse frequencies [head_dim/2] and the cos/sin factor of one RoPE configuration.
struct RopeFrequencies {
  std::vector<float> inv_freq;
  float attention_scaling = 1.0f;
  friend bool operator==(const RopeFrequencies&, const RopeFrequencies&) = default;
};

// The default type's frequencies, θ^(-2i/d) (model::rope_inv_freq).
inline RopeFrequencies default_rope_frequencies(int head_dim, double theta) {
  RopeFrequencies f;
  f.inv_freq.resize(static_cast<std::size_t>(head_dim > 0 ? head_dim / 2 : 0));
  for (std::size_t i = 0; i < f.inv_freq.size(); ++i)
    f.inv_freq[i] = rope_inv_freq(static_cast<int>(i), head_dim, theta);
  return f;
}

// Row `position` of the cos / sin tables of `f` ([head_dim/2] values each): rope_cos_sin times the attention scaling,
// float products. model::RotaryTable and the CUDA backend's rope_tables both build their tables with it.
inline void rope_table_row(const RopeFrequencies& f, std::int64_t position, float* cos, float* sin) {
  for (std::size_t i = 0; i < f.inv_freq.size(); ++i) {
    const RopeCosSin cs = rope_cos_sin(position, f.inv_freq[i]);
    cos[i] = cs.cos * f.attention_scaling;
    sin[i] = cs.sin * f.attention_scaling;
  }
}

// Dynamic NTK's frequencies for a forward of seq_len positions, as transformers computes them inside the forward:
// the length is an int64 tensor there, so the base becomes a float32 tensor and every step below is a float one.
inline std::vector<float> dynamic_ntk_inv_freq(int head_dim, double theta, double factor,
                                               std::int64_t max_position_embeddings, std::int64_t seq_len) {
  const std::int64_t len = seq_len > max_position_embeddings ? seq_len : max_position_embeddings;
  float ratio = static_cast<float>(factor) * static_cast<float>(len);
  ratio = ratio / static_cast<float>(max_position_embeddings);
  ratio = ratio - static_cast<float>(factor - 1);
  const float scaled = std::pow(ratio, static_cast<float>(static_cast<double>(head_dim) / (head_dim - 2)));
  const float base = static_cast<float>(theta) * scaled;
  std::vector<float> inv_freq(static_cast<std::size_t>(head_dim / 2));
  for (int i = 0; i < head_dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);  // arange(0, dim, 2) / dim
    inv_freq[static_cast<std::size_t>(i)] = 1.0f / std::pow(base, exponent);
  }
  return inv_freq;
}

// Dynamic NTK's parameters (RopeFrequencyState recomputes its frequencies from them).
struct DynamicNtkRope {
  int head_dim = 0;
  double theta = 10000.0;
  double factor = 1.0;
  std::int64_t max_position_embeddings = 0;
};

class RopeFrequencyState {
 public:
  RopeFrequencyState() = default;
  // Fixed frequencies (every type but dynamic NTK).
  explicit RopeFrequencyState(RopeFrequencies frequencies) : current_(std::move(frequencies)), original_(current_) {}
  // Dynamic NTK: `initial` are the frequencies at construction (transformers' init, in double).
  RopeFrequencyState(RopeFrequencies initial, const DynamicNtkRope& dynamic)
      : current_(std::move(initial)),
        original_(current_),
        dynamic_(true),
        ntk_(dynamic),
        max_seq_len_cached_(dynamic.max_position_embeddings) {}

  const RopeFrequencies& current() const { return current_; }
  bool dynamic() const { return dynamic_; }

  // Call once per forward with its length (largest position + 1, the KV cache's positions included), before its
  // rotations: dynamic NTK grows its frequencies past the longest length seen so far and goes back to the original
  // ones below max_position_embeddings, as transformers' dynamic_rope_update. Whether the frequencies changed.
  bool prepare(std::int64_t seq_len) {
    if (!dynamic_) return false;
    const std::int64_t cached = max_seq_len_cached_;
    bool changed = false;
    if (seq_len > cached) {
      current_.inv_freq =
          dynamic_ntk_inv_freq(ntk_.head_dim, ntk_.theta, ntk_.factor, ntk_.max_position_embeddings, seq_len);
      max_seq_len_cached_ = seq_len;
      changed = true;
    }
    if (seq_len < ntk_.max_position_embeddings && cached > ntk_.max_position_embeddings) {
      current_ = original_;
      max_seq_len_cached_ = ntk_.max_position_embeddings;
      changed = true;
    }
    return changed;
  }

 private:
  RopeFrequencies current_, original_;
  bool dynamic_ = false;
  DynamicNtkRope ntk_;
  std::int64_t max_seq_len_cached_ = 0;  // dynamic: the longest sequence the frequencies were made for
};

}  // namespace vidlora::model
