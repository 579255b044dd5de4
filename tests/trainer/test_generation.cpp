// Generation: greedy, sampling and beam search over the decoder's KV cache, repetition penalty, no-repeat n-grams,
// minimum lengths, EOS ids, the sampling warpers and the draw.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <set>
#include <vector>

#include <vidlora/model/decoder.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/model/generation.hpp>
#include <vidlora/core/rng.hpp>

using namespace vidlora;

namespace {
model::Decoder<4, 8> tiny_decoder(int vocab, std::uint64_t seed) {
  const auto c = model::llama_config(16, 32, 2, 2, 1, vocab);
  return model::Decoder<4, 8>(c, model::random_decoder_weights(c, seed));
}

double sequence_logprob(model::Decoder<4, 8>& d, const Matrix& prompt, const std::vector<int>& ids) {
  auto cache = d.make_cache();
  Matrix h = d.forward_cached(prompt, cache);
  double sum = 0;
  for (int id : ids) {
    const Matrix lg = d.logits(h.bottomRows(1));
    const double mx = lg.maxCoeff();
    const double lse = mx + std::log((lg.array() - static_cast<float>(mx)).exp().cast<double>().sum());
    sum += lg(0, id) - lse;
    const int one[1] = {id};
    h = d.forward_cached(d.embed(std::span<const int>(one, 1)), cache);
  }
  return sum;
}
}  // namespace

TEST_CASE("beam search with one beam equals greedy decoding", "[generation]") {
  auto d = tiny_decoder(20, 4);
  for (int p = 0; p < 4; ++p) {
    const std::vector<int> prompt{p, p + 3, 7};
    const Matrix embeds = d.embed(prompt);
    const auto reference = d.generate_greedy(std::span<const int>(prompt), 12, /*eos=*/5);
    GenerationOptions o;
    o.max_new_tokens = 12;
    o.eos_token_id = 5;
    const auto greedy = model::generate(d, embeds, o);
    std::vector<int> expect = reference;
    if (!expect.empty() && expect.back() == 5) expect.pop_back();
    CHECK(greedy.ids == expect);
    o.num_beams = 1;
    CHECK(model::generate(d, embeds, o).ids == greedy.ids);
  }
}

TEST_CASE("beam search with enough beams finds the most probable sequence", "[generation]") {
  const int vocab = 6, len = 3;
  auto d = tiny_decoder(vocab, 9);
  const Matrix prompt = d.embed(std::vector<int>{1, 2});
  double best = -1e30;
  std::vector<int> best_ids;
  for (int a = 0; a < vocab; ++a)
    for (int b = 0; b < vocab; ++b)
      for (int c = 0; c < vocab; ++c) {
        const double lp = sequence_logprob(d, prompt, {a, b, c});
        if (lp > best) {
          best = lp;
          best_ids = {a, b, c};
        }
      }
  GenerationOptions o;
  o.max_new_tokens = len;
  o.num_beams = vocab * vocab;
  o.length_penalty = 0.0;  // score = sum of log-probs
  const auto r = model::generate(d, prompt, o);
  CHECK(r.ids == best_ids);
  CHECK(r.score == Approx(best).epsilon(1e-5));
  // and greedy is never better than the exhaustive best
  o.num_beams = 1;
  CHECK(model::generate(d, prompt, o).score <= best + 1e-6);
}

TEST_CASE("repetition penalty divides positive and multiplies negative scores of seen ids once", "[generation]") {
  std::vector<float> s{2.0f, -2.0f, 1.0f, 3.0f};
  const std::vector<int> seen{0, 1, 0, 1};  // repeats count once, as transformers' gather/scatter
  model::apply_repetition_penalty(s, seen, 2.0);
  CHECK(s == std::vector<float>{1.0f, -4.0f, 1.0f, 3.0f});
}

TEST_CASE("repetition penalty changes the greedy choice on a crafted tie", "[generation]") {
  // After generating id 3, its logit 3 is divided by 1.5 -> 2 and id 2 (2.5) wins.
  std::vector<float> s{0.0f, 1.0f, 2.5f, 3.0f};
  GenerationOptions o;
  o.repetition_penalty = 1.5;
  const std::vector<int> generated{3};
  model::apply_processors(s, generated, o);
  CHECK(std::max_element(s.begin(), s.end()) - s.begin() == 2);
  CHECK(s[3] == 2.0f);
}

TEST_CASE("no repeat ngram bans the token that would repeat an n-gram", "[generation]") {
  CHECK(model::banned_ngram_tokens(std::vector<int>{1, 2, 3, 1, 2}, 3) == std::vector<int>{3});
  CHECK(model::banned_ngram_tokens(std::vector<int>{1, 2, 1, 2}, 2) == std::vector<int>{1});
  CHECK(model::banned_ngram_tokens(std::vector<int>{4, 4}, 1) == std::vector<int>{4, 4});
  CHECK(model::banned_ngram_tokens(std::vector<int>{1, 2}, 3).empty());
  auto d = tiny_decoder(12, 21);
  GenerationOptions o;
  o.max_new_tokens = 30;
  o.no_repeat_ngram_size = 2;
  const auto r = model::generate(d, d.embed(std::vector<int>{0, 1}), o);
  std::set<std::pair<int, int>> bigrams;
  for (std::size_t i = 0; i + 1 < r.ids.size(); ++i) CHECK(bigrams.emplace(r.ids[i], r.ids[i + 1]).second);
}

TEST_CASE("sampling with top_k 1 is greedy decoding and a seed gives the same draws", "[generation]") {
  auto d = tiny_decoder(24, 5);
  const Matrix prompt = d.embed(std::vector<int>{3, 1, 4});
  GenerationOptions greedy;
  greedy.max_new_tokens = 16;
  const auto reference = model::generate(d, prompt, greedy);
  GenerationOptions o = greedy;
  o.do_sample = true;
  o.top_k = 1;
  for (std::uint64_t seed : {0u, 1u, 99u}) {
    o.seed = seed;
    CHECK(model::generate(d, prompt, o).ids == reference.ids);
  }
  // Without the top-k, the draws follow the seed and the stream: the same ones give the same ids.
  o.top_k = 0;
  o.temperature = 2.0;  // a flatter distribution: other seeds differ within 16 tokens
  o.seed = 11;
  const auto a = model::generate(d, prompt, o);
  CHECK(model::generate(d, prompt, o).ids == a.ids);
  o.stream = 1;
  const auto b = model::generate(d, prompt, o);
  o.stream = 0;
  o.seed = 12;
  const auto c = model::generate(d, prompt, o);
  CHECK(a.ids != b.ids);
  CHECK(a.ids != c.ids);
  CHECK(a.ids != reference.ids);
  CHECK(a.ids.size() == 16);
}

TEST_CASE("a draw follows softmax of the scores and never takes a removed token", "[generation]") {
  const std::vector<float> scores{1.0f, -std::numeric_limits<float>::infinity(), 0.0f, 2.0f, -1.0f};
  std::vector<double> p(scores.size(), 0.0);
  double sum = 0;
  for (std::size_t i = 0; i < scores.size(); ++i) sum += p[i] = std::isfinite(scores[i]) ? std::exp(scores[i]) : 0.0;
  for (double& v : p) v /= sum;
  const int n = 40000;
  std::vector<int> counts(scores.size(), 0);
  for (int i = 0; i < n; ++i)
    ++counts[static_cast<std::size_t>(model::draw_token(scores, random_uniform_double(3, 0, i)))];
  CHECK(counts[1] == 0);
  for (std::size_t i = 0; i < scores.size(); ++i) {
    const double sd = std::sqrt(n * p[i] * (1 - p[i]));
    INFO("token " << i << ": " << counts[i] << " draws, expected " << n * p[i]);
    CHECK(std::abs(counts[i] - n * p[i]) <= 4 * sd + 1e-9);
  }
  // The ends of the uniform: u = 0 takes the first token with a probability, u just below 1 the last.
  CHECK(model::draw_token(scores, 0.0) == 0);
  CHECK(model::draw_token(scores, std::nextafter(1.0, 0.0)) == 4);
  const std::vector<float> none(3, -std::numeric_limits<float>::infinity());
  CHECK_THROWS_WITH(model::draw_token(none, 0.5), Catch::Contains("every token was removed"));
}

TEST_CASE("the sampling warpers keep what transformers keeps on crafted scores", "[generation]") {
  const float removed = -std::numeric_limits<float>::infinity();
  GenerationOptions o;
  o.do_sample = true;
  o.top_k = 2;  // ties at the second-largest score are all kept
  std::vector<float> s{1.0f, 3.0f, 2.0f, 2.0f, 0.5f};
  model::apply_sampling_warpers(s, o);
  CHECK(s == std::vector<float>{removed, 3.0f, 2.0f, 2.0f, removed});
  o.top_k = 0;
  o.top_p = 0.0;  // nothing but the most probable
  s = {1.0f, 3.0f, 2.0f, 0.5f};
  model::apply_sampling_warpers(s, o);
  CHECK(s == std::vector<float>{removed, 3.0f, removed, removed});
  o.top_p = 0.7;  // probabilities 0.09, 0.67, 0.24: the least probable goes (0.09 <= 0.3), then 0.33 > 0.3 stays
  s = {1.0f, 3.0f, 2.0f};
  model::apply_sampling_warpers(s, o);
  CHECK(s == std::vector<float>{removed, 3.0f, 2.0f});
  o.top_p = 1.0;
  o.min_p = 0.3;  // relative to the largest probability: e^-1 = 0.37 stays, e^-2 = 0.14 goes
  s = {1.0f, 3.0f, 2.0f};
  model::apply_sampling_warpers(s, o);
  CHECK(s == std::vector<float>{removed, 3.0f, 2.0f});
  o.min_p = 0.0;
  o.temperature = 0.5;
  s = {1.0f, -3.0f};
  model::apply_sampling_warpers(s, o);
  CHECK(s == std::vector<float>{2.0f, -6.0f});
}

TEST_CASE("min_new_tokens bans every EOS id and any EOS id ends a sequence", "[generation]") {
  auto d = tiny_decoder(16, 8);
  const Matrix prompt = d.embed(std::vector<int>{2, 9});
  GenerationOptions o;
  o.max_new_tokens = 10;
  const auto free_run = model::generate(d, prompt, o);
  REQUIRE(free_run.ids.size() == 10);
  // The first greedy token as an extra EOS id: generation ends at once, and reports which id ended it.
  o.eos_token_id = 15 == free_run.ids[0] ? 14 : 15;
  o.extra_eos_token_ids = {free_run.ids[0]};
  const auto stopped = model::generate(d, prompt, o);
  CHECK(stopped.ids.empty());
  CHECK(stopped.finished);
  CHECK(stopped.eos_id == free_run.ids[0]);
  // ... and Decoder::generate_greedy returns the EOS it stopped at
  CHECK(d.generate_greedy(prompt, 10, free_run.ids[0]) == std::vector<int>{free_run.ids[0]});
  // With min_new_tokens 3 the scores of every EOS id are -inf until 3 ids are generated, then they are as given.
  o.min_new_tokens = 3;
  const float removed = -std::numeric_limits<float>::infinity();
  const auto eos_scores = [&](std::vector<int> generated) {
    std::vector<float> s(16, 0.5f);
    model::process_scores(s, generated, o);
    return std::vector<float>{s[static_cast<std::size_t>(o.eos_token_id)], s[static_cast<std::size_t>(free_run.ids[0])],
                              s[3]};
  };
  CHECK(eos_scores({}) == std::vector<float>{removed, removed, 0.5f});
  CHECK(eos_scores({1, 1}) == std::vector<float>{removed, removed, 0.5f});
  CHECK(eos_scores({1, 1, 1}) == std::vector<float>{0.5f, 0.5f, 0.5f});
  // ... so the first greedy token, an EOS id now, gives way to the next best and generation goes on
  const auto later = model::generate(d, prompt, o);
  CHECK(later.ids.size() >= 3);
  CHECK(later.ids[0] != free_run.ids[0]);
  // min_length counts the context's ids: 2 context ids + 3 generated before an EOS may come, as above
  o.min_new_tokens = 0;
  o.min_length = 5;
  o.context_ids = {2, 9};
  CHECK(eos_scores({1, 1}) == std::vector<float>{removed, removed, 0.5f});
  CHECK(eos_scores({1, 1, 1}) == std::vector<float>{0.5f, 0.5f, 0.5f});
  CHECK(model::generate(d, prompt, o).ids == later.ids);
  // The same through beam search: the EOS id ends it at once without a minimum, not before 3 tokens with one.
  o.num_beams = 3;
  o.min_length = 0;
  o.context_ids.clear();
  CHECK(model::generate(d, prompt, o).ids.empty());
  o.min_new_tokens = 3;
  CHECK(model::generate(d, prompt, o).ids.size() >= 3);
}

TEST_CASE("generation options transformers refuses are refused naming them", "[generation]") {
  GenerationOptions o;
  o.do_sample = true;
  o.num_beams = 2;
  CHECK_THROWS_WITH(model::check_generation(o), Catch::Contains("beam sampling"));
  o.num_beams = 1;
  o.temperature = 0.0;
  CHECK_THROWS_WITH(model::check_generation(o), Catch::Contains("temperature must be finite and > 0"));
  o.temperature = 1.0;
  o.top_k = -1;
  CHECK_THROWS_WITH(model::check_generation(o), Catch::Contains("top_k must be >= 0"));
  o.top_k = 50;
  o.top_p = 1.5;
  CHECK_THROWS_WITH(model::check_generation(o), Catch::Contains("top_p must be in [0, 1]"));
  o.top_p = 1.0;
  o.min_p = -0.1;
  CHECK_THROWS_WITH(model::check_generation(o), Catch::Contains("min_p must be in [0, 1]"));
  o.min_p = 0.0;
  CHECK_NOTHROW(model::check_generation(o));
  o.do_sample = false;  // the warpers' settings are not read without sampling (transformers builds them only then)
  o.temperature = 0.0;
  CHECK_NOTHROW(model::check_generation(o));
  o.min_new_tokens = -1;
  CHECK_THROWS_WITH(model::check_generation(o), Catch::Contains("min_new_tokens must be >= 0"));
}

TEST_CASE("max_length counts the context's ids and refuses a context as long as it", "[generation]") {
  auto d = tiny_decoder(16, 8);
  const std::vector<int> prompt{2, 9, 4};
  GenerationOptions o;
  o.max_new_tokens = 10;
  o.max_length = 7;  // 3 context ids + 4 new
  o.context_ids = prompt;
  CHECK(model::generate(d, d.embed(prompt), o).ids.size() == 4);
  o.num_beams = 2;
  CHECK(model::generate(d, d.embed(prompt), o).ids.size() == 4);
  o.max_new_tokens = 2;  // both apply: the smaller (callers leave max_length at 0 where max_new_tokens is given)
  CHECK(model::generate(d, d.embed(prompt), o).ids.size() == 2);
  o.max_length = 3;
  CHECK_THROWS_WITH(model::generate(d, d.embed(prompt), o), Catch::Contains("nothing is left to generate"));
}
