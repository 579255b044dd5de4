#pragma once
// Splicing projected frame tokens into a prompt: the placeholder token(s) of the prompt are replaced
// by the visual tokens, and the sequences of a batch are right-padded into one [batch·T, D] matrix.
// Labels: -100 for every prompt position (text and visual), the answer ids for the answer, -100 for
// padding — the model learns the caption only.
// splice_layout gives the same batch without its visual rows' values (which may live on a device: the CUDA decoder
// step assembles the embeddings there, DecoderStep<Cuda>::loss_and_backward_spliced); assemble_embeds fills them in
// on the host, bit for bit collate(splice_visual_tokens(...)).

#include <algorithm>
#include <cstddef>
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

namespace detail {
struct SpliceCount {
  Eigen::Index placeholders = 0, length = 0;
};
// The placeholders of a prompt (1, or one per visual token: checked) and the spliced sequence's length; `who` names
// the caller in the errors.
inline SpliceCount splice_count(const char* who, std::span<const int> prompt_ids, std::span<const int> answer_ids,
                                int placeholder_id, Eigen::Index n_visual) {
  const auto count = static_cast<Eigen::Index>(std::count(prompt_ids.begin(), prompt_ids.end(), placeholder_id));
  require(count > 0, "{}: the prompt has no video/image placeholder token (id {})", who, placeholder_id);
  require(count == 1 || count == n_visual,
          "{}: the prompt has {} placeholder tokens (id {}) for {} visual tokens; expected 1 or {}", who, count,
          placeholder_id, n_visual, n_visual);
  return {count, static_cast<Eigen::Index>(prompt_ids.size() + answer_ids.size()) + (count == 1 ? n_visual - 1 : 0)};
}
// The positions of one spliced sequence (`count` from splice_count), in order: text(id, label) for each prompt or
// answer token (its id checked against the vocabulary), visual() for each visual token.
template <class Text, class Visual>
void for_each_spliced_position(const char* who, std::span<const int> prompt_ids, std::span<const int> answer_ids,
                               int placeholder_id, SpliceCount count, Eigen::Index n_visual, Eigen::Index vocab,
                               int ignore_index, Text&& text, Visual&& visual) {
  auto put_text = [&](int id, int label) {
    require(id >= 0 && id < vocab, "{}: token id {} is outside [0, {})", who, id, vocab);
    text(id, label);
  };
  for (const int id : prompt_ids) {
    if (id != placeholder_id) {
      put_text(id, ignore_index);
      continue;
    }
    const Eigen::Index take = count.placeholders == 1 ? n_visual : 1;
    for (Eigen::Index k = 0; k < take; ++k) visual();
  }
  for (const int id : answer_ids) put_text(id, id);
}
}  // namespace detail

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
  const detail::SpliceCount count =
      detail::splice_count("splice_visual_tokens", prompt_ids, answer_ids, placeholder_id, n_visual);
  SplicedSequenceOf<Scalar> s;
  s.embeds.resize(count.length, d);
  s.ids.reserve(static_cast<std::size_t>(count.length));
  s.labels.reserve(static_cast<std::size_t>(count.length));
  Eigen::Index row = 0, next_visual = 0;
  detail::for_each_spliced_position(
      "splice_visual_tokens", prompt_ids, answer_ids, placeholder_id, count, n_visual, embed_table.rows(), ignore_index,
      [&](int id, int label) {
        s.embeds.row(row++) = embed_table.row(id);
        s.ids.push_back(id);
        s.labels.push_back(label);
      },
      [&] {
        s.visual_positions.push_back(row);
        s.embeds.row(row++) = visual_tokens.row(next_visual++);
        s.ids.push_back(placeholder_id);
        s.labels.push_back(ignore_index);
      });
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

// A batch as collate(splice_visual_tokens(...)) lays it out, with the text rows' embeddings but not the visual rows'.
template <class Scalar>
struct SplicedLayoutOf {
  SequenceBatch batch;                    // shape and attention mask
  std::vector<int> labels;                // [batch·T]
  std::vector<Eigen::Index> visual_rows;  // rows holding visual tokens, sequence by sequence (the visual tokens' order)
  std::vector<Eigen::Index> text_rows;    // every other row (prompt text, answer, padding), ascending
  MatrixOf<Scalar> text_embeds;           // [text_rows.size(), D]: the embedding of each text row, in that order
};
using SplicedLayout = SplicedLayoutOf<float>;

// The layout of a batch of sequences sharing `prompt_ids`, sequence b with `answers[b]` and `visual_counts[b]` visual
// tokens (rows of the projector's output, sequence after sequence): what collate(splice_visual_tokens(...)) gives,
// with the same checks and the same padding, but no visual values.
template <class Scalar, class Answers>
SplicedLayoutOf<Scalar> splice_layout(std::span<const int> prompt_ids, const Answers& answers, int placeholder_id,
                                      std::span<const Eigen::Index> visual_counts, const MatrixOf<Scalar>& embed_table,
                                      int pad_id = 0, int ignore_index = -100) {
  const auto n = static_cast<std::size_t>(std::size(answers));
  require(n > 0, "splice_layout: no sequences");
  require(n == visual_counts.size(), "splice_layout: {} answers for {} visual token counts", n, visual_counts.size());
  require(pad_id >= 0 && pad_id < embed_table.rows(), "splice_layout: pad id {} is outside [0, {})", pad_id,
          embed_table.rows());
  Eigen::Index t = 0, visual = 0;
  std::vector<detail::SpliceCount> counts;
  std::size_t b = 0;
  for (const auto& answer : answers) {
    counts.push_back(detail::splice_count("splice_layout", prompt_ids, std::span<const int>(answer), placeholder_id,
                                          visual_counts[b]));
    t = std::max(t, counts.back().length);
    visual += visual_counts[b++];
  }
  SplicedLayoutOf<Scalar> out;
  out.batch.batch = static_cast<Eigen::Index>(n);
  out.batch.seq_len = t;
  out.batch.attention_mask.assign(static_cast<std::size_t>(out.batch.tokens()), 0);
  out.labels.assign(static_cast<std::size_t>(out.batch.tokens()), ignore_index);
  out.visual_rows.reserve(static_cast<std::size_t>(visual));
  out.text_rows.reserve(static_cast<std::size_t>(out.batch.tokens() - visual));
  out.text_embeds.resize(out.batch.tokens() - visual, embed_table.cols());
  Eigen::Index text = 0;
  b = 0;
  for (const auto& answer : answers) {
    const Eigen::Index base = static_cast<Eigen::Index>(b) * t;
    Eigen::Index row = base;
    detail::for_each_spliced_position(
        "splice_layout", prompt_ids, std::span<const int>(answer), placeholder_id, counts[b], visual_counts[b],
        embed_table.rows(), ignore_index,
        [&](int id, int label) {
          out.labels[static_cast<std::size_t>(row)] = label;
          out.text_rows.push_back(row++);
          out.text_embeds.row(text++) = embed_table.row(id);
        },
        [&] { out.visual_rows.push_back(row++); });
    for (Eigen::Index i = 0; i < counts[b].length; ++i)
      out.batch.attention_mask[static_cast<std::size_t>(base + i)] = 1;
    for (; row < base + t; ++row) {  // padding: pad_id's embedding, mask 0, label ignored
      out.text_rows.push_back(row);
      out.text_embeds.row(text++) = embed_table.row(pad_id);
    }
    ++b;
  }
  return out;
}

// The batch's embeddings on the host: the layout's text rows, and `visual` ([visual_rows.size(), D], the projector's
// output) in its visual rows. Bit for bit collate(splice_visual_tokens(...)).embeds.
template <class Scalar>
MatrixOf<Scalar> assemble_embeds(const SplicedLayoutOf<Scalar>& layout, const MatrixOf<Scalar>& visual) {
  require(visual.rows() == static_cast<Eigen::Index>(layout.visual_rows.size()) &&
              visual.cols() == layout.text_embeds.cols(),
          "assemble_embeds: visual tokens {} for {} visual rows of width {}", shape_string(visual),
          layout.visual_rows.size(), layout.text_embeds.cols());
  MatrixOf<Scalar> out(layout.batch.tokens(), layout.text_embeds.cols());
  for (std::size_t i = 0; i < layout.text_rows.size(); ++i)
    out.row(layout.text_rows[i]) = layout.text_embeds.row(static_cast<Eigen::Index>(i));
  for (std::size_t i = 0; i < layout.visual_rows.size(); ++i)
    out.row(layout.visual_rows[i]) = visual.row(static_cast<Eigen::Index>(i));
  return out;
}

// f(i, j) for each run [i, j) of `rows` whose values are consecutive (rows[k + 1] == rows[k] + 1), in order: a
// batch's visual or text rows move between devices in one copy per run.
template <class F>
void for_each_row_run(std::span<const Eigen::Index> rows, F&& f) {
  for (std::size_t i = 0; i < rows.size();) {
    std::size_t j = i + 1;
    while (j < rows.size() && rows[j] == rows[j - 1] + 1) ++j;
    f(i, j);
    i = j;
  }
}

// The rows of `m` listed in `rows` (e.g. d loss / d embeds at the visual tokens, for the projector).
template <class Scalar>
MatrixOf<Scalar> gather_rows(const MatrixOf<Scalar>& m, std::span<const Eigen::Index> rows) {
  MatrixOf<Scalar> out(static_cast<Eigen::Index>(rows.size()), m.cols());
  for (std::size_t i = 0; i < rows.size(); ++i) out.row(static_cast<Eigen::Index>(i)) = m.row(rows[i]);
  return out;
}

}  // namespace vidlora::model
