#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>

#include <fixtures.hpp>
#include <vidlora/eval.hpp>

#include <string>
#include <vector>

using namespace vidlora;

namespace {

constexpr double kTol = 1e-9;  // the formulas are evaluated in float64 in the same order as the reference

struct Case {
  std::string name;
  std::vector<std::string> candidates;
  std::vector<std::vector<std::string>> references;
  nlohmann::json whitespace, characters;
};

std::vector<Case> load_cases() {
  const auto fixture = test::load_fixture("eval/caption_metrics.json");
  std::vector<Case> cases;
  for (const auto& c : fixture["cases"])
    cases.push_back({c["name"], c["candidates"], c["references"], c["whitespace"], c["characters"]});
  return cases;
}

void check_all(const std::vector<double>& got, const nlohmann::json& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("caption " << i);
    CHECK(got[i] == Approx(want[i].get<double>()).margin(kTol));
  }
}

template <class F>
void for_each_case(F&& f) {
  for (const auto& c : load_cases()) {
    for (auto mode : {eval::Tokenization::Whitespace, eval::Tokenization::Characters}) {
      const bool words = mode == eval::Tokenization::Whitespace;
      INFO(c.name << (words ? " on words" : " on characters"));
      f(c, mode, words ? c.whitespace : c.characters);
    }
  }
}

}  // namespace

TEST_CASE("bleu matches pycocoevalcap Bleu 4 at corpus and caption level", "[eval][bleu]") {
  for_each_case([](const Case& c, eval::Tokenization mode, const nlohmann::json& want) {
    const auto got = eval::bleu(c.candidates, c.references, mode);
    for (int k = 0; k < 4; ++k) CHECK(got.bleu[k] == Approx(want["bleu"][k].get<double>()).margin(kTol));
    check_all(got.bleu4_per_caption, want["bleu4_per_caption"]);
  });
}

TEST_CASE("cider-d matches pycocoevalcap Cider with corpus document frequency", "[eval][cider]") {
  for_each_case([](const Case& c, eval::Tokenization mode, const nlohmann::json& want) {
    const auto got = eval::cider_d(c.candidates, c.references, mode);
    CHECK(got.cider_d == Approx(want["cider_d"].get<double>()).margin(kTol));
    check_all(got.per_caption, want["cider_d_per_caption"]);
  });
}

TEST_CASE("rouge-l matches pycocoevalcap Rouge with beta 1.2", "[eval][rouge]") {
  for_each_case([](const Case& c, eval::Tokenization mode, const nlohmann::json& want) {
    const auto got = eval::rouge_l(c.candidates, c.references, mode);
    CHECK(got.rouge_l == Approx(want["rouge_l"].get<double>()).margin(kTol));
    check_all(got.per_caption, want["rouge_l_per_caption"]);
  });
}

TEST_CASE("meteor matches nltk meteor_score with exact matching only", "[eval][meteor]") {
  for_each_case([](const Case& c, eval::Tokenization mode, const nlohmann::json& want) {
    const auto got = eval::meteor(c.candidates, c.references, mode);
    CHECK(got.meteor == Approx(want["meteor"].get<double>()).margin(kTol));
    check_all(got.per_caption, want["meteor_per_caption"]);
  });
}

TEST_CASE("diversity ratios match their definition on the fixture captions", "[eval][diversity]") {
  for_each_case([](const Case& c, eval::Tokenization mode, const nlohmann::json& want) {
    const auto d = eval::diversity(c.candidates, mode);
    CHECK(d.unique_ratio == Approx(want["unique_ratio"].get<double>()).margin(kTol));
    CHECK(d.distinct_1 == Approx(want["distinct_1"].get<double>()).margin(kTol));
    CHECK(d.distinct_2 == Approx(want["distinct_2"].get<double>()).margin(kTol));
  });
}

TEST_CASE("caption_metrics combines the four metrics and diversity", "[eval]") {
  const auto c = load_cases().at(9);  // korean demo captions
  const auto m = eval::caption_metrics(c.candidates, c.references);
  CHECK(m.bleu4 == Approx(c.whitespace["bleu"][3].get<double>()).margin(kTol));
  CHECK(m.meteor == Approx(c.whitespace["meteor"].get<double>()).margin(kTol));
  CHECK(m.cider_d == Approx(c.whitespace["cider_d"].get<double>()).margin(kTol));
  CHECK(m.rouge_l == Approx(c.whitespace["rouge_l"].get<double>()).margin(kTol));
  CHECK(m.diversity.unique_ratio == Approx(c.whitespace["unique_ratio"].get<double>()));
}

TEST_CASE("bleu uses the closest reference length and the shorter one on a tie", "[eval][bleu]") {
  // candidate of 4 tokens, references of 3 and 5 tokens: both 1 away, the shorter (3) counts, no penalty
  const std::vector<std::string> cand{"a b c d"};
  const std::vector<std::vector<std::string>> refs{{"a b c", "a b c d e"}};
  const auto got = eval::bleu(cand, refs);
  CHECK(got.candidate_length == 4);
  CHECK(got.reference_length == 3);
  CHECK(got.bleu[0] == Approx(1.0).epsilon(1e-9));
}

TEST_CASE("meteor aligns the last unaligned equal reference token and counts chunks", "[eval][meteor]") {
  // nltk: "a cat sat on the mat" vs "the cat sat on a mat": 6 matches in 4 chunks
  const auto corpus = eval::make_corpus(std::vector<std::string>{"a cat sat on the mat"},
                                        std::vector<std::vector<std::string>>{{"the cat sat on a mat"}});
  const auto align = eval::meteor_alignment(corpus.candidates[0], corpus.references[0][0]);
  REQUIRE(align.size() == 6);
  CHECK(align[0] == std::pair<std::size_t, std::size_t>{0, 4});
  CHECK(align[4] == std::pair<std::size_t, std::size_t>{4, 0});
  CHECK(eval::meteor_sentence(corpus.candidates[0], corpus.references[0][0]) ==
        Approx(1.0 - 0.5 * (4.0 / 6.0) * (4.0 / 6.0) * (4.0 / 6.0)).epsilon(1e-12));
}

TEST_CASE("meteor's alignment is nltk's rule for short and long sentences", "[eval][meteor]") {
  // nltk's _match_enums as written there: from the candidate's last token back, the last still-unaligned
  // equal reference token. Short pairs take the scanning path, long ones (over 4,096 token pairs) the map.
  const auto nltk_rule = [](const eval::TokenIds& c, const eval::TokenIds& r) {
    std::vector<std::pair<std::size_t, std::size_t>> out;
    std::vector<bool> used(r.size(), false);
    for (std::size_t i = c.size(); i-- > 0;)
      for (std::size_t j = r.size(); j-- > 0;)
        if (!used[j] && r[j] == c[i]) {
          used[j] = true;
          out.emplace_back(i, j);
          break;
        }
    std::reverse(out.begin(), out.end());
    return out;
  };
  std::uint64_t rng = 12345;
  const auto next = [&rng](std::uint32_t n) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<std::uint32_t>((rng >> 33) % n);
  };
  for (const std::size_t length :
       {std::size_t{1}, std::size_t{7}, std::size_t{40}, std::size_t{64}, std::size_t{65}, std::size_t{300}}) {
    for (int trial = 0; trial < 20; ++trial) {
      eval::TokenIds c(length), r(length + static_cast<std::size_t>(trial % 3));
      for (auto& t : c) t = next(12);  // few distinct ids: many repeats
      for (auto& t : r) t = next(12);
      INFO(length << " tokens, trial " << trial);
      const auto want = nltk_rule(c, r);
      CHECK(eval::meteor_alignment(c, r) == want);
      if (want.empty()) continue;
      std::size_t chunks = 1;
      for (std::size_t k = 0; k + 1 < want.size(); ++k)
        if (!(want[k + 1].first == want[k].first + 1 && want[k + 1].second == want[k].second + 1)) ++chunks;
      const double m = static_cast<double>(want.size()), p = m / static_cast<double>(c.size()),
                   rec = m / static_cast<double>(r.size());
      const double fmean = p * rec / (0.9 * p + 0.1 * rec);
      CHECK(eval::meteor_sentence(c, r) ==
            Approx(fmean * (1 - 0.5 * std::pow(static_cast<double>(chunks) / m, 3.0))).epsilon(1e-12));
    }
  }
}

TEST_CASE("character tokens are code points without whitespace", "[eval][tokenize]") {
  const auto t = eval::tokenize("흰 원이\t움직인다.", eval::Tokenization::Characters);
  CHECK(t == std::vector<std::string>{"흰", "원", "이", "움", "직", "인", "다", "."});
  CHECK(eval::tokenize("  흰\u3000원이  ", eval::Tokenization::Whitespace) == std::vector<std::string>{"흰", "원이"});
  CHECK(eval::tokenize("").empty());
}

TEST_CASE("mode collapse is flagged under the unique ratio threshold and names the caption", "[eval][diversity]") {
  std::vector<std::string> caps(97, "파란 배경에서 흰 원이 움직인다.");
  caps.push_back("빨간 배경에서 노란 사각형이 움직인다.");
  const auto d = eval::diversity(caps);
  CHECK(d.unique_captions == 2);
  CHECK(d.most_common_count == 97);
  const auto check = eval::check_mode_collapse(d, 0.5);
  CHECK(check.collapsed);
  CHECK_THAT(check.message, Catch::Contains("2 unique captions for 98 clips") && Catch::Contains("97x"));
  std::vector<std::string> varied{"a b", "a c", "b c", "a b"};
  CHECK_FALSE(eval::check_mode_collapse(eval::diversity(varied), 0.5).collapsed);
  CHECK(eval::check_mode_collapse(eval::diversity(varied), 0.8).collapsed);  // 3/4 < 0.8
}

TEST_CASE("caption metrics reject mismatched or empty inputs", "[eval][errors]") {
  const std::vector<std::string> two{"a", "b"};
  const std::vector<std::vector<std::string>> one{{"a"}};
  CHECK_THROWS_WITH(eval::bleu(two, one), Catch::Contains("2 candidates but 1 reference lists"));
  const std::vector<std::vector<std::string>> no_ref{{"a"}, {}};
  CHECK_THROWS_WITH(eval::cider_d(two, no_ref), Catch::Contains("caption 1 has no reference"));
  CHECK_THROWS_WITH(eval::meteor(std::vector<std::string>{}, std::vector<std::vector<std::string>>{}),
                    Catch::Contains("no candidates"));
  CHECK_THROWS_WITH(eval::check_mode_collapse(eval::Diversity{}, 1.5), Catch::Contains("threshold"));
}
