// load_tokenizer picks the tokenizer a HF model directory ships.
#include <catch2/catch.hpp>

#include <vidlora/model/tokenizer_loader.hpp>

#include <filesystem>
#include <fstream>

#include "test_tokenizer_support.hpp"

using namespace vidlora;
namespace fs = std::filesystem;

namespace {

fs::path fresh_dir(const char* name) {
  const fs::path dir = fs::temp_directory_path() / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

}  // namespace

TEST_CASE("load_tokenizer picks byte-level bpe for a qwen2 tokenizer.json", "[model][tokenizer]") {
  const fs::path dir = fresh_dir("vidlora_tok_qwen");
  fs::copy_file(test::fixture_path("model/tokenizer.json"), dir / "tokenizer.json");
  const model::AnyTokenizer tokenizer = model::load_tokenizer(dir);
  REQUIRE(std::holds_alternative<model::ByteLevelBpeTokenizer>(tokenizer));
  const auto& c = test::tokenizer_fixture()["byte_level_bpe"]["cases"][0];
  CHECK(std::get<model::ByteLevelBpeTokenizer>(tokenizer).encode(c["text"].get<std::string>()) ==
        c["ids"].get<std::vector<int>>());
  fs::remove_all(dir);
}

TEST_CASE("load_tokenizer picks sentencepiece beside a metaspace tokenizer.json", "[model][tokenizer]") {
  const fs::path dir = fresh_dir("vidlora_tok_llama");
  fs::copy_file(test::fixture_path("model/tokenizer.model"), dir / "tokenizer.model");
  std::ofstream(dir / "tokenizer.json")
      << R"({"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "Metaspace", "replacement": "_"}})";
  const model::AnyTokenizer tokenizer = model::load_tokenizer(dir);
  REQUIRE(std::holds_alternative<model::SentencePieceTokenizer>(tokenizer));
  const auto& c = test::tokenizer_fixture()["sentencepiece"]["cases"][0];
  CHECK(std::get<model::SentencePieceTokenizer>(tokenizer).encode(c["text"].get<std::string>()) ==
        c["ids"].get<std::vector<int>>());
  fs::remove_all(dir);
}

TEST_CASE("load_tokenizer reports a directory without tokenizer files and a broken tokenizer.json",
          "[model][tokenizer][errors]") {
  const fs::path dir = fresh_dir("vidlora_tok_empty");
  CHECK_THROWS_WITH(model::load_tokenizer(dir), Catch::Contains("holds neither tokenizer.json nor tokenizer.model"));
  std::ofstream(dir / "tokenizer.json") << "{\"model\": ";
  CHECK_THROWS_WITH(model::load_tokenizer(dir), Catch::Contains("tokenizer.json' does not parse as JSON"));
  fs::remove_all(dir);
}

TEST_CASE("load_tokenizer takes the tokens a llama directory adds beside tokenizer.model, as transformers does",
          "[model][tokenizer][reference]") {
  // tools/reference/tokenizer_added_tokens.py: tokenizer.json adds <vid2> (special) and <obj> past the model's 800
  // pieces and marks the model's user-defined <video> special; transformers' ids and decodes of the directory.
  const fs::path dir = test::fixture_path("model/tokenizer_added");
  const auto ref = nlohmann::json::parse(std::ifstream(dir / "reference.json"));
  const model::AnyTokenizer any = model::load_tokenizer(dir);
  REQUIRE(std::holds_alternative<model::SentencePieceTokenizer>(any));
  const auto& tok = std::get<model::SentencePieceTokenizer>(any);
  CHECK(tok.vocab_size() == ref["vocab_size"].get<int>());
  for (const auto& [token, id] : ref["ids"].items()) {
    CAPTURE(token);
    CHECK(tok.token_to_id(token) == id.get<int>());
    CHECK(tok.id_to_token(id.get<int>()) == token);
    CHECK(tok.is_special(id.get<int>()) == ref["special"][token].get<bool>());
  }
  for (const auto& c : ref["encodes"]) {
    CAPTURE(c["text"].get<std::string>());
    CHECK(tok.encode(c["text"].get<std::string>()) == c["ids"].get<std::vector<int>>());
  }
  for (const auto& c : ref["decodes"]) {
    const auto ids = c["ids"].get<std::vector<int>>();
    CAPTURE(c["ids"].dump());
    CHECK(tok.decode(ids) == c["text"].get<std::string>());
    CHECK(tok.decode(ids, /*skip_special=*/true) == c["skip_special"].get<std::string>());
  }

  // tokenizer_config.json's flags as transformers 5 takes them: `legacy` (a prefix space after every added token)
  // changes the ids; add_bos_token / add_eos_token do not (tokenizer.json's post-processor decides).
  for (const auto& [name, variant] : ref["flags"].items()) {
    CAPTURE(name);
    const fs::path flagged = fresh_dir("vidlora_tok_added_flags");
    for (const char* f : {"tokenizer.model", "tokenizer.json"}) fs::copy_file(dir / f, flagged / f);
    auto config = nlohmann::json::parse(std::ifstream(dir / "tokenizer_config.json"));
    config.update(variant["tokenizer_config"]);
    std::ofstream(flagged / "tokenizer_config.json") << config.dump();
    const model::AnyTokenizer flagged_any = model::load_tokenizer(flagged);
    for (const auto& c : variant["encodes"]) {
      CAPTURE(c["text"].get<std::string>());
      CHECK(std::get<model::SentencePieceTokenizer>(flagged_any).encode(c["text"].get<std::string>()) ==
            c["ids"].get<std::vector<int>>());
    }
    fs::remove_all(flagged);
  }
  CHECK(ref["flags"]["legacy"]["encodes"] != ref["encodes"]);  // the flag matters for these texts

  // The same tokens from tokenizer_config.json's added_tokens_decoder when there is no tokenizer.json (the slow
  // tokenizer's file; transformers 4 wrote it, {"<id>": {"content": …, "special": …}}, built here from the same
  // tokens since transformers 5 no longer writes it).
  const fs::path slow = fresh_dir("vidlora_tok_added_slow");
  fs::copy_file(dir / "tokenizer.model", slow / "tokenizer.model");
  nlohmann::json decoder = nlohmann::json::object();
  const auto fast = nlohmann::json::parse(std::ifstream(dir / "tokenizer.json"));
  for (auto t : fast["added_tokens"]) {
    const std::string id = std::to_string(t["id"].get<int>());
    t.erase("id");
    decoder[id] = t;
  }
  nlohmann::json config;
  config["added_tokens_decoder"] = decoder;
  std::ofstream(slow / "tokenizer_config.json") << config.dump();
  const model::AnyTokenizer slow_any = model::load_tokenizer(slow);
  const auto& from_config = std::get<model::SentencePieceTokenizer>(slow_any);
  CHECK(from_config.vocab_size() == ref["vocab_size"].get<int>());
  for (const auto& c : ref["encodes"])
    CHECK(from_config.encode(c["text"].get<std::string>()) == c["ids"].get<std::vector<int>>());

  // An added id that leaves a gap, or one that names another piece, is an error naming the token and the file.
  auto json = nlohmann::json::parse(std::ifstream(dir / "tokenizer.json"));
  const fs::path bad = fresh_dir("vidlora_tok_added_bad");
  fs::copy_file(dir / "tokenizer.model", bad / "tokenizer.model");
  for (auto& t : json["added_tokens"])
    if (t["content"] == "<obj>") t["id"] = 900;
  std::ofstream(bad / "tokenizer.json") << json.dump();
  REQUIRE_THROWS_WITH(model::load_tokenizer(bad),
                      Catch::Contains("<obj>") && Catch::Contains("900") && Catch::Contains("tokenizer.json"));
  for (auto& t : json["added_tokens"])
    if (t["content"] == "<obj>") t["id"] = 5;
  std::ofstream(bad / "tokenizer.json", std::ios::trunc) << json.dump();
  REQUIRE_THROWS_WITH(model::load_tokenizer(bad), Catch::Contains("<obj>") && Catch::Contains("id 5"));
  fs::remove_all(slow);
  fs::remove_all(bad);
}
