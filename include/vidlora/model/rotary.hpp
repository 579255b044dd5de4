#pragma once
// Rotary position embedding (RoPE) in Hugging Face's rotate-half layout: element i of a head pairs
// with element i + head_dim/2 and both rotate by pos · inv_freq_i, inv_freq_i = θ^(-2i/d) for the
// default type, or scaled as RopeScaling says (linear, dynamic NTK, yarn, llama3; model/rope_scaling.hpp),
// with cos and sin multiplied by the type's attention scaling. Angles are formed in float32 as
// transformers does (inv_freq and pos·inv_freq rounded to float).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <utility>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/model/elementwise.hpp>
#include <vidlora/model/rope_frequencies.hpp>
#include <vidlora/model/rope_scaling.hpp>

namespace vidlora::model {

class RotaryTable {
 public:
  RotaryTable() = default;
  RotaryTable(int head_dim, double theta) : RotaryTable(head_dim, theta, RopeScaling{}, 0) {}
  // max_position_embeddings: the config's (dynamic uses it as the original length, yarn / llama3
  // when rope_parameters has no original_max_position_embeddings).
  RotaryTable(int head_dim, double theta, const RopeScaling& scaling, int max_position_embeddings)
      : RotaryTable(head_dim, rope_frequency_state(scaling, head_dim, theta, max_position_embeddings)) {}
  // From frequencies already held (another decoder's, as it left them: DecoderHostWeights::rope).
  RotaryTable(int head_dim, RopeFrequencyState frequencies)
      : head_dim_(head_dim), frequencies_(std::move(frequencies)) {
    require(head_dim > 0 && head_dim % 2 == 0, "RotaryTable: head_dim {} must be even", head_dim);
    require(frequencies_.current().inv_freq.size() * 2 == static_cast<std::size_t>(head_dim),
            "RotaryTable: {} RoPE frequencies for head_dim {}", frequencies_.current().inv_freq.size(), head_dim);
  }

  int head_dim() const { return head_dim_; }
  float attention_scaling() const { return frequencies_.current().attention_scaling; }
  Eigen::Map<const Vector> inv_freq() const {  // [head_dim/2], as used by the last prepare()
    const std::vector<float>& v = frequencies_.current().inv_freq;
    return {v.data(), static_cast<Eigen::Index>(v.size())};
  }
  // The frequencies from forward to forward (what the CUDA decoder is given to rotate with the same ones).
  const RopeFrequencyState& frequency_state() const { return frequencies_; }

  // Call once per forward with its sequence length (largest position + 1), before apply(): dynamic
  // NTK RoPE recomputes its frequencies as transformers' dynamic_rope_update does (grow past the
  // longest length seen so far; back to the original frequencies below max_position_embeddings).
  // The other types do not depend on the length.
  void prepare(std::int64_t seq_len) {
    if (frequencies_.prepare(seq_len)) {
      cos_.resize(0, 0);  // the tables are rebuilt from the new frequencies on the next reserve()
      sin_.resize(0, 0);
    }
  }

  // Grows the cos / sin tables to cover positions [0, n).
  void reserve(Eigen::Index n) {
    const Eigen::Index have = cos_.rows(), half = head_dim_ / 2;
    if (n <= have) return;
    cos_.conservativeResize(n, half);
    sin_.conservativeResize(n, half);
    for (Eigen::Index p = have; p < n; ++p)
      rope_table_row(frequencies_.current(), static_cast<std::int64_t>(p), cos_.row(p).data(), sin_.row(p).data());
  }

  // Rotates every head of x [tokens, heads·head_dim] in place; row t is at position positions[t].
  // inverse = true applies the transpose rotation (the backward of the forward rotation).
  template <class T>
  void apply(MatrixOf<T>& x, std::span<const Eigen::Index> positions, bool inverse) {
    require(static_cast<Eigen::Index>(positions.size()) == x.rows() && x.cols() % head_dim_ == 0,
            "RotaryTable: {} positions for input {} (head_dim {})", positions.size(), shape_string(x), head_dim_);
    Eigen::Index max_pos = 0;
    for (auto p : positions) max_pos = std::max(max_pos, p);
    reserve(max_pos + 1);
    const Eigen::Index heads = x.cols() / head_dim_, half = head_dim_ / 2;
    for (Eigen::Index t = 0; t < x.rows(); ++t) {
      const Eigen::Index p = positions[static_cast<std::size_t>(t)];
      T* row = x.row(t).data();
      for (Eigen::Index h = 0; h < heads; ++h) {
        T* head = row + h * head_dim_;
        for (Eigen::Index i = 0; i < half; ++i) {
          const T c = static_cast<T>(cos_(p, i)), s = static_cast<T>(sin_(p, i));
          if (inverse) {
            rope_rotate_inverse(head[i], head[i + half], c, s);
          } else {
            rope_rotate(head[i], head[i + half], c, s);
          }
        }
      }
    }
  }

 private:
  int head_dim_ = 0;
  RopeFrequencyState frequencies_;
  Matrix cos_, sin_;  // [positions, head_dim/2]
};

}  // namespace vidlora::model
