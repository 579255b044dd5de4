// Korean morpheme METEOR (MecabKoTokenizer) against tests/fixtures/eval/korean_meteor.json, written by
// tools/reference/korean_meteor.py: the tokens of Debian's mecab program (grouped into Okt units by the
// script's own code), nltk meteor_score on those tokens, and the users' metric (nltk over KoNLPy Okt morphs).
#include <catch2/catch.hpp>

#include <fixtures.hpp>
#include <vidlora/eval.hpp>
#include <vidlora/eval/mecab_tokenizer.hpp>

#include <cmath>
#include <cstdint>
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
  CHECK(morphemes.tokenize(text) == std::vector<std::string>{"높",   "은",   "빌딩", "들", "이",   "화려", "하",
                                                             "게",   "빛나", "고",   "있", "으며", ",",    "공원",
                                                             "에서", "는",   "시민", "들", "이",   "운동", "하",
                                                             "고",   "있",   "다",   "."});
  // These are Okt's morphs() for the same text (KoNLPy 0.6.0).
  CHECK(units.tokenize(text) == std::vector<std::string>{"높은", "빌딩", "들", "이", "화려하게", "빛나고", "있으며",
                                                         ",", "공원", "에서는", "시민", "들", "이", "운동", "하고",
                                                         "있다", "."});
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

TEST_CASE("the Okt-unit METEOR is within 0.01 of the users' Okt METEOR on the fixture corpus",
          "[eval][mecab][meteor]") {
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
  CHECK_THROWS_WITH(
      eval::MecabKoTokenizer(dir),
      Catch::Contains("'" + dir.string() + "' is not a compiled mecab-ko-dic dictionary: sys.dic is missing"));
  // All files there but not a dictionary: MeCab's own error, with the directory named.
  for (const char* file : {"sys.dic", "matrix.bin", "char.bin", "unk.dic", "dicrc"}) std::ofstream(dir / file) << "x";
  CHECK_THROWS_WITH(eval::MecabKoTokenizer(dir),
                    Catch::Contains("MeCab cannot load the dictionary '" + dir.string() + "'"));
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

namespace {

constexpr std::size_t kOddTexts = 15;  // the last texts of memo_test_texts(): odd whitespace, symbols, cut characters

// Every caption of tools/make_demo_data.sh's grammar (the demo's captions): background, shape colour, shape,
// motion, then nothing, a shake or a scene change to a third colour.
std::vector<std::string> demo_grammar_captions() {
  const std::vector<std::string> colours{"빨간", "파란", "초록", "노란", "보라", "검은", "흰", "주황"};
  const std::vector<std::string> shapes{"원이", "사각형이"};
  const std::vector<std::string> motions{"왼쪽에서 오른쪽으로 움직인다.", "오른쪽에서 왼쪽으로 움직인다.",
                                         "위에서 아래로 움직인다.", "아래에서 위로 움직인다.", "제자리에 멈춰 있다."};
  std::vector<std::string> out;
  for (std::size_t bg = 0; bg < colours.size(); ++bg)
    for (std::size_t fg = 0; fg < colours.size(); ++fg) {
      if (fg == bg) continue;
      for (const auto& shape : shapes)
        for (const auto& motion : motions) {
          const std::string base = colours[bg] + " 배경에서 " + colours[fg] + " " + shape + " " + motion;
          out.push_back(base);
          out.push_back(base + " 잠시 빠르게 흔들린다.");
          for (std::size_t bg2 = 0; bg2 < colours.size(); ++bg2)
            if (bg2 != bg && bg2 != fg) out.push_back(base + " 장면이 바뀌어 " + colours[bg2] + " 배경이 나타난다.");
        }
    }
  return out;
}

// The fixture's texts, the demo grammar's captions, sentences of the fixture's words in random order (new
// neighbours for every word) and texts with odd whitespace, digits, Latin letters and symbols.
std::vector<std::string> memo_test_texts() {
  std::vector<std::string> texts, words;
  for (const auto& pair : fixture()["pairs"]) {
    texts.push_back(pair["caption"]);
    for (const auto& r : pair["references"]) texts.push_back(r);
  }
  for (const auto& t : texts)
    for (std::size_t s = 0; s < t.size();) {
      const auto e = std::min(t.find(' ', s), t.size());
      if (e > s) words.push_back(t.substr(s, e - s));
      s = e + 1;
    }
  for (auto& c : demo_grammar_captions()) texts.push_back(std::move(c));
  std::uint64_t rng = 0x9E3779B97F4A7C15ull;
  const auto next = [&rng](std::size_t n) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<std::size_t>((rng >> 33) % n);
  };
  for (int s = 0; s < 3000; ++s) {
    std::string t;
    const std::size_t n = 1 + next(16);
    for (std::size_t k = 0; k < n; ++k) t += (k ? " " : "") + words[next(words.size())];
    texts.push_back(t);
  }
  // kOddTexts of them
  for (const char* odd :
       {"  하늘이  맑다.  ", " 하늘이", "하늘이 ", "\t하늘이\t맑고\n바다가 푸르다", "하늘이 \t 맑다",
        "LED 조명 3개가 켜져 있고 CCTV가 2024년 12월에 설치됐다!", "하늘이\u3000맑다 \u3000 바다",
        "가 나 다 라 마 바 사", "ㅋㅋㅋ ㅎㅎ 😀 빌딩들이 높다...", "\t", " \u3000 ", "a b c 1 2 3 . , !",
        // not UTF-8: a character cut at a word's end (MeCab reads the space into it), a stray continuation byte
        "하늘이\xEB 맑다", "하늘\xEA\xB0 바다가 푸르다", "하늘이 \x80맑다"})
    texts.emplace_back(odd);
  return texts;
}

}  // namespace

TEST_CASE("the eojeol memo gives MeCab's whole-sentence analysis and cost", "[eval][mecab]") {
  const std::string dic = VIDLORA_MECAB_KO_DIC;
  std::string program = "test", rc = "-r", rc_path = "/dev/null", d = "-d";
  std::string dic_arg = dic;
  char* argv[] = {program.data(), rc.data(), rc_path.data(), d.data(), dic_arg.data()};
  std::shared_ptr<MeCab::Model> model(MeCab::createModel(5, argv));
  REQUIRE(model);
  std::unique_ptr<MeCab::Tagger> tagger(model->createTagger());
  std::unique_ptr<MeCab::Lattice> lattice(model->createLattice());
  eval::MecabEojeolMemo memo(dic, model);
  REQUIRE(memo.enabled());
  const auto texts = memo_test_texts();
  REQUIRE(texts.size() > 4000 + 3000 + 480);
  std::size_t unique = 0, unique_regular = 0;
  std::vector<eval::MecabKoMorpheme> got;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    const auto& text = texts[i];
    INFO(text);
    std::int64_t cost = 0;
    const bool ok = memo.analyse(text, got, &cost);
    // MeCab on the whole text
    lattice->set_sentence(text.data(), text.size());
    REQUIRE(tagger->parse(lattice.get()));
    std::vector<std::string> want_surfaces, got_surfaces, want_tags, got_tags;
    std::vector<bool> want_spaces, got_spaces;
    for (const MeCab::Node* n = lattice->bos_node()->next; n && n->stat != MECAB_EOS_NODE; n = n->next) {
      want_surfaces.emplace_back(n->surface, n->length);
      const auto tags = eval::detail::ko_tags(n->feature);
      want_tags.push_back(std::string(tags.first) + "/" + std::string(tags.last));
      want_spaces.push_back(n->rlength != n->length);
    }
    if (!ok) continue;  // several cheapest analyses or odd whitespace: the tokenizer analyses the text whole
    ++unique;
    if (i + kOddTexts < texts.size()) ++unique_regular;
    for (const auto& m : got) {
      got_surfaces.emplace_back(m.surface);
      got_tags.push_back(std::string(m.first_tag) + "/" + std::string(m.last_tag));
      got_spaces.push_back(m.space_before);
    }
    CHECK(cost == lattice->eos_node()->cost);
    CHECK(got_surfaces == want_surfaces);
    CHECK(got_tags == want_tags);
    CHECK(got_spaces == want_spaces);
  }
  INFO(unique << " of " << texts.size() << " texts had one cheapest analysis");
  // Every caption-like text is assembled from the memo; of the odd ones, those with a tab or newline at a
  // word's edge ("\t하늘이...", "하늘이 \t 맑다", "\t") or a word that is not UTF-8 (3 texts) are left to MeCab.
  CHECK(unique_regular == texts.size() - kOddTexts);
  CHECK(unique == texts.size() - 6);
  CHECK(memo.hits() > memo.misses());
}

TEST_CASE("MecabKoTokenizer with the eojeol memo gives the tokens of whole-sentence analysis", "[eval][mecab]") {
  const auto texts = memo_test_texts();
  for (auto units : {eval::MecabKoUnits::OktUnits, eval::MecabKoUnits::Morphemes}) {
    INFO(key(units));
    eval::MecabKoTokenizer memo(VIDLORA_MECAB_KO_DIC, units, eval::MecabKoAnalysis::EojeolMemo);
    eval::MecabKoTokenizer whole(VIDLORA_MECAB_KO_DIC, units, eval::MecabKoAnalysis::WholeSentence);
    REQUIRE(memo.memo_enabled());
    CHECK(!whole.memo_enabled());
    for (const auto& text : texts) {
      INFO(text);
      CHECK(memo.tokenize(text) == whole.tokenize(text));
    }
    CHECK(memo.memo_hits() > 5 * memo.memo_misses());
    CHECK(memo.whole_sentence_fallbacks() == 6);
    CHECK(whole.memo_hits() + whole.memo_misses() + whole.whole_sentence_fallbacks() == 0);
    // A copy starts with an empty memo and gives the same tokens.
    eval::MecabKoTokenizer copy = memo;
    CHECK(copy.memo_hits() + copy.memo_misses() == 0);
    CHECK(copy.tokenize(texts.front()) == whole.tokenize(texts.front()));
  }
}

TEST_CASE("the eojeol memo names a broken connection matrix", "[eval][mecab][errors]") {
  CHECK_THROWS_WITH(eval::detail::MecabConnectionMatrix("/nonexistent/matrix.bin"),
                    Catch::Contains("cannot open the connection matrix '/nonexistent/matrix.bin'"));
  const auto file = std::filesystem::temp_directory_path() / "vidlora_bad_matrix.bin";
  std::ofstream(file, std::ios::binary) << "abcdefgh";  // sizes 0x6261 x 0x6463 would need far more bytes
  CHECK_THROWS_WITH(eval::detail::MecabConnectionMatrix(file),
                    Catch::Contains("'" + file.string() + "' is not a MeCab connection matrix: 8 bytes"));
  std::filesystem::remove(file);
}
