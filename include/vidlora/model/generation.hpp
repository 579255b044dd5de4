#pragma once
// Caption generation with a decoder's KV cache: greedy decoding, sampling and beam search, with the logits
// processors of transformers' generate() (repetition penalties, no-repeat n-grams, minimum lengths) and its sampling
// warpers (temperature, top-k, top-p, min-p).
//
// Every step takes the last position's logits as float32 scores and runs process_scores() on them: the processors
// in transformers' order (EncoderRepetitionPenalty, RepetitionPenalty, NoRepeatNGram, EncoderNoRepeatNGram,
// MinLength, MinNewTokensLength; the "encoder" ones read the prompt, as generate() gives a decoder-only model's
// input_ids to them), then, when sampling, the
// warpers (Temperature, TopK, TopP, MinP), each skipped where transformers' _get_logits_processor skips it. The
// sequence they read is GenerationOptions::context_ids (the prompt's ids, as transformers' input_ids hold them)
// followed by the generated ids; the arithmetic is float32 as torch's (the penalty and the temperature rounded to
// float first), so the processed scores are the same bits (tools/reference/generation_config_cases.py).
// Greedy: the arg-max of the processed scores (transformers' _sample with do_sample=False).
// Sampling (do_sample): a draw from softmax(processed scores) (transformers' _sample with do_sample=True, whose draw
// is torch.multinomial): one uniform from Philox(seed, stream) per step, walked along the cumulative probabilities in
// double; reproducible for a seed, not torch's draws.
// Beam search (transformers 5's _beam_search): scores = log_softmax(logits), then the processors, plus each beam's
// running sum of log-probabilities; the best max(2, 1 + EOS ids)·num_beams (beam, token) pairs are ranked; one
// ending in an EOS id whose rank is below num_beams becomes a finished hypothesis scored
// sum_logprobs / len^length_penalty (len = the tokens generated, the EOS included), the best num_beams of the
// others continue. Search stops when num_beams hypotheses are finished and the best running beam, scored at its
// present length, cannot beat the worst of them (early_stopping = False), or at the length limit, where the
// candidates ranked below num_beams become the hypotheses left (tools/reference/generation_search_cases.py). One
// difference: transformers starts with num_beams copies of the prompt, all but one at -1e9, and keeps running beams
// at -1e9 where a step has fewer finite candidates than it keeps (a vocabulary smaller than 2·num_beams, or bans
// leaving fewer); vidlora starts with the one and drops those, which changes no result. The running sums are double, torch's float32 (a near-tie could
// rank otherwise). Sampling with beams (transformers' beam sampling) is refused.
// The EOS ids: eos_token_id and extra_eos_token_ids (a generation_config.json's list); any of them ends a sequence.
// The length limit: max_new_tokens, and max_length when set (context_ids and the new tokens together, transformers').
// The one generation loop: model::Decoder::generate_greedy and the Trainer's evaluation both run it.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/rng.hpp>

namespace vidlora::model {

struct GenerationOptions {
  int max_new_tokens = 32;
  int max_length = 0;               // 0: off; else context_ids and the generated ids together at most
                                    // (both limits apply here; transformers lets max_new_tokens win, so callers set
                                    // max_length only where no max_new_tokens was given: GenerationConfigFile::apply)
  int num_beams = 1;                // 1: greedy or sampling
  double length_penalty = 1.0;      // beam search: exponent of the length in the final score
  double repetition_penalty = 1.0;  // 1: off; > 1 discourages repeats
  int no_repeat_ngram_size = 0;     // 0: off; n: no n-gram occurs twice
  double encoder_repetition_penalty = 1.0;  // 1: off; > 1 encourages context_ids' tokens (transformers' encoder_*)
  int encoder_no_repeat_ngram_size = 0;     // 0: off; n: no n-gram of context_ids is generated again
  int min_new_tokens = 0;                   // 0: off; the EOS ids are banned until this many ids are generated
  int min_length = 0;                       // 0: off; ... until context_ids and the generated ids are this many
  int eos_token_id = -1;                    // < 0: none (generate max_new_tokens)
  std::vector<int> extra_eos_token_ids{};   // more ids that end a sequence (generation_config.json's list)
  std::vector<int> context_ids{};  // the ids before the generated ones, as transformers' input_ids (the prompt)
  // Sampling (transformers' do_sample): the warpers below, then a draw.
  bool do_sample = false;
  double temperature = 1.0;  // > 0; 1: off
  int top_k = 50;            // 0: off (transformers' default with do_sample: 50)
  double top_p = 1.0;        // in [0, 1]; 1: off
  double min_p = 0.0;        // in [0, 1]; 0: off (transformers' None)
  std::uint64_t seed = 0;    // the draws: Philox(seed, stream), word pair `step` at step `step`
  std::uint64_t stream = 0;
};

// The options' problems, in the words of the option: what generate() refuses (a usage error in the programs).
inline void check_generation(const GenerationOptions& o) {
  require(o.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0 (got {})", o.max_new_tokens);
  require(o.num_beams >= 1, "generate: num_beams must be >= 1 (got {})", o.num_beams);
  require(std::isfinite(o.repetition_penalty) && o.repetition_penalty > 0.0,
          "generate: repetition_penalty must be finite and > 0 (got {})", o.repetition_penalty);
  require(o.no_repeat_ngram_size >= 0, "generate: no_repeat_ngram_size must be >= 0 (got {})", o.no_repeat_ngram_size);
  require(std::isfinite(o.length_penalty), "generate: length_penalty must be finite (got {})", o.length_penalty);
  require(std::isfinite(o.encoder_repetition_penalty) && o.encoder_repetition_penalty > 0.0,
          "generate: encoder_repetition_penalty must be finite and > 0 (got {})", o.encoder_repetition_penalty);
  require(o.encoder_no_repeat_ngram_size >= 0, "generate: encoder_no_repeat_ngram_size must be >= 0 (got {})",
          o.encoder_no_repeat_ngram_size);
  require(o.min_new_tokens >= 0, "generate: min_new_tokens must be >= 0 (got {})", o.min_new_tokens);
  require(o.min_length >= 0, "generate: min_length must be >= 0 (got {})", o.min_length);
  require(o.max_length >= 0, "generate: max_length must be >= 0 (got {})", o.max_length);
  if (!o.do_sample) return;  // the warpers are not built without sampling (transformers checks them only then)
  require(o.num_beams == 1,
          "generate: sampling with num_beams {} (transformers' beam sampling) is not supported: sample with one beam, "
          "or search without sampling",
          o.num_beams);
  require(std::isfinite(o.temperature) && o.temperature > 0.0,
          "generate: temperature must be finite and > 0 when sampling (got {}; for greedy decoding do not sample)",
          o.temperature);
  require(o.top_k >= 0, "generate: top_k must be >= 0 (got {}; 0: off)", o.top_k);
  require(o.top_p >= 0.0 && o.top_p <= 1.0, "generate: top_p must be in [0, 1] (got {})", o.top_p);
  require(o.min_p >= 0.0 && o.min_p <= 1.0, "generate: min_p must be in [0, 1] (got {})", o.min_p);
}

// Whether `id` ends a sequence under `o`.
inline bool is_eos(const GenerationOptions& o, int id) {
  return id >= 0 && (id == o.eos_token_id || std::find(o.extra_eos_token_ids.begin(), o.extra_eos_token_ids.end(),
                                                       id) != o.extra_eos_token_ids.end());
}

// transformers' RepetitionPenaltyLogitsProcessor on one row of scores: each distinct id of `seen` has its score
// multiplied by the penalty when negative, divided by it otherwise, in float32 as torch (the penalty rounded to float).
// EncoderRepetitionPenaltyLogitsProcessor is the same with 1 / its penalty (computed in double, then rounded).
inline void apply_repetition_penalty(std::span<float> scores, std::span<const int> seen, double penalty) {
  if (penalty == 1.0) return;
  const auto p = static_cast<float>(penalty);
  std::vector<char> done(scores.size(), 0);
  for (const int id : seen) {
    if (id < 0 || static_cast<std::size_t>(id) >= scores.size() || done[static_cast<std::size_t>(id)]) continue;
    done[static_cast<std::size_t>(id)] = 1;
    float& s = scores[static_cast<std::size_t>(id)];
    s = s < 0.0f ? s * p : s / p;
  }
}

// Tokens that would complete an n-gram already in `sequence` (transformers' NoRepeatNGramLogitsProcessor).
inline std::vector<int> banned_ngram_tokens(std::span<const int> sequence, int n) {
  std::vector<int> banned;
  const auto len = static_cast<long>(sequence.size());
  if (n <= 0 || len + 1 < n) return banned;
  const long prefix_start = len - (n - 1);  // the last n-1 tokens
  for (long start = 0; start + n <= len; ++start) {
    bool match = true;
    for (long k = 0; k < n - 1 && match; ++k)
      match = sequence[static_cast<std::size_t>(start + k)] == sequence[static_cast<std::size_t>(prefix_start + k)];
    if (match) banned.push_back(sequence[static_cast<std::size_t>(start + n - 1)]);
  }
  return banned;
}

// Tokens that would repeat an n-gram of `source` after the last n-1 ids of `sequence` (transformers'
// EncoderNoRepeatNGramLogitsProcessor: `source` the encoder's ids, here the context's).
inline std::vector<int> banned_source_ngram_tokens(std::span<const int> source, std::span<const int> sequence, int n) {
  std::vector<int> banned;
  if (n <= 0 || sequence.size() + 1 < static_cast<std::size_t>(n)) return banned;
  const std::span<const int> suffix = sequence.last(static_cast<std::size_t>(n - 1));
  for (std::size_t start = 0; start + static_cast<std::size_t>(n) <= source.size(); ++start)
    if (std::equal(suffix.begin(), suffix.end(), source.begin() + static_cast<std::ptrdiff_t>(start)))
      banned.push_back(source[start + static_cast<std::size_t>(n - 1)]);
  return banned;
}

// The logits processors (not the sampling warpers) on one row of scores, in transformers' order: the encoder
// repetition penalty over context_ids, the repetition penalty and the no-repeat n-grams over context_ids +
// `generated`, the encoder no-repeat n-grams (context_ids' n-grams after that sequence's end), then the minimum
// lengths banning the EOS ids.
inline void apply_processors(std::span<float> scores, std::span<const int> generated, const GenerationOptions& o) {
  constexpr float kBanned = -std::numeric_limits<float>::infinity();
  const auto ban = [&](int id) {
    if (id >= 0 && static_cast<std::size_t>(id) < scores.size()) scores[static_cast<std::size_t>(id)] = kBanned;
  };
  if (o.encoder_repetition_penalty != 1.0)
    apply_repetition_penalty(scores, o.context_ids, 1.0 / o.encoder_repetition_penalty);
  std::vector<int> sequence;
  if (o.repetition_penalty != 1.0 || o.no_repeat_ngram_size > 0 || o.encoder_no_repeat_ngram_size > 0) {
    sequence.assign(o.context_ids.begin(), o.context_ids.end());
    sequence.insert(sequence.end(), generated.begin(), generated.end());
  }
  apply_repetition_penalty(scores, sequence, o.repetition_penalty);
  for (const int id : banned_ngram_tokens(sequence, o.no_repeat_ngram_size)) ban(id);
  for (const int id : banned_source_ngram_tokens(o.context_ids, sequence, o.encoder_no_repeat_ngram_size)) ban(id);
  const auto length = static_cast<long>(o.context_ids.size() + generated.size());
  const bool short_total = o.min_length > 0 && length < o.min_length;
  const bool short_new = o.min_new_tokens > 0 && static_cast<long>(generated.size()) < o.min_new_tokens;
  if (short_total || short_new) {
    ban(o.eos_token_id);
    for (const int id : o.extra_eos_token_ids) ban(id);
  }
}

namespace detail {

// exp(score - max score) per id in double, 0 for a removed (non-finite) one, and their sum: softmax unnormalised.
struct ExpWeights {
  std::vector<double> w;
  double sum = 0.0;
};
inline ExpWeights exp_weights(std::span<const float> scores) {
  float mx = -std::numeric_limits<float>::infinity();
  for (const float s : scores) mx = std::max(mx, s);
  ExpWeights e{std::vector<double>(scores.size(), 0.0), 0.0};
  for (std::size_t i = 0; i < scores.size(); ++i)
    if (std::isfinite(scores[i])) e.sum += e.w[i] = std::exp(static_cast<double>(scores[i]) - static_cast<double>(mx));
  return e;
}

}  // namespace detail

// The sampling warpers on one row of (processed) scores, in transformers' order, each where transformers builds it:
// TemperatureLogitsWarper (temperature != 1: scores / temperature in float32), TopKLogitsWarper (top_k != 0: scores
// below the k-th largest removed, ties at it kept), TopPLogitsWarper (top_p < 1: ascending by score, ties by id, the
// ids whose cumulative probability is <= 1 - top_p removed, the most probable kept), MinPLogitsWarper (min_p > 0:
// ids with probability < min_p times the largest removed, the most probable kept). Removed: -inf.
inline void apply_sampling_warpers(std::span<float> scores, const GenerationOptions& o) {
  constexpr float kRemoved = -std::numeric_limits<float>::infinity();
  const std::size_t n = scores.size();
  if (n == 0) return;
  if (o.temperature != 1.0) {
    const auto t = static_cast<float>(o.temperature);
    for (float& s : scores) s = s / t;
  }
  if (o.top_k != 0) {
    const std::size_t k = std::min<std::size_t>(static_cast<std::size_t>(o.top_k), n);
    std::vector<float> sorted(scores.begin(), scores.end());
    std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(k - 1), sorted.end(),
                     std::greater<float>());
    const float kth = sorted[k - 1];
    for (float& s : scores)
      if (s < kth) s = kRemoved;
  }
  // Probabilities of the current scores (double; -inf has none), the order of the ids by score.
  const auto probabilities = [&] {
    detail::ExpWeights e = detail::exp_weights(scores);
    for (double& v : e.w) v /= e.sum;
    return std::move(e.w);
  };
  if (o.top_p < 1.0) {
    const std::vector<double> p = probabilities();
    std::vector<std::size_t> order(n);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });
    const double threshold = static_cast<float>(1.0 - o.top_p);  // torch compares float32 with the float threshold
    double cumulative = 0.0;
    std::vector<std::size_t> removed;
    for (std::size_t r = 0; r + 1 < n; ++r) {  // the last (most probable) id is always kept
      cumulative += p[order[r]];
      if (static_cast<float>(cumulative) <= threshold) removed.push_back(order[r]);
    }
    for (const std::size_t i : removed) scores[i] = kRemoved;
  }
  if (o.min_p > 0.0) {
    const std::vector<double> p = probabilities();
    const std::size_t top = static_cast<std::size_t>(std::max_element(p.begin(), p.end()) - p.begin());
    const float floor = static_cast<float>(o.min_p) * static_cast<float>(p[top]);
    for (std::size_t i = 0; i < n; ++i)
      if (i != top && static_cast<float>(p[i]) < floor) scores[i] = kRemoved;
  }
}

// What transformers' LogitsProcessorList for these options does to one row of scores: the processors, then the
// warpers when sampling.
inline void process_scores(std::span<float> scores, std::span<const int> generated, const GenerationOptions& o) {
  apply_processors(scores, generated, o);
  if (o.do_sample) apply_sampling_warpers(scores, o);
}

// A draw from softmax(scores) with the uniform `u` in [0, 1): the first id whose cumulative probability (double,
// in id order) passes u; ids at -inf are never drawn. Requires at least one finite score.
inline int draw_token(std::span<const float> scores, double u) {
  const auto [w, sum] = detail::exp_weights(scores);
  require(sum > 0.0, "generate: every token was removed (no finite score to sample from)");
  const double target = u * sum;
  double cumulative = 0.0;
  int last = -1;
  for (std::size_t i = 0; i < w.size(); ++i) {
    if (w[i] == 0.0) continue;
    last = static_cast<int>(i);
    cumulative += w[i];
    if (cumulative > target) return last;
  }
  return last;  // rounding left the target at the very end
}

struct GenerationResult {
  std::vector<int> ids;   // generated ids, without the EOS
  double score = 0.0;     // greedy, sampling: sum of log-probs of the chosen tokens; beam: the hypothesis score
  bool finished = false;  // ended with an EOS id
  int eos_id = -1;        // the EOS id it ended with (finished)
};

// Generates after `prompt_embeds` [n, hidden] with any decoder offering make_cache(),
// forward_cached(embeds, cache), logits(hidden) and embed(ids).
template <class Decoder>
GenerationResult generate(Decoder& decoder, const Matrix& prompt_embeds, const GenerationOptions& o) {
  check_generation(o);
  require(prompt_embeds.rows() > 0, "generate: the prompt is empty");
  int max_new_tokens = o.max_new_tokens;
  if (o.max_length > 0) {  // as transformers, which refuses a prompt as long as max_length
    const auto context = static_cast<long>(o.context_ids.size());
    require(context < o.max_length,
            "generate: the prompt has {} ids and max_length is {}, which counts them: nothing is left to generate "
            "(max_new_tokens counts the new tokens alone)",
            context, o.max_length);
    max_new_tokens = static_cast<int>(std::min<long>(max_new_tokens, o.max_length - context));
  }
  using Cache = decltype(decoder.make_cache());
  const auto log_softmax = [](std::vector<float>& s) {
    float mx = -std::numeric_limits<float>::infinity();
    for (float v : s) mx = std::max(mx, v);
    double sum = 0.0;
    for (float v : s) sum += std::isfinite(v) ? std::exp(static_cast<double>(v - mx)) : 0.0;
    const float lse = mx + static_cast<float>(std::log(sum));
    for (float& v : s) v -= lse;
  };
  const auto row_scores = [&](const Matrix& hidden) {
    const Matrix lg = decoder.logits(hidden.bottomRows(1));
    return std::vector<float>(lg.data(), lg.data() + lg.cols());
  };

  if (o.num_beams == 1) {  // greedy or sampling
    GenerationResult r;
    Cache cache = decoder.make_cache();
    Matrix hidden = decoder.forward_cached(prompt_embeds, cache);
    for (int step = 0; step < max_new_tokens; ++step) {
      std::vector<float> s = row_scores(hidden);
      std::vector<float> lp = s;
      log_softmax(lp);
      process_scores(s, r.ids, o);
      const int id = o.do_sample
                         ? draw_token(s, random_uniform_double(o.seed, o.stream, static_cast<std::uint64_t>(step)))
                         : static_cast<int>(std::max_element(s.begin(), s.end()) - s.begin());
      r.score += lp[static_cast<std::size_t>(id)];
      if (is_eos(o, id)) {
        r.finished = true;
        r.eos_id = id;
        break;
      }
      r.ids.push_back(id);
      const int one[1] = {id};
      hidden = decoder.forward_cached(decoder.embed(std::span<const int>(one, 1)), cache);
    }
    return r;
  }

  struct Beam {
    std::vector<int> ids;
    double logprob = 0.0;
    Cache cache;
    Matrix hidden;
  };
  struct Hyp {
    std::vector<int> ids;
    double score;
    bool finished;
    int eos_id;
  };
  const int nb = o.num_beams;
  std::vector<int> eos_ids;  // transformers keeps (1 + EOS ids) · num_beams candidates a step, at least 2 · num_beams
  if (o.eos_token_id >= 0) eos_ids.push_back(o.eos_token_id);
  for (const int id : o.extra_eos_token_ids)
    if (id >= 0 && std::find(eos_ids.begin(), eos_ids.end(), id) == eos_ids.end()) eos_ids.push_back(id);
  const std::size_t keep_per_step =
      static_cast<std::size_t>(std::max<std::size_t>(2, 1 + eos_ids.size())) * static_cast<std::size_t>(nb);
  std::vector<Hyp> hyps;
  // The length in the score counts every generated token, the EOS included (transformers' cur_len + 1 - prompt).
  const auto hyp_score = [&](double sum, std::size_t len) {
    return sum / std::pow(static_cast<double>(std::max<std::size_t>(len, 1)), o.length_penalty);
  };
  const auto worst = [&] {
    double w = std::numeric_limits<double>::infinity();
    for (const auto& h : hyps) w = std::min(w, h.score);
    return w;
  };
  const auto add_hyp = [&](std::vector<int> ids, double sum, std::size_t len, int eos_id) {
    const double sc = hyp_score(sum, len);
    if (static_cast<int>(hyps.size()) < nb) {
      hyps.push_back({std::move(ids), sc, eos_id >= 0, eos_id});
    } else if (sc > worst()) {
      auto it =
          std::min_element(hyps.begin(), hyps.end(), [](const Hyp& a, const Hyp& b) { return a.score < b.score; });
      *it = {std::move(ids), sc, eos_id >= 0, eos_id};
    }
  };

  std::vector<Beam> beams(1);
  beams[0].cache = decoder.make_cache();
  beams[0].hidden = decoder.forward_cached(prompt_embeds, beams[0].cache);
  bool done = false;
  for (int step = 0; step < max_new_tokens && !done; ++step) {
    // At the last step every candidate reaches the length limit: the best num_beams of them are the hypotheses left.
    const bool last = step + 1 == max_new_tokens;
    struct Cand {
      double total;
      int beam, token;
    };
    std::vector<Cand> cands;
    for (int b = 0; b < static_cast<int>(beams.size()); ++b) {
      std::vector<float> s = row_scores(beams[static_cast<std::size_t>(b)].hidden);
      log_softmax(s);
      apply_processors(s, beams[static_cast<std::size_t>(b)].ids, o);
      for (int t = 0; t < static_cast<int>(s.size()); ++t)
        if (std::isfinite(s[static_cast<std::size_t>(t)]))
          cands.push_back({beams[static_cast<std::size_t>(b)].logprob + s[static_cast<std::size_t>(t)], b, t});
    }
    const std::size_t keep = std::min(cands.size(), keep_per_step);
    std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(keep), cands.end(),
                      [](const Cand& a, const Cand& b) {
                        return a.total != b.total ? a.total > b.total
                                                  : (a.beam != b.beam ? a.beam < b.beam : a.token < b.token);
                      });
    std::vector<Beam> next;
    for (std::size_t rank = 0; rank < keep; ++rank) {
      const Cand& c = cands[rank];
      const Beam& parent = beams[static_cast<std::size_t>(c.beam)];
      const bool eos = is_eos(o, c.token);
      if (eos || last) {  // a candidate that stops: a hypothesis when among the best num_beams
        if (rank < static_cast<std::size_t>(nb)) {
          std::vector<int> ids = parent.ids;
          if (!eos) ids.push_back(c.token);
          add_hyp(std::move(ids), c.total, parent.ids.size() + 1, eos ? c.token : -1);
        }
        continue;
      }
      if (static_cast<int>(next.size()) == nb) continue;
      Beam child{.ids = parent.ids, .logprob = c.total, .cache = parent.cache, .hidden = {}};
      child.ids.push_back(c.token);
      const int one[1] = {c.token};
      child.hidden = decoder.forward_cached(decoder.embed(std::span<const int>(one, 1)), child.cache);
      next.push_back(std::move(child));
    }
    beams = std::move(next);
    if (beams.empty()) break;
    // transformers' early_stopping=False heuristic: stop when num_beams hypotheses are done and the best running
    // beam, scored at its present length, cannot beat the worst of them.
    if (static_cast<int>(hyps.size()) >= nb)
      done = hyp_score(beams.front().logprob, beams.front().ids.size()) <= worst();
  }
  if (hyps.empty())  // max_new_tokens 0
    for (const auto& b : beams) add_hyp(b.ids, b.logprob, b.ids.size(), -1);
  require(!hyps.empty(), "generate: beam search produced no hypothesis");
  const auto best =
      std::max_element(hyps.begin(), hyps.end(), [](const Hyp& a, const Hyp& b) { return a.score < b.score; });
  return GenerationResult{.ids = best->ids, .score = best->score, .finished = best->finished, .eos_id = best->eos_id};
}

// A decoder seen by generate() without its KV cache: every call recomputes the whole sequence so far
// (the check that the cache changes nothing; quadratic in the length).
template <class D>
struct RecomputingDecoder {
  using matrix_type = std::decay_t<decltype(std::declval<D&>().embed(std::span<const int>()))>;
  struct Cache {
    matrix_type all;  // every embedding fed so far [positions, hidden]
  };
  D& decoder;
  Cache make_cache() const { return {}; }
  matrix_type forward_cached(const matrix_type& embeds, Cache& cache) const {
    const Eigen::Index n = embeds.rows(), past = cache.all.rows();
    cache.all.conservativeResize(past + n, embeds.cols());
    cache.all.bottomRows(n) = embeds;
    auto fresh = decoder.make_cache();
    return decoder.forward_cached(cache.all, fresh).bottomRows(n);
  }
  matrix_type logits(const matrix_type& hidden) const { return decoder.logits(hidden); }
  matrix_type embed(std::span<const int> ids) const { return decoder.embed(ids); }
};

}  // namespace vidlora::model

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using model::GenerationOptions;
}  // namespace vidlora
