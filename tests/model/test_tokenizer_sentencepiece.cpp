// SentencePieceTokenizer against transformers' LlamaTokenizer on a LLaMA-style tokenizer.model
// (fixtures: tools/reference/tokenizer_fixtures.py).
#include <catch2/catch.hpp>

#include <vidlora/model/tokenizer_sentencepiece.hpp>

#include <fstream>

#include "test_tokenizer_support.hpp"

using namespace vidlora;

namespace {

const model::SentencePieceTokenizer& llama_tokenizer() {
  static const model::SentencePieceTokenizer tokenizer =
      model::SentencePieceTokenizer::from_file(test::fixture_path("model/tokenizer.model"));
  return tokenizer;
}

const nlohmann::json& sentencepiece_cases() { return test::tokenizer_fixture()["sentencepiece"]["cases"]; }

}  // namespace

TEST_CASE("sentencepiece ids equal transformers LlamaTokenizer ids for every fixture sentence", "[model][tokenizer]") {
  REQUIRE(sentencepiece_cases().size() >= 30);
  for (const auto& c : sentencepiece_cases()) {
    const std::string text = c["text"];
    INFO("text: " << text);
    CHECK(llama_tokenizer().encode(text) == c["ids"].get<std::vector<int>>());
  }
}

TEST_CASE("sentencepiece legacy mode equals LlamaTokenizer legacy ids", "[model][tokenizer]") {
  const auto legacy =
      model::SentencePieceTokenizer::from_file(test::fixture_path("model/tokenizer.model"), {.legacy = true});
  for (const auto& c : sentencepiece_cases()) {
    const std::string text = c["text"];
    INFO("text: " << text);
    CHECK(legacy.encode(text) == c["ids_legacy"].get<std::vector<int>>());
  }
}

TEST_CASE("sentencepiece tokenizer differs from raw libsentencepiece only where transformers does",
          "[model][tokenizer]") {
  // The fixture lists the sentences where transformers' ids (minus BOS) differ from sentencepiece's own.
  const auto& differs = test::tokenizer_fixture()["sentencepiece"]["hf_differs_from_sentencepiece"];
  REQUIRE(!differs.empty());
  for (const auto& c : sentencepiece_cases()) {
    auto ids = llama_tokenizer().encode(c["text"].get<std::string>(), {.add_bos = false});
    const bool same = ids == c["sentencepiece_ids"].get<std::vector<int>>();
    const bool listed = std::find(differs.begin(), differs.end(), c["text"]) != differs.end();
    INFO("text: " << c["text"].get<std::string>());
    CHECK(same == !listed);
  }
}

TEST_CASE("sentencepiece decode equals LlamaTokenizer decode", "[model][tokenizer]") {
  for (const auto& c : sentencepiece_cases()) {
    const auto ids = c["ids"].get<std::vector<int>>();
    INFO("text: " << c["text"].get<std::string>());
    CHECK(llama_tokenizer().decode(std::span<const int>(ids).subspan(1)) == c["decoded"].get<std::string>());
    CHECK(llama_tokenizer().decode(ids) == c["decoded_with_bos"].get<std::string>());
    CHECK(llama_tokenizer().decode(ids, true) == c["decoded_skip_special"].get<std::string>());
  }
  for (const auto& c : test::tokenizer_fixture()["sentencepiece"]["decode_cases"]) {
    const auto ids = c["ids"].get<std::vector<int>>();  // byte pieces that are not valid UTF-8 become U+FFFD each
    CHECK(llama_tokenizer().decode(ids) == c["text"].get<std::string>());
  }
}

TEST_CASE("sentencepiece Korean text round-trips exactly", "[model][tokenizer]") {
  int checked = 0;
  auto lines = test::tokenizer_corpus_lines();
  for (const auto& c : sentencepiece_cases()) lines.push_back(c["text"]);
  for (const auto& line : lines) {
    if (!test::contains_hangul(line) || line.front() == ' ') continue;  // HF strips one leading space on decode
    const auto ids = llama_tokenizer().encode(line, {.add_bos = false});
    INFO("text: " << line);
    CHECK(llama_tokenizer().decode(ids) == line);
    ++checked;
  }
  CHECK(checked > 250);
}

TEST_CASE("sentencepiece special ids and pieces match the model", "[model][tokenizer]") {
  const auto& fixture = test::tokenizer_fixture()["sentencepiece"];
  const auto& t = llama_tokenizer();
  CHECK(t.vocab_size() == fixture["vocab_size"].get<int>());
  CHECK(t.bos_id() == fixture["bos_id"].get<int>());
  CHECK(t.eos_id() == fixture["eos_id"].get<int>());
  CHECK(t.unk_id() == fixture["unk_id"].get<int>());
  CHECK_FALSE(t.pad_id().has_value());  // LLaMA has no pad piece (pad_id = -1)
  CHECK(t.token_to_id("<s>") == 1);
  CHECK(t.token_to_id("</s>") == 2);
  CHECK(t.token_to_id("<unk>") == 0);
  CHECK(t.token_to_id("<video>") == 4);
  CHECK_FALSE(t.token_to_id("no-such-piece").has_value());
  CHECK(t.id_to_token(1) == "<s>");
  CHECK(t.is_special(2));
  CHECK_FALSE(t.is_special(4));  // user-defined <video> is an added token but not special
  const std::vector<int> with_eos = t.encode("a", {.add_eos = true});
  CHECK(with_eos.front() == 1);
  CHECK(with_eos.back() == 2);
  static_assert(model::Tokenizer<model::SentencePieceTokenizer>);
}

TEST_CASE("sentencepiece reports a missing file a bad model and a bad id", "[model][tokenizer][errors]") {
  CHECK_THROWS_WITH(model::SentencePieceTokenizer::from_file("/nonexistent/tokenizer.model"),
                    Catch::Contains("cannot open SentencePiece model '/nonexistent/tokenizer.model'"));
  CHECK_THROWS_WITH(model::SentencePieceTokenizer(std::string("\x0A\xFF\xFF\xFF", 4), "garbage.model"),
                    Catch::Contains("garbage.model: not a SentencePiece model"));
  std::ifstream in(test::fixture_path("model/tokenizer.model"), std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK_THROWS_WITH(model::SentencePieceTokenizer(std::string_view(bytes).substr(0, bytes.size() / 2), "half.model"),
                    Catch::Contains("half.model: not a SentencePiece model"));
  CHECK_THROWS_WITH(model::SentencePieceTokenizer(std::string_view("{\"model\": 1}"), "tokenizer.json"),
                    Catch::Contains("tokenizer.json"));
  CHECK_THROWS_WITH(llama_tokenizer().decode(std::vector<int>{5, 800}),
                    Catch::Contains("token id 800 is outside the vocabulary"));
}
