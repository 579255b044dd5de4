#pragma once
// Splicing projected frame tokens into a prompt: the placeholder token(s) of the prompt are replaced
// by the visual tokens, and the sequences of a batch are right-padded into one [batch·T, D] matrix.
// Labels: -100 for every prompt position (text and visual), the answer ids for the answer, -100 for
// padding — the model learns the caption only.

#include <algorithm>
#include <span>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/model/decoder.hpp>

namespace vidlora::model {

template <class Scalar>
struct SplicedSequenceOf {
  MatrixOf<Scalar> embeds;                     // [T, D]
  std::vector<int> ids;                        // [T]; visual positions hold the placeholder id
  std::vector<int> labels;                     // [T]
  std::vector<Eigen::Index> visual_positions;  // row of each visual token, in visual-token order
};
using SplicedSequence = SplicedSequenceOf<float>;

// prompt_ids holds either exactly one placeholder (expanded to all visual tokens) or as many
// placeholders as visual tokens (transformers' processors expand them; replaced one for one).
// visual_tokens: [n, D] (already projected); embed_table: the decoder's embed_tokens [vocab, D].
template <class Scalar>
SplicedSequenceOf<Scalar> splice_visual_tokens(std::span<const int> prompt_ids, std::span<const int> answer_ids,
                                               int placeholder_id, const MatrixOf<Scalar>& visual_tokens,
                                               const MatrixOf<Scalar>& embed_table, int ignore_index = -100) {
  const Eigen::Index n_visual = visual_tokens.rows(), d = embed_table.cols();
  require(visual_tokens.cols() == d, "splice_visual_tokens: visual tokens {} do not match the embedding width {}",
          shape_string(visual_tokens), d);
  const auto count = static_cast<Eigen::Index>(std::count(prompt_ids.begin(), prompt_ids.end(), placeholder_id));
  require(count > 0, "splice_visual_tokens: the prompt has no video/image placeholder token (id {})", placeholder_id);
  require(count == 1 || count == n_visual,
          "splice_visual_tokens: the prompt has {} placeholder tokens (id {}) for {} visual tokens; expected 1 or {}",
          count, placeholder_id, n_visual, n_visual);
  const Eigen::Index extra = count == 1 ? n_visual - 1 : 0;
  const Eigen::Index t = static_cast<Eigen::Index>(prompt_ids.size() + answer_ids.size()) + extra;
  SplicedSequenceOf<Scalar> s;
  s.embeds.resize(t, d);
  s.ids.reserve(static_cast<std::size_t>(t));
  s.labels.reserve(static_cast<std::size_t>(t));
  Eigen::Index row = 0, next_visual = 0;
  auto put_text = [&](int id) {
    require(id >= 0 && id < embed_table.rows(), "splice_visual_tokens: token id {} is outside [0, {})", id,
            embed_table.rows());
    s.embeds.row(row++) = embed_table.row(id);
    s.ids.push_back(id);
  };
  for (const int id : prompt_ids) {
    if (id != placeholder_id) {
      put_text(id);
      s.labels.push_back(ignore_index);
      continue;
    }
    const Eigen::Index take = count == 1 ? n_visual : 1;
    for (Eigen::Index k = 0; k < take; ++k) {
      s.visual_positions.push_back(row);
      s.embeds.row(row++) = visual_tokens.row(next_visual++);
      s.ids.push_back(placeholder_id);
      s.labels.push_back(ignore_index);
    }
  }
  for (const int id : answer_ids) {
    put_text(id);
    s.labels.push_back(id);
  }
  return s;
}

template <class Scalar>
struct SplicedBatchOf {
  MatrixOf<Scalar> embeds;                // [batch·T, D]
  SequenceBatch batch;                    // shape and attention mask
  std::vector<int> labels;                // [batch·T]
  std::vector<Eigen::Index> visual_rows;  // rows of embeds holding visual tokens, sequence by sequence
};
using SplicedBatch = SplicedBatchOf<float>;

// Right-pads the sequences to the longest; padding rows hold pad_id's embedding, mask 0, label -100.
template <class Scalar>
SplicedBatchOf<Scalar> collate(const std::vector<SplicedSequenceOf<Scalar>>& seqs, const MatrixOf<Scalar>& embed_table,
                               int pad_id = 0, int ignore_index = -100) {
  require(!seqs.empty(), "collate: no sequences");
  require(pad_id >= 0 && pad_id < embed_table.rows(), "collate: pad id {} is outside [0, {})", pad_id,
          embed_table.rows());
  Eigen::Index t = 0;
  for (const auto& s : seqs) t = std::max(t, s.embeds.rows());
  SplicedBatchOf<Scalar> out;
  out.batch.batch = static_cast<Eigen::Index>(seqs.size());
  out.batch.seq_len = t;
  out.batch.attention_mask.assign(static_cast<std::size_t>(out.batch.tokens()), 0);
  out.labels.assign(static_cast<std::size_t>(out.batch.tokens()), ignore_index);
  out.embeds.resize(out.batch.tokens(), embed_table.cols());
  for (std::size_t b = 0; b < seqs.size(); ++b) {
    const auto& s = seqs[b];
    const Eigen::Index base = static_cast<Eigen::Index>(b) * t, len = s.embeds.rows();
    out.embeds.middleRows(base, len) = s.embeds;
    for (Eigen::Index i = len; i < t; ++i) out.embeds.row(base + i) = embed_table.row(pad_id);
    for (Eigen::Index i = 0; i < len; ++i) {
      out.batch.attention_mask[static_cast<std::size_t>(base + i)] = 1;
      out.labels[static_cast<std::size_t>(base + i)] = s.labels[static_cast<std::size_t>(i)];
    }
    for (const auto r : s.visual_positions) out.visual_rows.push_back(base + r);
  }
  return out;
}

// The rows of `m` listed in `rows` (e.g. d loss / d embeds at the visual tokens, for the projector).
template <class Scalar>
MatrixOf<Scalar> gather_rows(const MatrixOf<Scalar>& m, std::span<const Eigen::Index> rows) {
  MatrixOf<Scalar> out(static_cast<Eigen::Index>(rows.size()), m.cols());
  for (std::size_t i = 0; i < rows.size(); ++i) out.row(static_cast<Eigen::Index>(i)) = m.row(rows[i]);
  return out;
}

}  // namespace vidlora::model
