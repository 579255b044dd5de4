// Chat templates as plain strings, and the video placeholder in tokenised prompts.
#include <catch2/catch.hpp>

#include <vidlora/model/tokenizer_byte_level_bpe.hpp>
#include <vidlora/model/tokenizer_chat_template.hpp>
#include <vidlora/model/tokenizer_sentencepiece.hpp>

#include "test_tokenizer_support.hpp"

using namespace vidlora;

TEST_CASE("vicuna template renders the LLaVA prompt with the video token", "[model][tokenizer][chat]") {
  CHECK(model::render_prompt(model::kVicunaVideoTemplate, "영상을 설명하세요.", "SYS") ==
        "SYS USER: <video>\n영상을 설명하세요. ASSISTANT:");
  const std::string prompt = model::render_prompt(model::kVicunaVideoTemplate, "q");
  CHECK(prompt.starts_with("A chat between a curious human and an artificial intelligence assistant. "));
  CHECK(prompt.ends_with("human's questions. USER: <video>\nq ASSISTANT:"));
  CHECK(model::render_response(model::kVicunaVideoTemplate, "파란 원이 움직인다.") == " 파란 원이 움직인다.</s>");

  const auto llama = model::SentencePieceTokenizer::from_file(test::fixture_path("model/tokenizer.model"));
  const auto ids = llama.encode(prompt + model::render_response(model::kVicunaVideoTemplate, "답"));
  CHECK(model::video_placeholder_positions(ids, *llama.token_to_id("<video>")).size() == 1);
  CHECK(ids.front() == *llama.bos_id());
  CHECK(ids.back() == *llama.eos_id());  // "</s>" in the text is the EOS token, not its characters
}

TEST_CASE("qwen chatml template renders the Qwen2-VL video block", "[model][tokenizer][chat]") {
  const std::string prompt = model::render_prompt(model::kQwenChatMlVideoTemplate, "describe");
  CHECK(prompt ==
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|video_pad|><|vision_end|>describe<|im_end|>\n<|im_start|>assistant\n");
  const auto qwen = model::ByteLevelBpeTokenizer::from_file(test::fixture_path("model/tokenizer.json"));
  const auto ids = qwen.encode(prompt);
  const int pad = *qwen.token_to_id("<|video_pad|>");
  const auto positions = model::video_placeholder_positions(ids, pad);
  REQUIRE(positions.size() == 1);
  CHECK(ids[positions[0] - 1] == *qwen.token_to_id("<|vision_start|>"));
  CHECK(ids[positions[0] + 1] == *qwen.token_to_id("<|vision_end|>"));
  CHECK(qwen.decode(ids) == prompt);
}

TEST_CASE("a prompt without the video placeholder is an error", "[model][tokenizer][chat][errors]") {
  model::ChatTemplate no_video = model::kVicunaVideoTemplate;
  no_video.name = "custom";
  no_video.format = "{system} USER: {user} ASSISTANT:";
  CHECK_THROWS_WITH(model::render_prompt(no_video, "q"),
                    Catch::Contains("chat template 'custom': the prompt has no video placeholder"));
  model::ChatTemplate unknown = model::kVicunaVideoTemplate;
  unknown.format = "{video}{user}{lang}";
  CHECK_THROWS_WITH(model::render_prompt(unknown, "q"), Catch::Contains("unknown placeholder '{lang}'"));
  const std::vector<int> ids{1, 5, 6};
  CHECK_THROWS_WITH(model::video_placeholder_positions(ids, 4),
                    Catch::Contains("prompt of 3 tokens has no video placeholder token (id 4)"));
}
