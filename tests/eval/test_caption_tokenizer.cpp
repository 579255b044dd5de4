#include <catch2/catch.hpp>

#include <fixtures.hpp>
#include <vidlora/eval.hpp>

#include <cmath>
#include <string>
#include <string_view>
#include <vector>

using namespace vidlora;

namespace {

// A user's analyser: splits on '|' and counts how often it was called (state, as a real analyser has).
struct PipeTokenizer {
  int calls = 0;
  std::vector<std::string> tokenize(std::string_view text) {
    ++calls;
    std::vector<std::string> out;
    std::string current;
    for (char c : text) {
      if (c == '|') {
        if (!current.empty()) out.push_back(current), current.clear();
      } else {
        current += c;
      }
    }
    if (!current.empty()) out.push_back(current);
    return out;
  }
  std::string name() const { return "pipes"; }
};

struct NoName {
  std::vector<std::string> tokenize(std::string_view) { return {}; }
};
struct WrongResult {
  std::vector<int> tokenize(std::string_view) { return {}; }
  std::string name() const { return "x"; }
};

}  // namespace

TEST_CASE("CaptionTokenizer accepts the built-in policies and user types, rejects others", "[eval][tokenizer]") {
  STATIC_REQUIRE(eval::CaptionTokenizer<eval::WhitespaceTokenizer>);
  STATIC_REQUIRE(eval::CaptionTokenizer<eval::CharacterTokenizer>);
  STATIC_REQUIRE(eval::CaptionTokenizer<eval::AnyCaptionTokenizer>);
  STATIC_REQUIRE(eval::CaptionTokenizer<PipeTokenizer>);
  STATIC_REQUIRE_FALSE(eval::CaptionTokenizer<NoName>);
  STATIC_REQUIRE_FALSE(eval::CaptionTokenizer<WrongResult>);
  STATIC_REQUIRE_FALSE(eval::CaptionTokenizer<std::string>);
}

TEST_CASE("the policies tokenise as the Tokenization modes do", "[eval][tokenizer]") {
  const std::string text = "파란 배경에서\t흰 원이  움직인다.";
  CHECK(eval::WhitespaceTokenizer{}.tokenize(text) ==
        std::vector<std::string>{"파란", "배경에서", "흰", "원이", "움직인다."});
  CHECK(eval::CharacterTokenizer{}.tokenize(text).size() == 14);
  CHECK(eval::CharacterTokenizer{}.tokenize(text) == eval::tokenize(text, eval::Tokenization::Characters));
  CHECK(eval::WhitespaceTokenizer{}.name() == "whitespace");
  CHECK(eval::CharacterTokenizer{}.name() == "characters");
}

TEST_CASE("meteor with a policy equals meteor with the matching mode on the reference fixture", "[eval][tokenizer]") {
  const auto fixture = test::load_fixture("eval/caption_metrics.json");
  for (const auto& c : fixture["cases"]) {
    const std::vector<std::string> candidates = c["candidates"];
    const std::vector<std::vector<std::string>> references = c["references"];
    INFO(c["name"].get<std::string>());
    eval::WhitespaceTokenizer words;
    eval::CharacterTokenizer characters;
    const auto w = eval::meteor(candidates, references, words);
    const auto ch = eval::meteor(candidates, references, characters);
    CHECK(w.meteor == Approx(c["whitespace"]["meteor"].get<double>()).margin(1e-9));
    CHECK(ch.meteor == Approx(c["characters"]["meteor"].get<double>()).margin(1e-9));
  }
}

TEST_CASE("a user's tokenizer plugs into meteor and caption_metrics", "[eval][tokenizer]") {
  const std::vector<std::string> candidates = {"A|b|c|d", "x|y"};
  const std::vector<std::vector<std::string>> references = {{"a|b|c|e"}, {"q|r", "y|x"}};
  PipeTokenizer pipes;
  const auto score = eval::meteor(candidates, references, pipes);
  CHECK(pipes.calls == 5);  // every text once, by the caller's instance
  // Pair 1: m = 3 (a folded to lower case), P = R = 3/4, one chunk: Fmean = 0.75, penalty 0.5 (1/3)^3.
  const double s1 = 0.75 * (1 - 0.5 / 27.0);
  // Pair 2 against "y x": m = 2, P = R = 1, chunks 2: Fmean 1, penalty 0.5 (2/2)^3 = 0.5.
  const double s2 = 0.5;
  REQUIRE(score.per_caption.size() == 2);
  CHECK(score.per_caption[0] == Approx(s1).margin(1e-12));
  CHECK(score.per_caption[1] == Approx(s2).margin(1e-12));
  CHECK(score.meteor == Approx((s1 + s2) / 2).margin(1e-12));

  eval::CaptionMetricsOptions options;
  CHECK(std::isnan(eval::caption_metrics(candidates, references, options).meteor_morphemes));
  options.morpheme_tokenizer = PipeTokenizer{};
  const auto m = eval::caption_metrics(candidates, references, options);
  CHECK(m.meteor_morphemes == Approx((s1 + s2) / 2).margin(1e-12));
  CHECK(m.meteor_morphemes_tokenizer == "pipes");
  // The whitespace METEOR is unchanged by the option: "A|b|c|d" is one word that matches nothing.
  CHECK(m.meteor == 0.0);
}

TEST_CASE("AnyCaptionTokenizer shares its tokenizer and refuses to run empty", "[eval][tokenizer]") {
  eval::AnyCaptionTokenizer any = PipeTokenizer{};
  eval::AnyCaptionTokenizer copy = any;
  CHECK(any.tokenize("a|b") == std::vector<std::string>{"a", "b"});
  CHECK(copy.name() == "pipes");
  eval::AnyCaptionTokenizer empty;
  CHECK_FALSE(empty);
  CHECK(empty.name() == "(none)");
  CHECK_THROWS_WITH(empty.tokenize("a"), Catch::Contains("AnyCaptionTokenizer: no tokenizer set"));
  eval::CaptionMetricsOptions options;
  options.morpheme_tokenizer = eval::AnyCaptionTokenizer{};
  const std::vector<std::string> c = {"a"};
  const std::vector<std::vector<std::string>> r = {{"a"}};
  CHECK_THROWS_WITH(eval::caption_metrics(c, r, options),
                    Catch::Contains("morpheme_tokenizer is set but holds no tokenizer"));
}

TEST_CASE("CachingTokenizer analyses each text once and returns the same tokens", "[eval][tokenizer]") {
  eval::CachingTokenizer<PipeTokenizer> cached(PipeTokenizer{}, 3);
  STATIC_REQUIRE(eval::CaptionTokenizer<eval::CachingTokenizer<PipeTokenizer>>);
  CHECK(cached.tokenize("a|b") == std::vector<std::string>{"a", "b"});
  CHECK(cached.tokenize("a|b") == std::vector<std::string>{"a", "b"});
  CHECK(cached.wrapped().calls == 1);
  CHECK(cached.hits() == 1);
  CHECK(cached.misses() == 1);
  CHECK(cached.name() == "pipes");
  // The trainer's pattern: the same references every evaluation, new candidates.
  const std::vector<std::string> candidates = {"A|b|c|d", "x|y"};
  const std::vector<std::vector<std::string>> references = {{"a|b|c|e"}, {"q|r", "y|x"}};
  eval::CachingTokenizer<PipeTokenizer> memo(PipeTokenizer{});
  const double first = eval::meteor(candidates, references, memo).meteor;
  const double second = eval::meteor(candidates, references, memo).meteor;
  CHECK(first == second);
  CHECK(memo.wrapped().calls == 5);
  CHECK(memo.hits() == 5);
  // Full memo: cleared and refilled, still correct.
  for (const char* t : {"1", "2", "3", "4"}) CHECK(cached.tokenize(t) == std::vector<std::string>{t});
  CHECK(cached.size() <= 3);
  CHECK_THROWS_WITH(eval::CachingTokenizer<PipeTokenizer>(PipeTokenizer{}, 0),
                    Catch::Contains("max_entries must be > 0"));
}
