// LLaVA / LLaVA-NeXT-Video / decoder-only + CLIP checkpoints read by canonical names, whatever
// their key layout (tests/fixtures/io/llava_*, clip/, vlm.json; tools/reference/safetensors_files.py).
#include <catch2/catch.hpp>

#include <vidlora/io.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "fixtures.hpp"

using namespace vidlora;
using Catch::Contains;
using io::ModelPart;

namespace {

// Every tensor the fixture lists for `part` reads back exactly through canonical names.
void check_part(const io::ModelCheckpoint& ckpt, io::ModelPart part, const nlohmann::json& tensors) {
  REQUIRE(tensors.size() > 0);
  for (const auto& [name, t] : tensors.items()) {
    INFO(io::part_name(part) << " tensor " << name);
    REQUIRE(ckpt.contains(part, name));
    CHECK(ckpt.info(part, name).shape == t["shape"].get<std::vector<std::int64_t>>());
    const auto values = t["values"].get<std::vector<double>>();
    const Vector got = ckpt.vector(part, name);
    REQUIRE(got.size() == static_cast<Eigen::Index>(values.size()));
    int mismatches = 0;
    for (std::size_t i = 0; i < values.size(); ++i)
      mismatches += got(static_cast<Eigen::Index>(i)) != static_cast<float>(values[i]);
    CHECK(mismatches == 0);
  }
}

void check_llava(const io::ModelCheckpoint& ckpt, const nlohmann::json& expected) {
  REQUIRE(ckpt.has_vision());
  REQUIRE(ckpt.has_projector());
  check_part(ckpt, io::ModelPart::Decoder, expected["decoder"]);
  check_part(ckpt, io::ModelPart::Vision, expected["vision"]);
  check_part(ckpt, io::ModelPart::Projector, expected["projector"]);
}

}  // namespace

TEST_CASE("llava checkpoint with language_model.model keys reads by canonical names", "[io][checkpoint][llava]") {
  const auto ckpt = io::ModelCheckpoint::open(test::fixture_path("io/llava_legacy"));
  CHECK(ckpt.layout() == io::CheckpointLayout::LlavaLegacy);
  check_llava(ckpt, test::load_fixture("io/vlm.json")["llava"]);
  CHECK(ckpt.key(io::ModelPart::Decoder, "model.layers.0.self_attn.q_proj.weight") ==
        "language_model.model.layers.0.self_attn.q_proj.weight");
  CHECK(ckpt.key(io::ModelPart::Decoder, "lm_head.weight") == "language_model.lm_head.weight");
  CHECK(ckpt.key(io::ModelPart::Vision, "embeddings.patch_embedding.weight") ==
        "vision_tower.vision_model.embeddings.patch_embedding.weight");
  CHECK(ckpt.key(io::ModelPart::Projector, "multi_modal_projector.linear_1.weight") ==
        "multi_modal_projector.linear_1.weight");
}

TEST_CASE("llava checkpoint with model.language_model keys reads the same tensors", "[io][checkpoint][llava]") {
  const auto ckpt = io::ModelCheckpoint::open(test::fixture_path("io/llava_current"));
  CHECK(ckpt.layout() == io::CheckpointLayout::LlavaCurrent);
  check_llava(ckpt, test::load_fixture("io/vlm.json")["llava"]);
  CHECK(ckpt.key(io::ModelPart::Decoder, "model.norm.weight") == "model.language_model.norm.weight");
  CHECK(ckpt.key(io::ModelPart::Decoder, "lm_head.weight") == "lm_head.weight");
  CHECK(ckpt.key(io::ModelPart::Vision, "post_layernorm.weight") == "model.vision_tower.post_layernorm.weight");
  CHECK(ckpt.key(io::ModelPart::Projector, "multi_modal_projector.linear_2.bias") ==
        "model.multi_modal_projector.linear_2.bias");
  // Both layouts give the same matrix for the same canonical name.
  const auto legacy = io::ModelCheckpoint::open(test::fixture_path("io/llava_legacy"));
  CHECK(ckpt.matrix(io::ModelPart::Decoder, "model.layers.0.mlp.down_proj.weight", 8, 16) ==
        legacy.matrix(io::ModelPart::Decoder, "model.layers.0.mlp.down_proj.weight", 8, 16));
}

TEST_CASE("llava next video checkpoint saved sharded by transformers reads with image_newline",
          "[io][checkpoint][llava]") {
  const auto ckpt = io::ModelCheckpoint::open(test::fixture_path("io/llava_next_video"));
  CHECK(ckpt.layout() == io::CheckpointLayout::LlavaLegacy);
  check_llava(ckpt, test::load_fixture("io/vlm.json")["llava_next_video"]);
  CHECK(ckpt.vector(io::ModelPart::Projector, "image_newline", 8).size() == 8);
  CHECK(ckpt.key(io::ModelPart::Vision, "pre_layrnorm.weight") == "vision_tower.pre_layrnorm.weight");
}

TEST_CASE("decoder-only checkpoint plus a separate CLIP checkpoint reads both", "[io][checkpoint][llava]") {
  const auto ckpt = io::ModelCheckpoint::open(test::fixture_path("io/llama_single"), test::fixture_path("io/clip"));
  CHECK(ckpt.layout() == io::CheckpointLayout::DecoderOnly);
  CHECK(ckpt.has_vision());
  CHECK_FALSE(ckpt.has_projector());
  check_part(ckpt, io::ModelPart::Vision, test::load_fixture("io/vlm.json")["clip"]["vision"]);
  CHECK(ckpt.key(io::ModelPart::Vision, "embeddings.class_embedding") == "vision_model.embeddings.class_embedding");
  check_part(ckpt, io::ModelPart::Decoder, test::load_fixture("io/llama.json")["tensors"]);
  CHECK_THROWS_WITH(ckpt.matrix(io::ModelPart::Projector, "multi_modal_projector.linear_1.weight"),
                    Contains("has no multi_modal_projector"));
  // Without the CLIP checkpoint there is no vision tower; a non-CLIP second checkpoint is refused.
  const auto alone = io::ModelCheckpoint::open(test::fixture_path("io/llama_single"));
  CHECK_FALSE(alone.has_vision());
  CHECK_THROWS_WITH(alone.matrix(io::ModelPart::Vision, "embeddings.class_embedding"), Contains("has no vision tower"));
  CHECK_THROWS_WITH(
      io::ModelCheckpoint::open(test::fixture_path("io/llama_single"), test::fixture_path("io/llama_single")),
      Contains("no CLIP vision tower"));
}

TEST_CASE("model checkpoint errors name the canonical name the key and both shapes", "[io][checkpoint][llava]") {
  const auto ckpt = io::ModelCheckpoint::open(test::fixture_path("io/llava_legacy"));
  CHECK_THROWS_WITH(ckpt.matrix(io::ModelPart::Decoder, "model.layers.1.self_attn.q_proj.weight"),
                    Contains("missing decoder tensor 'model.layers.1.self_attn.q_proj.weight'") &&
                        Contains("looked for 'language_model.model.layers.1.self_attn.q_proj.weight'"));
  CHECK_THROWS_WITH(ckpt.matrix(io::ModelPart::Projector, "multi_modal_projector.linear_1.weight", 8, 9),
                    Contains("'multi_modal_projector.linear_1.weight' has shape [8, 8], expected [8, 9]"));
  CHECK_THROWS_WITH(ckpt.matrix(io::ModelPart::Decoder, "layers.0.mlp.up_proj.weight"),
                    Contains("start with 'model.'"));
  CHECK_THROWS_WITH(io::ModelCheckpoint::open(test::fixture_path("io/mixed.safetensors")),
                    Contains("unrecognised key layout"));
}

TEST_CASE("model checkpoint part view serves canonical names like a plain checkpoint", "[io][checkpoint][llava]") {
  const auto ckpt = io::ModelCheckpoint::open(test::fixture_path("io/llava_current"));
  const auto legacy = io::CheckpointDir::open(test::fixture_path("io/llava_legacy"));
  const auto vision = ckpt.part(io::ModelPart::Vision);
  CHECK(vision.contains("encoder.layers.0.mlp.fc1.weight"));
  CHECK_FALSE(vision.contains("vision_tower.encoder.layers.0.mlp.fc1.weight"));
  CHECK(vision.matrix("encoder.layers.0.mlp.fc1.weight") ==
        legacy.matrix("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"));
  const auto decoder = ckpt.part(io::ModelPart::Decoder);
  CHECK(decoder.info("model.embed_tokens.weight").shape == std::vector<std::int64_t>{40, 8});
  CHECK(decoder.vector("model.norm.weight") == legacy.vector("language_model.model.norm.weight"));
  CHECK_THROWS_WITH(io::ModelCheckpoint::open(test::fixture_path("io/llama_single")).part(io::ModelPart::Vision),
                    Contains("has no vision tower"));
}
