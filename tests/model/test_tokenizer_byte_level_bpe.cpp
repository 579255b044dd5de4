// ByteLevelBpeTokenizer against HF `tokenizers` on a Qwen2-style tokenizer.json (fixtures: tools/reference/tokenizer_fixtures.py).
#include <catch2/catch.hpp>

#include <vidlora/model/tokenizer_byte_level_bpe.hpp>

#include <fstream>

#include "test_tokenizer_support.hpp"

using namespace vidlora;

namespace {

const model::ByteLevelBpeTokenizer& qwen_tokenizer() {
  static const model::ByteLevelBpeTokenizer tokenizer =
      model::ByteLevelBpeTokenizer::from_file(test::fixture_path("model/tokenizer.json"));
  return tokenizer;
}

const nlohmann::json& cases() { return test::tokenizer_fixture()["byte_level_bpe"]["cases"]; }

nlohmann::json tokenizer_json() {
  std::ifstream in(test::fixture_path("model/tokenizer.json"));
  return nlohmann::json::parse(in);
}

}  // namespace

TEST_CASE("byte-level bpe ids equal HF tokenizers ids for every fixture sentence", "[model][tokenizer]") {
  REQUIRE(cases().size() >= 30);
  for (const auto& c : cases()) {
    const std::string text = c["text"];
    INFO("text: " << text);
    CHECK(qwen_tokenizer().encode(text) == c["ids"].get<std::vector<int>>());
  }
}

TEST_CASE("byte-level bpe tokens equal HF tokens", "[model][tokenizer]") {
  for (const auto& c : cases()) {
    std::vector<std::string> tokens;
    for (int id : qwen_tokenizer().encode(c["text"].get<std::string>()))
      tokens.push_back(qwen_tokenizer().id_to_token(id));
    INFO("text: " << c["text"].get<std::string>());
    CHECK(tokens == c["tokens"].get<std::vector<std::string>>());
  }
}

TEST_CASE("byte-level bpe reads merges written as space-separated strings", "[model][tokenizer]") {
  auto json = tokenizer_json();
  auto& merges = json["model"]["merges"];
  REQUIRE(merges[0].is_array());  // tokenizers >= 0.20 writes pairs; older files write "a b"
  for (auto& m : merges) m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  const model::ByteLevelBpeTokenizer from_strings(json, "tokenizer.json (string merges)");
  CHECK(from_strings.merge_count() == qwen_tokenizer().merge_count());
  for (const auto& c : cases())
    CHECK(from_strings.encode(c["text"].get<std::string>()) == c["ids"].get<std::vector<int>>());
}

TEST_CASE("added tokens match leftmost-longest after NFC when normalized and strip whitespace like HF",
          "[model][tokenizer]") {
  const auto& fixture = test::tokenizer_fixture()["byte_level_bpe"];
  auto json = tokenizer_json();
  for (const auto& token : fixture["extra_added_tokens"]) json["added_tokens"].push_back(token);
  const model::ByteLevelBpeTokenizer tokenizer(json, "tokenizer.json + extra added tokens");
  REQUIRE(fixture["extra_added_cases"].size() >= 5);
  for (const auto& c : fixture["extra_added_cases"]) {
    INFO("text: " << c["text"].get<std::string>());
    CHECK(tokenizer.encode(c["text"].get<std::string>()) == c["ids"].get<std::vector<int>>());
  }
}

TEST_CASE("byte-level bpe decode equals HF decode including cut UTF-8", "[model][tokenizer]") {
  for (const auto& c : cases()) {
    const auto ids = c["ids"].get<std::vector<int>>();
    INFO("text: " << c["text"].get<std::string>());
    CHECK(qwen_tokenizer().decode(ids) == c["decoded"].get<std::string>());
  }
  for (const auto& c : test::tokenizer_fixture()["byte_level_bpe"]["decode_cases"]) {
    const auto ids = c["ids"].get<std::vector<int>>();
    CHECK(qwen_tokenizer().decode(ids) == c["text"].get<std::string>());
    if (c.contains("text_skip_special"))
      CHECK(qwen_tokenizer().decode(ids, true) == c["text_skip_special"].get<std::string>());
  }
}

TEST_CASE("byte-level bpe Korean text round-trips exactly", "[model][tokenizer]") {
  int checked = 0;
  auto lines = test::tokenizer_corpus_lines();
  for (const auto& c : cases()) lines.push_back(c["text"]);
  for (const auto& line : lines) {
    if (!test::contains_hangul(line) || model::detail::nfc(line) != line) continue;  // NFC input comes back as is
    INFO("text: " << line);
    CHECK(qwen_tokenizer().decode(qwen_tokenizer().encode(line)) == line);
    ++checked;
  }
  CHECK(checked > 250);
}

TEST_CASE("nfc equals Python unicodedata on decomposed Hangul and Latin", "[model][tokenizer][unicode]") {
  for (const auto& c : test::tokenizer_fixture()["nfc"]) {
    const std::string input = c["input"];
    INFO("input: " << input);
    CHECK(model::detail::nfc(input) == c["nfc"].get<std::string>());
  }
  CHECK(model::detail::nfc("\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB") == "\xED\x95\x9C");  // ᄒ ᅡ ᆫ -> 한
  CHECK_THROWS_WITH(model::detail::nfc("ok\xC3\x28", "caption"), Catch::Contains("caption: invalid UTF-8 at byte 2"));
}

TEST_CASE("byte-level bpe special tokens are split out and have the fixture ids", "[model][tokenizer]") {
  const auto& t = qwen_tokenizer();
  for (const auto& [content, id] : test::tokenizer_fixture()["byte_level_bpe"]["special_ids"].items()) {
    CHECK(t.token_to_id(content) == id.get<int>());
    CHECK(t.id_to_token(id.get<int>()) == content);
    CHECK(t.is_special(id.get<int>()));
    CHECK(t.encode(content) == std::vector<int>{id.get<int>()});
  }
  CHECK(t.vocab_size() == test::tokenizer_fixture()["byte_level_bpe"]["vocab_size"].get<int>());
  CHECK_FALSE(t.bos_id().has_value());
  CHECK(t.eos_id() == t.token_to_id("<|im_end|>"));
  CHECK(t.pad_id() == t.token_to_id("<|endoftext|>"));
  CHECK_THROWS_WITH(t.encode("x", {.add_bos = true}), Catch::Contains("has no BOS token"));
  CHECK(t.encode("x", {.add_eos = true}).back() == *t.token_to_id("<|im_end|>"));
  static_assert(model::Tokenizer<model::ByteLevelBpeTokenizer>);
}

TEST_CASE("byte-level bpe reports missing unparsable and unsupported tokenizer files", "[model][tokenizer][errors]") {
  CHECK_THROWS_WITH(model::ByteLevelBpeTokenizer::from_file("/nonexistent/tokenizer.json"),
                    Catch::Contains("cannot open tokenizer file '/nonexistent/tokenizer.json'"));

  const std::string truncated_path = "vidlora_test_truncated_tokenizer.json";
  {
    std::ofstream out(truncated_path);
    out << "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0,";
  }
  CHECK_THROWS_WITH(model::ByteLevelBpeTokenizer::from_file(truncated_path),
                    Catch::Contains("tokenizer file 'vidlora_test_truncated_tokenizer.json' does not parse as JSON") &&
                        Catch::Contains("unexpected end of input"));
  std::remove(truncated_path.c_str());

  auto json = tokenizer_json();
  json["model"]["type"] = "WordPiece";
  CHECK_THROWS_WITH(model::ByteLevelBpeTokenizer(json, "wp.json"),
                    Catch::Contains("wp.json': unknown model type 'WordPiece'"));

  json = tokenizer_json();
  json["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+";
  CHECK_THROWS_WITH(model::ByteLevelBpeTokenizer(json, "re.json"),
                    Catch::Contains("Split pattern is not Qwen2's regex"));

  json = tokenizer_json();
  json["model"]["merges"][0] = nlohmann::json::array({"zz-unknown", "a"});
  CHECK_THROWS_WITH(model::ByteLevelBpeTokenizer(json, "m.json"),
                    Catch::Contains("merge 0 'zz-unknown a' uses a token missing"));

  json = tokenizer_json();
  json["model"]["vocab"] = nlohmann::json::array();
  CHECK_THROWS_WITH(model::ByteLevelBpeTokenizer(json, "v.json"), Catch::Contains("model.vocab is not an object"));

  json = tokenizer_json();
  json["normalizer"] = {{"type", "Lowercase"}};
  CHECK_THROWS_WITH(model::ByteLevelBpeTokenizer(json, "n.json"),
                    Catch::Contains("normalizer 'Lowercase' is not supported"));

  // A post-processor adding tokens around the text is refused; what adds none passes (Qwen's tokenizer.json files
  // have none, ByteLevel, or a template of the text alone).
  const nlohmann::json text_alone = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}};
  for (const nlohmann::json& fine :
       {nlohmann::json(), nlohmann::json{{"type", "ByteLevel"}, {"trim_offsets", false}},
        nlohmann::json{
            {"type", "TemplateProcessing"}, {"single", {text_alone}}, {"special_tokens", nlohmann::json::object()}},
        nlohmann::json{{"type", "Sequence"}, {"processors", {{{"type", "ByteLevel"}}}}}}) {
    json = tokenizer_json();
    json["post_processor"] = fine;
    CHECK_NOTHROW(model::ByteLevelBpeTokenizer(json, "p.json"));
  }
  const nlohmann::json bos = {{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}};
  json = tokenizer_json();
  json["post_processor"] = {{"type", "TemplateProcessing"}, {"single", {bos, text_alone}}};
  CHECK_THROWS_WITH(model::ByteLevelBpeTokenizer(json, "p.json"), Catch::Contains("p.json': post_processor") &&
                                                                      Catch::Contains("<|endoftext|>") &&
                                                                      Catch::Contains("puts tokens around the text"));
  json["post_processor"] = {{"type", "Sequence"},
                            {"processors", {{{"type", "ByteLevel"}}, {{"type", "BertProcessing"}}}}};
  CHECK_THROWS_WITH(model::ByteLevelBpeTokenizer(json, "p.json"), Catch::Contains("BertProcessing"));

  CHECK_THROWS_WITH(qwen_tokenizer().encode("bad \xFF byte"), Catch::Contains("invalid UTF-8 at byte 4"));
  CHECK_THROWS_WITH(qwen_tokenizer().decode(std::vector<int>{100000}),
                    Catch::Contains("token id 100000 is not in the vocabulary"));
}
