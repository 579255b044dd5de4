#pragma once
// A right-padded batch of sequences: row b·seq_len + t of every [tokens, ·] matrix is token t of sequence b.

#include <span>
#include <vector>

#include <vidlora/core/matrix.hpp>

namespace vidlora::model {

struct SequenceBatch {
  Eigen::Index batch = 1;
  Eigen::Index seq_len = 0;
  std::vector<int> attention_mask;  // [batch·seq_len], 1 for tokens, 0 for padding; empty: all tokens

  Eigen::Index tokens() const { return batch * seq_len; }
  std::span<const int> mask_of(Eigen::Index b) const {
    if (attention_mask.empty()) return {};
    return std::span<const int>(attention_mask)
        .subspan(static_cast<std::size_t>(b * seq_len), static_cast<std::size_t>(seq_len));
  }
};

}  // namespace vidlora::model
