#pragma once
// Caption generation with a decoder's KV cache: greedy decoding and beam search, with
// transformers' repetition penalty and no-repeat-n-gram rule.
//
// Greedy: at each step the processors (repetition penalty, then no_repeat_ngram) edit the raw
// logits of the last position and the arg-max is taken (transformers' _sample with do_sample=False).
// Beam search: scores = log_softmax(logits), then the processors, plus each beam's running sum of
// log-probabilities; the best 2·num_beams (beam, token) pairs are ranked; one ending in EOS whose
// rank is below num_beams becomes a finished hypothesis with score sum_logprobs / len^length_penalty
// (len = tokens generated before the EOS, at least 1, transformers' BeamHypotheses.add), the others
// continue. Search stops when num_beams hypotheses are finished and the best running beam cannot
// beat the worst of them (early_stopping = False rule), or at max_new_tokens, where the running
// beams join the hypotheses.
// Repetition penalty (transformers' RepetitionPenaltyLogitsProcessor): for each distinct id already
// in the sequence, a score s becomes s / p when s > 0 and s · p otherwise. The sequence is the
// generated ids (the prompt is embeddings, as with inputs_embeds, so it holds no ids) plus
// GenerationOptions::context_ids when given.
// The one generation loop: model::Decoder::generate_greedy and the Trainer's evaluation both run it.

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <span>
#include <type_traits>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>

namespace vidlora::model {

struct GenerationOptions {
  int max_new_tokens = 32;
  int num_beams = 1;                // 1: greedy
  double length_penalty = 1.0;      // beam search: exponent of the length in the final score
  double repetition_penalty = 1.0;  // 1: off; > 1 discourages repeats
  int no_repeat_ngram_size = 0;     // 0: off; n: no n-gram occurs twice
  int eos_token_id = -1;            // < 0: none (generate max_new_tokens)
  std::vector<int> context_ids{};   // ids the repetition penalty also counts (e.g. the text prompt)
};

namespace detail {

inline void check_generation(const GenerationOptions& o) {
  require(o.max_new_tokens >= 0, "generate: max_new_tokens must be >= 0 (got {})", o.max_new_tokens);
  require(o.num_beams >= 1, "generate: num_beams must be >= 1 (got {})", o.num_beams);
  require(std::isfinite(o.repetition_penalty) && o.repetition_penalty > 0.0,
          "generate: repetition_penalty must be finite and > 0 (got {})", o.repetition_penalty);
  require(o.no_repeat_ngram_size >= 0, "generate: no_repeat_ngram_size must be >= 0 (got {})", o.no_repeat_ngram_size);
  require(std::isfinite(o.length_penalty), "generate: length_penalty must be finite (got {})", o.length_penalty);
}

}  // namespace detail

// transformers' RepetitionPenaltyLogitsProcessor on one row of scores.
inline void apply_repetition_penalty(std::span<float> scores, std::span<const int> seen, double penalty) {
  if (penalty == 1.0) return;
  std::vector<char> done(scores.size(), 0);
  for (const int id : seen) {
    if (id < 0 || static_cast<std::size_t>(id) >= scores.size() || done[static_cast<std::size_t>(id)]) continue;
    done[static_cast<std::size_t>(id)] = 1;
    float& s = scores[static_cast<std::size_t>(id)];
    s = s > 0.0f ? static_cast<float>(s / penalty) : static_cast<float>(s * penalty);
  }
}

// Tokens that would complete an n-gram already in `generated` (transformers' NoRepeatNGramLogitsProcessor).
inline std::vector<int> banned_ngram_tokens(std::span<const int> generated, int n) {
  std::vector<int> banned;
  const auto len = static_cast<long>(generated.size());
  if (n <= 0 || len + 1 < n) return banned;
  const long prefix_start = len - (n - 1);  // the last n-1 tokens
  for (long start = 0; start + n <= len; ++start) {
    bool match = true;
    for (long k = 0; k < n - 1 && match; ++k)
      match = generated[static_cast<std::size_t>(start + k)] == generated[static_cast<std::size_t>(prefix_start + k)];
    if (match) banned.push_back(generated[static_cast<std::size_t>(start + n - 1)]);
  }
  return banned;
}

inline void apply_processors(std::span<float> scores, std::span<const int> generated, const GenerationOptions& o) {
  if (o.repetition_penalty != 1.0) {
    std::vector<int> seen(o.context_ids.begin(), o.context_ids.end());
    seen.insert(seen.end(), generated.begin(), generated.end());
    apply_repetition_penalty(scores, seen, o.repetition_penalty);
  }
  for (const int id : banned_ngram_tokens(generated, o.no_repeat_ngram_size))
    if (id >= 0 && static_cast<std::size_t>(id) < scores.size())
      scores[static_cast<std::size_t>(id)] = -std::numeric_limits<float>::infinity();
}

struct GenerationResult {
  std::vector<int> ids;   // generated ids, without the EOS
  double score = 0.0;     // greedy: sum of log-probs of the chosen tokens; beam: the hypothesis score
  bool finished = false;  // ended with EOS
};

// Generates after `prompt_embeds` [n, hidden] with any decoder offering make_cache(),
// forward_cached(embeds, cache), logits(hidden) and embed(ids).
template <class Decoder>
GenerationResult generate(Decoder& decoder, const Matrix& prompt_embeds, const GenerationOptions& o) {
  detail::check_generation(o);
  require(prompt_embeds.rows() > 0, "generate: the prompt is empty");
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

  if (o.num_beams == 1) {
    GenerationResult r;
    Cache cache = decoder.make_cache();
    Matrix hidden = decoder.forward_cached(prompt_embeds, cache);
    for (int step = 0; step < o.max_new_tokens; ++step) {
      std::vector<float> s = row_scores(hidden);
      std::vector<float> lp = s;
      log_softmax(lp);
      apply_processors(s, r.ids, o);
      const int id = static_cast<int>(std::max_element(s.begin(), s.end()) - s.begin());
      r.score += lp[static_cast<std::size_t>(id)];
      if (id == o.eos_token_id) {
        r.finished = true;
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
  };
  const int nb = o.num_beams;
  std::vector<Hyp> hyps;
  const auto hyp_score = [&](double sum, std::size_t len) {
    return sum / std::pow(static_cast<double>(std::max<std::size_t>(len, 1)), o.length_penalty);
  };
  const auto worst = [&] {
    double w = std::numeric_limits<double>::infinity();
    for (const auto& h : hyps) w = std::min(w, h.score);
    return w;
  };
  const auto add_hyp = [&](std::vector<int> ids, double sum, bool finished) {
    const double sc = hyp_score(sum, ids.size());
    if (static_cast<int>(hyps.size()) < nb) {
      hyps.push_back({std::move(ids), sc, finished});
    } else if (sc > worst()) {
      auto it =
          std::min_element(hyps.begin(), hyps.end(), [](const Hyp& a, const Hyp& b) { return a.score < b.score; });
      *it = {std::move(ids), sc, finished};
    }
  };

  std::vector<Beam> beams(1);
  beams[0].cache = decoder.make_cache();
  beams[0].hidden = decoder.forward_cached(prompt_embeds, beams[0].cache);
  bool done = false;
  for (int step = 0; step < o.max_new_tokens && !done; ++step) {
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
    const std::size_t keep = std::min<std::size_t>(cands.size(), static_cast<std::size_t>(2 * nb));
    std::partial_sort(cands.begin(), cands.begin() + static_cast<std::ptrdiff_t>(keep), cands.end(),
                      [](const Cand& a, const Cand& b) {
                        return a.total != b.total ? a.total > b.total
                                                  : (a.beam != b.beam ? a.beam < b.beam : a.token < b.token);
                      });
    std::vector<Beam> next;
    for (std::size_t rank = 0; rank < keep && static_cast<int>(next.size()) < nb; ++rank) {
      const Cand& c = cands[rank];
      const Beam& parent = beams[static_cast<std::size_t>(c.beam)];
      if (c.token == o.eos_token_id) {
        if (rank < static_cast<std::size_t>(nb)) add_hyp(parent.ids, c.total, true);
        continue;
      }
      Beam child{.ids = parent.ids, .logprob = c.total, .cache = parent.cache, .hidden = {}};
      child.ids.push_back(c.token);
      const int one[1] = {c.token};
      child.hidden = decoder.forward_cached(decoder.embed(std::span<const int>(one, 1)), child.cache);
      next.push_back(std::move(child));
    }
    beams = std::move(next);
    if (beams.empty()) break;
    if (static_cast<int>(hyps.size()) >= nb) {
      double best_running = -std::numeric_limits<double>::infinity();
      for (const auto& b : beams) best_running = std::max(best_running, b.logprob);
      done = hyp_score(best_running, beams.front().ids.size()) <= worst();
    }
  }
  if (!done)
    for (const auto& b : beams) add_hyp(b.ids, b.logprob, false);
  require(!hyps.empty(), "generate: beam search produced no hypothesis");
  const auto best =
      std::max_element(hyps.begin(), hyps.end(), [](const Hyp& a, const Hyp& b) { return a.score < b.score; });
  return GenerationResult{.ids = best->ids, .score = best->score, .finished = best->finished};
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
