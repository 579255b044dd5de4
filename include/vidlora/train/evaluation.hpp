#pragma once
// The parts of the Trainer's evaluation after each epoch: one val clip's eval loss (the caption supervised after
// its prompt and visual tokens, as in training), its generated caption, which number early stopping follows
// (TrainerConfig::early_stopping_metric: its direction and its value in an EvalResult), and how an evaluation is
// reported (the JSONL eval record and the eval line).

#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/eval/caption_metrics_json.hpp>
#include <vidlora/loss/cross_entropy_options.hpp>
#include <vidlora/model/generation.hpp>
#include <vidlora/model/splice.hpp>
#include <vidlora/train/decoder_step.hpp>
#include <vidlora/train/early_stopping.hpp>
#include <vidlora/train/text_codec.hpp>
#include <vidlora/train/train_result.hpp>
#include <vidlora/train/trainer_config.hpp>
#include <vidlora/train/training_log.hpp>

namespace vidlora::train {

// Whether early stopping wants config.early_stopping_metric low (eval_loss) or high (the caption metrics); an
// unknown name, or meteor_morphemes without caption_metrics.morpheme_tokenizer, is an error naming it.
inline Mode early_stopping_mode(const TrainerConfig& config) {
  const auto& m = config.early_stopping_metric;
  if (m == "eval_loss") return Mode::Min;
  const eval::CaptionScore* score = eval::find_caption_score(m);
  if (!score) fail("Trainer: unknown early_stopping_metric '{}' (eval_loss, {})", m, eval::caption_score_names());
  require(score->group != eval::ScoreGroup::Morphemes || config.caption_metrics.morpheme_tokenizer.has_value(),
          "Trainer: early_stopping_metric '{}' needs caption_metrics.morpheme_tokenizer set", m);
  return score->higher_is_better ? Mode::Max : Mode::Min;
}

// The early-stopping metric's value in `ev` (a name early_stopping_mode accepted); NaN when not scored.
inline double early_stopping_value(std::string_view metric, const EvalResult& ev) {
  if (metric == "eval_loss") return ev.eval_loss;
  return eval::find_caption_score(metric)->get(ev.metrics);
}

// True when `score` beats `best` in direction `mode` (NaN never does).
inline bool improves(Mode mode, double score, double best) { return mode == Mode::Min ? score < best : score > best; }

// Eval loss of one clip: its projected visual tokens `visual` [n, hidden] spliced into the prompt, then `answer`
// (caption + EOS), the only supervised tokens, run by the decoder step `step` (train/decoder_step.hpp: the CPU
// decoder or the device model). Returns the loss sum and the supervised-token count.
template <class Step, class Decoder>
EvalLoss answer_loss(Step& step, const Decoder& decoder, const TextCodec& codec, const Matrix& visual,
                     const std::vector<int>& answer, double label_smoothing) {
  loss::CrossEntropyOptions ce;
  ce.label_smoothing = label_smoothing;
  const auto seq = model::splice_visual_tokens<float>(codec.prompt_ids, answer, codec.placeholder_id, visual,
                                                      decoder.embed_tokens());
  const auto batch = model::collate<float>({seq}, decoder.embed_tokens(), codec.pad_id);
  return step.eval_loss(batch.embeds, batch.batch, batch.labels, ce);
}

// The caption `step` generates for projected visual tokens `visual` [n, hidden] after the prompt (stopping at the
// codec's EOS, and at options.extra_eos_token_ids), decoded to text. The processors read the prompt's ids as
// transformers' input_ids hold them (the placeholder once per visual token) before the generated ones: a repetition
// penalty counts the prompt's ids too, as generate() given the processor's input_ids does.
template <class Step, class Decoder>
std::string generate_caption(Step& step, const Decoder& decoder, const TextCodec& codec,
                             model::GenerationOptions options, const Matrix& visual) {
  auto seq = model::splice_visual_tokens<float>(codec.prompt_ids, std::vector<int>{}, codec.placeholder_id, visual,
                                                decoder.embed_tokens());
  options.eos_token_id = codec.eos_id;
  options.context_ids = std::move(seq.ids);
  return codec.decode(step.generate(seq.embeds, options).ids);
}

// The evaluation's line in the training log: eval loss, every caption score and mode_collapse (0 or 1).
inline EvalRecord eval_record(const EvalResult& ev) {
  EvalRecord rec{.stage = ev.stage, .epoch = ev.epoch, .step = ev.step, .eval_loss = ev.eval_loss, .metrics = {}};
  for (const auto& [name, value] : eval::caption_score_values(ev.metrics)) rec.metrics[name] = value;
  rec.metrics["mode_collapse"] = ev.collapsed ? 1.0 : 0.0;
  return rec;
}

// The evaluation's progress line: "eval stage 1 epoch 2: loss … | METEOR … | unique … [| METEOR (tokenizer) …]".
inline std::string eval_summary(const EvalResult& ev) {
  return fmt::format(
             "eval stage {} epoch {}: loss {:.4f} | METEOR {:.4f} CIDEr-D {:.4f} BLEU-4 {:.4f} ROUGE-L {:.4f} | "
             "unique {:.2f} distinct-1 {:.3f} distinct-2 {:.3f}",
             ev.stage, ev.epoch, ev.eval_loss, ev.metrics.meteor, ev.metrics.cider_d, ev.metrics.bleu4,
             ev.metrics.rouge_l, ev.metrics.diversity.unique_ratio, ev.metrics.diversity.distinct_1,
             ev.metrics.diversity.distinct_2) +
         (ev.metrics.meteor_morphemes_tokenizer.empty()
              ? std::string()
              : fmt::format(" | METEOR ({}) {:.4f}", ev.metrics.meteor_morphemes_tokenizer,
                            ev.metrics.meteor_morphemes));
}

}  // namespace vidlora::train
