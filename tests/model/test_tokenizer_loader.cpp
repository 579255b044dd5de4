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

TEST_CASE("load_tokenizer refuses special tokens a byte-level directory's tokenizer_config.json names but does not add",
          "[model][tokenizer]") {
  // transformers would add the token, or make a vocabulary entry or a non-special added token special; the
  // byte-level tokenizer adds no tokens, so each is an error naming it. What the directory adds passes.
  const fs::path src = test::fixture_path("model/llava_qwen_hf");
  const fs::path dir = fresh_dir("vidlora_tok_qwen_named");
  fs::copy_file(src / "tokenizer.json", dir / "tokenizer.json");
  auto config = nlohmann::json::parse(std::ifstream(src / "tokenizer_config.json"));
  std::ofstream(dir / "tokenizer_config.json") << config.dump();
  const model::AnyTokenizer fine = model::load_tokenizer(dir);
  const int vocab = std::get<model::ByteLevelBpeTokenizer>(fine).vocab_size();
  auto json = nlohmann::json::parse(std::ifstream(src / "tokenizer.json"));
  for (auto& t : json["added_tokens"])
    if (t["content"] == "<video>") t["special"] = false;
  std::ofstream(dir / "tokenizer.json", std::ios::trunc) << json.dump();
  CHECK(std::holds_alternative<model::ByteLevelBpeTokenizer>(model::load_tokenizer(dir)));  // listed: keeps its flag
  const auto refuses = [&](const nlohmann::json& update, const std::vector<std::string>& words) {
    auto c = config;
    c.update(update);
    std::ofstream(dir / "tokenizer_config.json", std::ios::trunc) << c.dump();
    try {
      (void)model::load_tokenizer(dir);
      FAIL("accepted " << update.dump());
    } catch (const std::exception& e) {
      CHECK_THAT(e.what(), Catch::Contains("tokenizer_config.json"));
      for (const auto& w : words) CHECK_THAT(e.what(), Catch::Contains(w));
    }
  };
  refuses({{"extra_special_tokens", {{"video_token", "<|no_such|>"}}}},
          {"'<|no_such|>'", "as id " + std::to_string(vocab)});
  refuses({{"image_token", "<|no_such|>"}}, {"'<|no_such|>'", "does not add"});
  refuses({{"video_token", "<video>"}}, {"'<video>'", "as not special"});
  refuses({{"extra_special_tokens", {"<image>", "A"}}}, {"'A'", "over its vocabulary entry"});
  fs::remove_all(dir);
}

TEST_CASE("load_tokenizer picks sentencepiece beside a metaspace tokenizer.json", "[model][tokenizer]") {
  const fs::path dir = fresh_dir("vidlora_tok_llama");
  fs::copy_file(test::fixture_path("model/tokenizer.model"), dir / "tokenizer.model");
  std::ofstream(dir / "tokenizer.json")
      << R"({"model": {"type": "BPE", "vocab": {}, "merges": []}, "pre_tokenizer": {"type": "Metaspace", "replacement": "_"},
            "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
              {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {"<s>": {"id": "<s>", "ids": [1]}}}})";
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

TEST_CASE("load_tokenizer takes BOS / EOS and named special tokens from a llama directory as transformers does",
          "[model][tokenizer][reference]") {
  // tools/reference/tokenizer_added_tokens.py "variants": the tokenizer_added directory with tokenizer.json's
  // post-processor changed (none, EOS only, BOS and EOS) or tokenizer.json left out (tokenizer_config.json's
  // add_bos_token / add_eos_token and added_tokens_decoder then), and special tokens tokenizer_config.json lists by
  // name only (extra_special_tokens, a list or an object); transformers' ids and skip_special decodes of each.
  const fs::path dir = test::fixture_path("model/tokenizer_added");
  const auto ref = nlohmann::json::parse(std::ifstream(dir / "reference.json"));
  const auto base_config = nlohmann::json::parse(std::ifstream(dir / "tokenizer_config.json"));
  const auto base_json = nlohmann::json::parse(std::ifstream(dir / "tokenizer.json"));
  REQUIRE(ref["variants"].size() == 13);
  for (const auto& [name, variant] : ref["variants"].items()) {
    CAPTURE(name);
    const fs::path here = fresh_dir("vidlora_tok_variant");
    fs::copy_file(dir / "tokenizer.model", here / "tokenizer.model");
    auto config = base_config;
    config.update(variant["tokenizer_config"]);
    std::ofstream(here / "tokenizer_config.json") << config.dump();
    if (!variant["tokenizer_json"].is_null()) {
      auto json = base_json;
      json.update(variant["tokenizer_json"]);
      std::ofstream(here / "tokenizer.json") << json.dump();
    }
    const model::AnyTokenizer any = model::load_tokenizer(here);
    const auto& tok = std::get<model::SentencePieceTokenizer>(any);
    CHECK(tok.vocab_size() == variant["vocab_size"].get<int>());
    for (const auto& c : variant["encodes"]) {
      const std::string text = c["text"].get<std::string>();
      CAPTURE(text);
      // transformers 5 without tokenizer.json and with extra_special_tokens as a list does not split the model's
      // user-defined piece <image> out of the text (its BPE conversion then keeps "▁<image>" whole and falls back
      // to characters); sentencepiece, transformers 4 and every other directory here match the piece.
      if (name == "no_json_extra" && text.starts_with("<image>")) continue;
      const auto ids = c["ids"].get<std::vector<int>>();
      CHECK(tok.encode(text) == ids);
      CHECK(tok.decode(ids, /*skip_special=*/true) == c["skip_special"].get<std::string>());
    }
    fs::remove_all(here);
  }

  // What the loader does not take is an error naming the file and the part.
  const fs::path bad = fresh_dir("vidlora_tok_variant_bad");
  fs::copy_file(dir / "tokenizer.model", bad / "tokenizer.model");
  const auto refuses = [&](const nlohmann::json& json_update, const std::vector<std::string>& words) {
    auto json = base_json;
    json.update(json_update);
    std::ofstream(bad / "tokenizer.json", std::ios::trunc) << json.dump();
    try {
      (void)model::load_tokenizer(bad);
      FAIL("accepted " << json_update.dump());
    } catch (const std::exception& e) {
      CHECK_THAT(e.what(), Catch::Contains("tokenizer.json"));
      for (const auto& w : words) CHECK_THAT(e.what(), Catch::Contains(w));
    }
  };
  auto pp = base_json["post_processor"];
  refuses({{"post_processor", {{"type", "BertProcessing"}}}}, {"BertProcessing", "not supported"});
  auto twice = pp;
  twice["single"].insert(twice["single"].begin(), pp["single"][0]);
  refuses({{"post_processor", twice}}, {"two special tokens before"});
  auto wrong_id = pp;
  wrong_id["special_tokens"]["<s>"]["ids"] = {2};
  refuses({{"post_processor", wrong_id}}, {"'<s>' (id 2) before the text", "BOS is 1"});
  auto no_text = pp;
  no_text["single"].erase(1);
  refuses({{"post_processor", no_text}}, {"no text"});
  std::ofstream(bad / "tokenizer.json", std::ios::trunc) << base_json.dump();
  std::ofstream(bad / "tokenizer_config.json") << R"({"extra_special_tokens": [3]})";
  CHECK_THROWS_WITH(model::load_tokenizer(bad), Catch::Contains("tokenizer_config.json") &&
                                                    Catch::Contains("extra_special_tokens") &&
                                                    Catch::Contains("not a token string"));
  fs::remove(bad / "tokenizer.json");
  std::ofstream(bad / "tokenizer_config.json", std::ios::trunc) << R"({"add_bos_token": "yes"})";
  CHECK_THROWS_WITH(model::load_tokenizer(bad), Catch::Contains("add_bos_token") && Catch::Contains("yes"));
  fs::remove_all(bad);
}
