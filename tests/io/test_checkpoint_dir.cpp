// Hugging Face checkpoint directories, single-file and sharded, written by transformers'
// save_pretrained (tests/fixtures/io/llama_*/, tools/reference/safetensors_files.py).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <vidlora/io.hpp>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <fstream>
#include <string>
#include <vector>

#include "fixtures.hpp"

using namespace vidlora;
using Catch::Contains;
namespace fs = std::filesystem;

namespace {

fs::path scratch_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("vidlora_ckpt_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

// Compares every tensor of `ckpt` with llama.json, each expected value passed through `round`.
void check_llama(const io::CheckpointDir& ckpt, float (*round)(float)) {
  const auto expected = test::load_fixture("io/llama.json")["tensors"];
  REQUIRE(ckpt.size() == expected.size());
  for (const auto& [name, t] : expected.items()) {
    INFO("tensor " << name);
    REQUIRE(ckpt.contains(name));
    const auto shape = t["shape"].get<std::vector<std::int64_t>>();
    CHECK(ckpt.info(name).shape == shape);
    const auto values = t["values"].get<std::vector<double>>();
    const Vector got = ckpt.vector(name);
    REQUIRE(got.size() == static_cast<Eigen::Index>(values.size()));
    int mismatches = 0;
    for (std::size_t i = 0; i < values.size(); ++i)
      mismatches += got(static_cast<Eigen::Index>(i)) != round(static_cast<float>(values[i]));
    CHECK(mismatches == 0);
  }
}

}  // namespace

TEST_CASE("checkpoint with one model.safetensors gives every tensor bit exactly", "[io][checkpoint]") {
  const auto ckpt = io::CheckpointDir::open(test::fixture_path("io/llama_single"));
  check_llama(ckpt, [](float v) { return v; });
  const Matrix q = ckpt.matrix("model.layers.1.self_attn.q_proj.weight", 8, 8);
  CHECK(q.rows() == 8);
  CHECK(ckpt.matrix("model.layers.0.self_attn.k_proj.weight").rows() == 4);  // 1 kv head of 4
}

TEST_CASE("sharded bf16 checkpoint finds tensors across shards as torch rounded them", "[io][checkpoint]") {
  const auto ckpt = io::CheckpointDir::open(test::fixture_path("io/llama_sharded"));
  check_llama(ckpt, [](float v) { return io::round_to_bf16(v); });
  CHECK(ckpt.info("lm_head.weight").dtype == io::Dtype::BF16);
  CHECK(ckpt.file_of("lm_head.weight").source() != ckpt.file_of("model.embed_tokens.weight").source());
  CHECK(ckpt.index_metadata()["total_size"].get<int>() == 3408);
  // The index file itself and a lone shard open too.
  CHECK(io::CheckpointDir::open(test::fixture_path("io/llama_sharded/model.safetensors.index.json")).size() ==
        ckpt.size());
  CHECK(io::CheckpointDir::open(test::fixture_path("io/llama_single/model.safetensors")).size() == ckpt.size());
}

TEST_CASE("checkpoint missing tensor error names the key", "[io][checkpoint]") {
  const auto ckpt = io::CheckpointDir::open(test::fixture_path("io/llama_sharded"));
  CHECK_THROWS_WITH(ckpt.matrix("model.layers.2.self_attn.q_proj.weight"),
                    Contains("missing tensor 'model.layers.2.self_attn.q_proj.weight'") && Contains("llama_sharded"));
}

TEST_CASE("checkpoint wrong shape error names the key and both shapes", "[io][checkpoint]") {
  const auto ckpt = io::CheckpointDir::open(test::fixture_path("io/llama_single"));
  CHECK_THROWS_WITH(
      ckpt.expect_shape("model.layers.0.mlp.up_proj.weight", 8, 16),
      Contains("'model.layers.0.mlp.up_proj.weight'") && Contains("has shape [16, 8]") && Contains("expected [8, 16]"));
  CHECK_THROWS_WITH(ckpt.vector("model.norm.weight", 9), Contains("has shape [8], expected [9]"));
  CHECK_NOTHROW(ckpt.expect_shape("model.norm.weight", {8}));
}

TEST_CASE("checkpoint shards open lazily so a broken shard only fails its own tensors", "[io][checkpoint]") {
  const auto dir = scratch_dir("lazy");
  const auto src = fs::path(test::fixture_path("io/llama_sharded"));
  for (const auto& entry : fs::directory_iterator(src)) fs::copy_file(entry.path(), dir / entry.path().filename());
  write_text(dir / "model-00002-of-00002.safetensors", "garbage");
  const auto ckpt = io::CheckpointDir::open(dir);  // nothing read yet
  CHECK(ckpt.vector("model.embed_tokens.weight").size() == 32 * 8);
  CHECK_THROWS_WITH(ckpt.matrix("lm_head.weight"), Contains("'lm_head.weight'") &&
                                                       Contains("model-00002-of-00002.safetensors") &&
                                                       Contains("cannot be read"));
  fs::remove(dir / "model-00002-of-00002.safetensors");
  CHECK_THROWS_WITH(ckpt.matrix("lm_head.weight"), Contains("model-00002-of-00002.safetensors"));
  fs::remove_all(dir);
}

TEST_CASE("checkpoint index entries that escape the directory or lie are refused", "[io][checkpoint]") {
  const auto dir = scratch_dir("index");
  fs::copy_file(test::fixture_path("io/mixed.safetensors"), dir / "shard.safetensors");
  write_text(dir / "model.safetensors.index.json", R"({"weight_map": {"w": "../../etc/passwd"}})");
  CHECK_THROWS_WITH(io::CheckpointDir::open(dir), Contains("'w'") && Contains("not a file inside the checkpoint"));
  write_text(dir / "model.safetensors.index.json", R"({"weight_map": {"w": "/etc/passwd"}})");
  CHECK_THROWS_WITH(io::CheckpointDir::open(dir), Contains("not a file inside"));
  write_text(dir / "model.safetensors.index.json", R"({"weight_map": {"w": 3}})");
  CHECK_THROWS_WITH(io::CheckpointDir::open(dir), Contains("'w' is not a file name"));
  write_text(dir / "model.safetensors.index.json", R"({"metadata": {}})");
  CHECK_THROWS_WITH(io::CheckpointDir::open(dir), Contains("no \"weight_map\""));
  write_text(dir / "model.safetensors.index.json", "{ not json");
  CHECK_THROWS_WITH(io::CheckpointDir::open(dir), Contains("not a JSON object"));
  write_text(dir / "model.safetensors.index.json",
             R"({"weight_map": {"w": "shard.safetensors", "v": "gone.safetensors"}})");
  CHECK_THROWS_WITH(io::CheckpointDir::open(dir),
                    Contains("shard 'gone.safetensors' (holding 'v' and others) does not exist"));
  write_text(dir / "model.safetensors.index.json",
             R"({"weight_map": {"absent": "shard.safetensors", "weight": "shard.safetensors"}})");
  const auto ckpt = io::CheckpointDir::open(dir);
  CHECK(ckpt.matrix("weight").cols() == 4);
  CHECK_THROWS_WITH(ckpt.matrix("absent"),
                    Contains("maps tensor 'absent' to 'shard.safetensors', which has no such tensor"));
  fs::remove_all(dir);
}

TEST_CASE(
    "a shard holding the copy transformers would keep instead of the index's is refused and an unlisted tensor named",
    "[io][checkpoint]") {
  // transformers reads every tensor of every shard, a later file's copy replacing an earlier one, whatever the index
  // says: where that copy is not the index's, the directory is an error naming both files.
  const auto dir = scratch_dir("disagree");
  const auto src = fs::path(test::fixture_path("io/llama_sharded"));
  for (const auto& entry : fs::directory_iterator(src)) fs::copy_file(entry.path(), dir / entry.path().filename());
  const std::string first = "model-00001-of-00002.safetensors", second = "model-00002-of-00002.safetensors",
                    third = "model-00003-of-00003.safetensors";
  auto index = nlohmann::json::parse(std::ifstream(dir / "model.safetensors.index.json"));
  const auto write_index = [&](const nlohmann::json& j) { write_text(dir / "model.safetensors.index.json", j.dump()); };

  // A copy of the second shard as a third, the index naming the third for lm_head only: the second shard's lm_head
  // is the earlier copy (transformers replaces it too), the third's other tensors the later copies of tensors the
  // index maps to the second.
  fs::copy_file(dir / second, dir / third);
  auto two = index;
  two["weight_map"]["lm_head.weight"] = third;
  write_index(two);
  {
    const auto ckpt = io::CheckpointDir::open(dir);
    CHECK(ckpt.vector("model.embed_tokens.weight").size() == 32 * 8);  // the first shard agrees
    CHECK(ckpt.vector("model.norm.weight").size() == 8);               // the second's lm_head is replaced: fine
    CHECK_THROWS_WITH(ckpt.vector("lm_head.weight"),
                      Contains("tensor 'model.layers.1.input_layernorm.weight' is in shard '" + third +
                               "' as well as in '" + second + "'") &&
                          Contains("would take the one in '" + third + "'") && !Contains("cannot be read"));
  }
  fs::remove(dir / third);

  // A tensor the shards hold and the index does not list: never read, and named with its shard when asked for.
  auto unlisted = index;
  unlisted["weight_map"].erase("model.layers.0.mlp.up_proj.weight");
  write_index(unlisted);
  {
    const auto ckpt = io::CheckpointDir::open(dir);
    CHECK(ckpt.vector("model.embed_tokens.weight").size() == 32 * 8);
    CHECK_FALSE(ckpt.contains("model.layers.0.mlp.up_proj.weight"));
    CHECK_THROWS_WITH(ckpt.vector("model.layers.0.mlp.up_proj.weight"),
                      Contains("tensor 'model.layers.0.mlp.up_proj.weight' is in shard '" + first + "'") &&
                          Contains("does not list it") && Contains("out of date"));
    CHECK_THROWS_WITH(ckpt.vector("no.such.tensor"), Contains("missing tensor 'no.such.tensor'"));
  }

  write_index(index);
  check_llama(io::CheckpointDir::open(dir), [](float v) { return io::round_to_bf16(v); });
  fs::remove_all(dir);
}

TEST_CASE("checkpoint directory without weights is refused", "[io][checkpoint]") {
  const auto dir = scratch_dir("empty");
  CHECK_THROWS_WITH(io::CheckpointDir::open(dir),
                    Contains("neither model.safetensors.index.json nor model.safetensors"));
  CHECK_THROWS_WITH(io::CheckpointDir::open(dir / "nothing"), Contains("does not exist"));
  fs::remove_all(dir);
}

TEST_CASE("a checkpoint directory holding both an index and a single file is refused, naming both",
          "[io][checkpoint]") {
  // One of them is stale; transformers would load model.safetensors, the index's shards may hold other values.
  const auto dir = scratch_dir("both");
  const auto src = fs::path(test::fixture_path("io/llama_sharded"));
  for (const auto& entry : fs::directory_iterator(src)) fs::copy_file(entry.path(), dir / entry.path().filename());
  CHECK(io::CheckpointDir::open(dir).contains("lm_head.weight"));
  fs::copy_file(test::fixture_path("io/mixed.safetensors"), dir / "model.safetensors");
  CHECK_THROWS_WITH(io::CheckpointDir::open(dir),
                    Contains("model.safetensors") && Contains("model.safetensors.index.json") && Contains("both"));
  fs::remove_all(dir);
}
