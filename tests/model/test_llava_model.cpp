// LlavaModel: a LLaVA-NeXT-Video save_pretrained directory (sharded, older key layout) in one call,
// against transformers (tools/reference/llava_model_cases.py): pooled + projected video tokens,
// logits of a right-padded batch, greedy generation.

#include <catch2/catch.hpp>

#include <filesystem>
#include <span>
#include <fstream>
#include <string>
#include <vector>

#include <vidlora/io.hpp>
#include <vidlora/lora.hpp>
#include <vidlora/model.hpp>

#include "model_fixtures.hpp"

using namespace vidlora;
using Catch::Contains;
using vidlora::test::clip_pixels;
using vidlora::test::json_3d;
using vidlora::test::json_flat_ints;
using vidlora::test::normwise_error;

namespace {

const std::string kDir = vidlora::test::model_dir("llava_next_video");

}  // namespace

TEST_CASE("LlavaModel loads a sharded LLaVA-NeXT-Video directory and matches transformers",
          "[model][llava][reference]") {
  const auto ref = vidlora::test::load_fixture("model/llava_next_video/reference.json");
  REQUIRE(std::filesystem::exists(kDir + "/model.safetensors.index.json"));
  model::LlavaModel<4, 8> model(kDir);
  CHECK(model.placeholder_id() == 61);
  CHECK(model.tokens_per_frame() == 4);  // 4x4 patches pooled 2x2
  std::vector<Matrix> visual;
  for (std::size_t b = 0; b < 2; ++b)
    visual.push_back(model.visual_tokens(clip_pixels(ref["pixel_values_videos"], b), 2));
  const Matrix expected_visual = json_3d(ref["video_tokens"]);  // [2 clips · 8, hidden]
  CHECK(normwise_error(visual[0], Matrix(expected_visual.topRows(8))) < 1e-5);
  CHECK(normwise_error(visual[1], Matrix(expected_visual.bottomRows(8))) < 1e-5);

  std::vector<std::vector<int>> prompts;
  for (const auto& p : ref["prompts"]) prompts.push_back(p.get<std::vector<int>>());
  CHECK(normwise_error(model.logits(prompts, visual), json_3d(ref["logits"])) < 1e-5);
  CHECK(model.generate_greedy(prompts[0], visual[0], ref["generate"]["max_new_tokens"].get<int>()) ==
        ref["generate"]["tokens"].get<std::vector<int>>());
  // One placeholder expands to the clip's tokens as well.
  const std::vector<int> one{1, 5, 7, 61, 9, 11, 20};
  CHECK(model.splice(one, {}, visual[0]).embeds.rows() == 6 + 8);
}

TEST_CASE("LlavaModel names what is missing from a directory that is not a supported model", "[model][llava][errors]") {
  const auto tmp = std::filesystem::temp_directory_path() / "vidlora_llava_model_errors";
  std::filesystem::remove_all(tmp);
  std::filesystem::create_directories(tmp);
  REQUIRE_THROWS_WITH((model::LlavaModel<4, 8>(tmp)), Contains("no config.json"));
  nlohmann::json config = vidlora::test::load_fixture("model/llava_next_video/config.json");
  config["model_type"] = "qwen2_vl";
  std::ofstream(tmp / "config.json") << config.dump();
  REQUIRE_THROWS_WITH((model::LlavaModel<4, 8>(tmp)), Contains("config.json") && Contains("qwen2_vl"));
  config = vidlora::test::load_fixture("model/llava_next_video/config.json");
  std::ofstream(tmp / "config.json") << config.dump();
  REQUIRE_THROWS_WITH((model::LlavaModel<4, 8>(tmp)), Contains("model.safetensors"));
  std::filesystem::remove_all(tmp);
}

TEST_CASE("LlavaModel with a PEFT adapter whose target_modules is a regex gives PEFT's logits",
          "[model][llava][lora][reference]") {
  const std::string dir = vidlora::test::model_dir("llava");
  const auto ref = vidlora::test::model_reference("llava");
  const lora::PeftAdapter adapter = lora::load_peft_adapter(dir + "/adapter");
  REQUIRE(adapter.spec.target_regex.has_value());
  const auto config = model::LlavaConfig::from_file(dir + "/config.json");
  model::LlavaModel<4, 8> model(dir, model::decoder_options_for(adapter, config.text));
  model.decoder().load_adapter(io::SafetensorsFile::open(dir + "/adapter/adapter_model.safetensors"));
  int lora_slots = 0;
  model.decoder().for_each_lora([&](const std::string&, auto&) { ++lora_slots; });
  CHECK(lora_slots == 14);
  std::vector<float> pixels;
  for (const auto& f : ref["pixel_values"])
    for (const auto& c : f)
      for (const auto& row : c)
        for (const auto& v : row) pixels.push_back(v.get<float>());
  const std::size_t per_image = pixels.size() / 2;
  std::vector<Matrix> visual;
  std::vector<std::vector<int>> prompts;
  for (std::size_t b = 0; b < 2; ++b) {
    visual.push_back(model.visual_tokens(std::span<const float>(pixels).subspan(b * per_image, per_image), 1));
    auto p = ref["prompts"][b].get<std::vector<int>>();
    for (int id : ref["answers"][b].get<std::vector<int>>()) p.push_back(id);
    prompts.push_back(std::move(p));
  }
  CHECK(model.placeholder_id() == 60);
  CHECK(normwise_error(model.logits(prompts, visual), json_3d(ref["logits"])) < 1e-5);
}
