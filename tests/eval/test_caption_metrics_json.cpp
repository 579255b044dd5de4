// CaptionMetrics described once (eval/caption_metrics_json.hpp): every score reachable by its name, the
// record round-trips through JSON (NaN as null), old records without the morpheme METEOR still read, and a
// damaged record is an error naming the field.

#include <catch2/catch.hpp>

#include <cmath>
#include <set>
#include <string>
#include <vector>

#include <vidlora/eval/caption_metrics_json.hpp>

using namespace vidlora;
using namespace vidlora::eval;

namespace {
eval::CaptionMetrics scored() {
  const std::vector<std::string> candidates{"a red circle moves left", "a blue square", "a red circle moves left"};
  const std::vector<std::vector<std::string>> refs{
      {"a red circle moves left"}, {"a blue square stays"}, {"a green star"}};
  return eval::caption_metrics(candidates, refs);
}
}  // namespace

TEST_CASE("every caption score has a unique name that reads and writes its own field", "[eval][metrics]") {
  std::set<std::string_view> names;
  for (const auto& s : caption_scores) {
    INFO(s.name);
    CHECK(names.insert(s.name).second);
    CHECK(find_caption_score(s.name) == &s);
    eval::CaptionMetrics m;
    s.set(m, 0.625);
    CHECK(s.get(m) == 0.625);
    // No other score moved: each accessor pair owns exactly one field.
    for (const auto& other : caption_scores)
      if (&other != &s && other.group != ScoreGroup::Morphemes) CHECK(other.get(m) != 0.625);
  }
  CHECK(find_caption_score("meteor_morphems") == nullptr);
  CHECK(caption_score_names() ==
        "bleu4, meteor, cider_d, rouge_l, unique_ratio, distinct_1, distinct_2, meteor_morphemes");
  const eval::CaptionMetrics m = scored();
  CHECK(find_caption_score("cider_d")->get(m) == m.cider_d);
  CHECK(find_caption_score("distinct_2")->get(m) == m.diversity.distinct_2);
}

TEST_CASE("the log's score values leave out the morpheme METEOR unless it was computed", "[eval][metrics]") {
  eval::CaptionMetrics m = scored();
  auto values = caption_score_values(m);
  CHECK(values.size() == caption_scores.size() - 1);
  CHECK(values.at("meteor") == m.meteor);
  CHECK(values.count("meteor_morphemes") == 0);
  m.meteor_morphemes = 0.31;
  m.meteor_morphemes_tokenizer = "mecab-ko-dic okt-units";
  values = caption_score_values(m);
  CHECK(values.at("meteor_morphemes") == 0.31);
}

TEST_CASE("caption metrics round-trip through JSON with NaN kept as null", "[eval][metrics]") {
  eval::CaptionMetrics m = scored();
  m.rouge_l = std::nan("");
  const nlohmann::json j = caption_metrics_to_json(m);
  CHECK(j.at("rouge_l").is_null());
  CHECK(j.at("meteor_morphemes").is_null());  // not computed: NaN
  CHECK(j.at("diversity").at("most_common") == m.diversity.most_common);
  const eval::CaptionMetrics back = caption_metrics_from_json(nlohmann::json::parse(j.dump()));
  for (const auto& s : caption_scores) {
    INFO(s.name);
    if (std::isnan(s.get(m)))
      CHECK(std::isnan(s.get(back)));
    else
      CHECK(s.get(back) == s.get(m));
  }
  CHECK(back.diversity.captions == 3);
  CHECK(back.diversity.unique_captions == 2);
  CHECK(back.diversity.most_common_count == 2);
  CHECK(back.meteor_morphemes_tokenizer.empty());
}

TEST_CASE("a record without the morpheme METEOR reads and a damaged one names its field", "[eval][metrics][errors]") {
  nlohmann::json j = caption_metrics_to_json(scored());
  j.erase("meteor_morphemes");
  j.erase("meteor_morphemes_tokenizer");
  CHECK(std::isnan(caption_metrics_from_json(j).meteor_morphemes));
  j.erase("cider_d");
  CHECK_THROWS_WITH(caption_metrics_from_json(j), Catch::Contains("cider_d"));
  nlohmann::json k = caption_metrics_to_json(scored());
  k["diversity"]["captions"] = "three";
  CHECK_THROWS_AS(caption_metrics_from_json(k), Error);
}
