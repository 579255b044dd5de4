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
