// Korean morpheme METEOR (MecabKoTokenizer) against tests/fixtures/eval/korean_meteor.json, written by
// tools/reference/korean_meteor.py: the tokens of Debian's mecab program (grouped into Okt units by the
// script's own code), nltk meteor_score on those tokens, and the users' metric (nltk over KoNLPy Okt morphs).
#include <catch2/catch.hpp>

#include <fixtures.hpp>
#include <vidlora/eval.hpp>
#include <vidlora/eval/mecab_tokenizer.hpp>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using namespace vidlora;

namespace {

const nlohmann::json& fixture() {
  static const nlohmann::json f = test::load_fixture("eval/korean_meteor.json");
  return f;
}

struct Pairs {
  std::vector<std::string> candidates;
  std::vector<std::vector<std::string>> references;
};

Pairs pairs() {
  Pairs p;
  for (const auto& pair : fixture()["pairs"]) {
    p.candidates.push_back(pair["caption"]);
    p.references.push_back(pair["references"]);
  }
  return p;
}

const char* key(eval::MecabKoUnits units) {
  return units == eval::MecabKoUnits::OktUnits ? "mecab_okt_units" : "mecab_morphemes";
}

}  // namespace

TEST_CASE("MecabKoTokenizer gives the mecab program's tokens on 240 Korean caption pairs", "[eval][mecab]") {
  for (auto units : {eval::MecabKoUnits::OktUnits, eval::MecabKoUnits::Morphemes}) {
    eval::MecabKoTokenizer tokenizer(VIDLORA_MECAB_KO_DIC, units);
    REQUIRE(fixture()["pairs"].size() >= 200);
    for (const auto& pair : fixture()["pairs"]) {
      INFO(pair["id"].get<std::string>() << " " << key(units));
      const auto& want = pair[key(units)];
      CHECK(tokenizer.tokenize(pair["caption"].get<std::string>()) == want["caption"].get<std::vector<std::string>>());
      for (std::size_t k = 0; k < pair["references"].size(); ++k)
        CHECK(tokenizer.tokenize(pair["references"][k].get<std::string>()) ==
              want["references"][k].get<std::vector<std::string>>());
    }
  }
}

TEST_CASE("Okt units join a predicate with its endings, particles with particles, XR with XSA", "[eval][mecab]") {
  eval::MecabKoTokenizer units(VIDLORA_MECAB_KO_DIC, eval::MecabKoUnits::OktUnits);
  eval::MecabKoTokenizer morphemes(VIDLORA_MECAB_KO_DIC, eval::MecabKoUnits::Morphemes);
  const std::string text = "높은 빌딩들이 화려하게 빛나고 있으며, 공원에서는 시민들이 운동하고 있다.";
  CHECK(morphemes.tokenize(text) ==
        std::vector<std::string>{"높", "은", "빌딩", "들", "이", "화려", "하", "게", "빛나", "고", "있", "으며", ",", "공원",
                                 "에서", "는", "시민", "들", "이", "운동", "하", "고", "있", "다", "."});
  // These are Okt's morphs() for the same text (KoNLPy 0.6.0).
  CHECK(units.tokenize(text) == std::vector<std::string>{"높은", "빌딩", "들", "이", "화려하게", "빛나고", "있으며", ",", "공원",
                                                         "에서는", "시민", "들", "이", "운동", "하고", "있다", "."});
  CHECK(units.name() == "mecab-ko-dic okt-units");
  CHECK(morphemes.name() == "mecab-ko-dic morphemes");
  CHECK(units.tokenize("").empty());
  CHECK(units.tokenize("   ").empty());
  eval::MecabKoTokenizer copy = units;  // shares the model, has its own lattice
  CHECK(copy.tokenize("하늘이 맑다.") == units.tokenize("하늘이 맑다."));
}

TEST_CASE("METEOR over MeCab tokens equals nltk meteor_score on the same tokens", "[eval][mecab][meteor]") {
  const auto p = pairs();
  for (auto units : {eval::MecabKoUnits::OktUnits, eval::MecabKoUnits::Morphemes}) {
    INFO(key(units));
    eval::MecabKoTokenizer tokenizer(VIDLORA_MECAB_KO_DIC, units);
    const auto got = eval::meteor(p.candidates, p.references, tokenizer);
    const auto& pairs_json = fixture()["pairs"];
    REQUIRE(got.per_caption.size() == pairs_json.size());
    for (std::size_t i = 0; i < got.per_caption.size(); ++i) {
      INFO(pairs_json[i]["id"].get<std::string>());
      // nltk with its defaults (Porter stemmer, WordNet 3.0) and with exact matching only agree on Korean.
      CHECK(got.per_caption[i] == Approx(pairs_json[i]["meteor"][key(units)].get<double>()).margin(1e-12));
      CHECK(got.per_caption[i] == Approx(pairs_json[i]["meteor_exact"][key(units)].get<double>()).margin(1e-12));
    }
    CHECK(got.meteor == Approx(fixture()["corpus"][key(units)].get<double>()).margin(1e-12));
  }
}

TEST_CASE("the Okt-unit METEOR is within 0.01 of the users' Okt METEOR on the fixture corpus", "[eval][mecab][meteor]") {
  const auto p = pairs();
  eval::MecabKoTokenizer tokenizer(VIDLORA_MECAB_KO_DIC);
  eval::CaptionMetricsOptions options;
  options.morpheme_tokenizer = tokenizer;
  const auto m = eval::caption_metrics(p.candidates, p.references, options);
  const double okt = fixture()["corpus"]["okt"].get<double>();
  INFO("vidlora " << m.meteor_morphemes << " vs Okt " << okt);
  CHECK(std::abs(m.meteor_morphemes - okt) <= 0.01);
  CHECK(m.meteor_morphemes_tokenizer == "mecab-ko-dic okt-units");
  // Raw morphemes are further from the users' numbers (the reason for the Okt units).
  eval::MecabKoTokenizer morphemes(VIDLORA_MECAB_KO_DIC, eval::MecabKoUnits::Morphemes);
  CHECK(std::abs(eval::meteor(p.candidates, p.references, morphemes).meteor - okt) > 0.01);
}

TEST_CASE("MecabKoTokenizer names a missing or broken dictionary", "[eval][mecab][errors]") {
  namespace fs = std::filesystem;
  CHECK_THROWS_WITH(eval::MecabKoTokenizer("/nonexistent/mecab-ko-dic"),
                    Catch::Contains("mecab-ko-dic dictionary directory '/nonexistent/mecab-ko-dic' not found") &&
                        Catch::Contains("tools/install-deps.sh"));
  const fs::path dir = fs::temp_directory_path() / "vidlora_not_a_dictionary";
  fs::create_directories(dir);
  CHECK_THROWS_WITH(eval::MecabKoTokenizer(dir),
                    Catch::Contains("'" + dir.string() + "' is not a compiled mecab-ko-dic dictionary: sys.dic is missing"));
  // All files there but not a dictionary: MeCab's own error, with the directory named.
  for (const char* file : {"sys.dic", "matrix.bin", "char.bin", "unk.dic", "dicrc"}) std::ofstream(dir / file) << "x";
  CHECK_THROWS_WITH(eval::MecabKoTokenizer(dir), Catch::Contains("MeCab cannot load the dictionary '" + dir.string() + "'"));
  fs::remove_all(dir);
}

TEST_CASE("default_mecab_ko_dictionary follows VIDLORA_MECAB_KO_DIC", "[eval][mecab]") {
  ::unsetenv("VIDLORA_MECAB_KO_DIC");
  CHECK(eval::default_mecab_ko_dictionary() == "/usr/local/lib/mecab/dic/mecab-ko-dic");
  ::setenv("VIDLORA_MECAB_KO_DIC", "/somewhere/else", 1);
  CHECK(eval::default_mecab_ko_dictionary() == "/somewhere/else");
  CHECK_THROWS_WITH(eval::MecabKoTokenizer(), Catch::Contains("'/somewhere/else' not found"));
  ::unsetenv("VIDLORA_MECAB_KO_DIC");
}
