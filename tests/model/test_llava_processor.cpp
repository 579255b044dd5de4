// LlavaProcessor + LlavaModel on whole save_pretrained directories with their processors, against
// transformers' LlavaNextVideoProcessor and LlavaNextVideoForConditionalGeneration
// (tools/reference/llava_processor_cases.py): the chat template's prompt, input_ids with the video tokens
// expanded, pixel_values_videos from raw frames, logits, greedy generation, a training sequence's ids.

#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

#include <vidlora/model.hpp>
#include <vidlora/model/llava_processor.hpp>

#include "model_fixtures.hpp"

using namespace vidlora;
using Catch::Contains;
using vidlora::test::json_3d;
using vidlora::test::normwise_error;

namespace {

std::vector<video::RgbImage> frames_of(const nlohmann::json& frames) {  // [frames][H][W][3]
  std::vector<video::RgbImage> out;
  for (const auto& f : frames) {
    video::RgbImage image{static_cast<int>(f[0].size()), static_cast<int>(f.size()), {}};
    for (const auto& row : f)
      for (const auto& px : row)
        for (const auto& c : px) image.data.push_back(static_cast<std::uint8_t>(c.get<int>()));
    out.push_back(std::move(image));
  }
  return out;
}

std::vector<float> flat_floats(const nlohmann::json& a) {
  std::vector<float> out;
  const auto walk = [&](const auto& self, const nlohmann::json& v) -> void {
    if (v.is_array())
      for (const auto& x : v) self(self, x);
    else
      out.push_back(v.get<float>());
  };
  walk(walk, a);
  return out;
}

void check_directory(const std::string& name, const std::string& chat_name) {
  const std::string dir = vidlora::test::model_dir(name);
  const auto ref = vidlora::test::model_reference(name);
  const model::LlavaProcessor processor(dir);
  CHECK(processor.chat_template().name == chat_name);
  CHECK(processor.placeholder_id() == ref["video_token_id"].get<int>());
  CHECK(processor.tokens_per_frame() == 4);
  const std::string question = ref["question"].get<std::string>();
  CHECK(processor.prompt(question) == ref["prompt"].get<std::string>());
  const auto frames = frames_of(ref["frames"]);
  CHECK(processor.input_ids(question, static_cast<int>(frames.size())) == ref["input_ids"].get<std::vector<int>>());

  // Pixels: resize (Pillow's bicubic), crop, rescale, normalise from the directory's video processor config.
  const video::ClipTensor pixels = processor.preprocess(frames);
  const std::vector<float> expected = flat_floats(ref["pixel_values_videos"]);
  REQUIRE(pixels.data.size() == expected.size());
  float worst = 0;
  for (std::size_t i = 0; i < expected.size(); ++i) worst = std::max(worst, std::abs(pixels.data[i] - expected[i]));
  CHECK(worst < 1e-5f);

  // The model on those inputs: logits and greedy tokens as transformers'.
  model::LlavaModel<4, 8> model(dir);
  const Matrix visual = model.visual_tokens(pixels.data, pixels.frames);
  const std::vector<int> ids = ref["input_ids"].get<std::vector<int>>();
  const Matrix logits = model.logits({ids}, {visual});  // [T, vocab]; the fixture keeps the last rows
  const Matrix expected_logits = json_3d(nlohmann::json::array({ref["logits"]}));  // [rows, vocab]
  REQUIRE(ref["logits_last"].get<Eigen::Index>() == expected_logits.rows());
  CHECK(normwise_error(Matrix(logits.bottomRows(expected_logits.rows())), expected_logits) < 1e-5);
  CHECK(model.generate_greedy(ids, visual, ref["generate"]["max_new_tokens"].get<int>()) ==
        ref["generate"]["tokens"].get<std::vector<int>>());

  // A training sequence: prompt (one placeholder) + answer + end of turn, as the tokenizer gives it whole.
  std::vector<int> train = processor.prompt_ids(question);
  for (const int id : processor.answer_ids(ref["answer"].get<std::string>())) train.push_back(id);
  const std::string end(processor.chat_template().response_suffix);
  train.push_back(*std::visit([&](const auto& t) { return t.token_to_id(end); }, processor.tokenizer()));
  CHECK(train == ref["train_ids"].get<std::vector<int>>());
}

// A copy of a fixture directory's processor files in a temporary directory, for the error cases.
struct ProcessorCopy {
  std::filesystem::path dir;
  explicit ProcessorCopy(const std::string& name) {
    // one directory per process and copy: ctest runs the test cases as parallel processes
    static int copies = 0;
    dir = std::filesystem::temp_directory_path() /
          ("vidlora_processor_" + name + "_" + std::to_string(::getpid()) + "_" + std::to_string(copies++));
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    for (const auto& e : std::filesystem::directory_iterator(vidlora::test::model_dir(name)))
      if (e.path().extension() != ".safetensors") std::filesystem::copy_file(e.path(), dir / e.path().filename());
  }
  ~ProcessorCopy() { std::filesystem::remove_all(dir); }
  nlohmann::json read() const {
    std::ifstream in(dir / "processor_config.json");
    return nlohmann::json::parse(in);
  }
  void write(const nlohmann::json& j) const { std::ofstream(dir / "processor_config.json") << j.dump(); }
  // Sets processor_config.json's video_processor.<key> (or, with top = true, its top-level <key>).
  void edit(const std::string& key, const nlohmann::json& value, bool top = false) const {
    nlohmann::json j = read();
    (top ? j : j["video_processor"])[key] = value;
    write(j);
  }
};

}  // namespace

TEST_CASE("LlavaProcessor + LlavaModel match transformers on a LLaVA-NeXT-Video directory (LLaMA, USER:/ASSISTANT:)",
          "[model][llava][processor][reference]") {
  check_directory("llava_next_video_hf", "llava_next_video");
}

TEST_CASE("LlavaProcessor + LlavaModel match transformers on a LLaVA-NeXT-Video directory (Qwen2, ChatML)",
          "[model][llava][processor][reference]") {
  check_directory("llava_qwen_hf", "llava_qwen_chatml");
}

TEST_CASE("LlavaProcessor reads size, crop, rescale factor, mean and std from the video processor config",
          "[model][llava][processor]") {
  const model::LlavaProcessor p(vidlora::test::model_dir("llava_qwen_hf"));
  const auto& o = p.frame_preprocessing();
  CHECK(p.frame_preprocessing_file().filename() == "processor_config.json");
  CHECK_THAT(p.frame_preprocessing_source(), Contains("(video_processor)"));
  CHECK(o.resize_height == 32);
  CHECK(o.resize_width == 32);
  CHECK(o.crop_height == 28);
  CHECK(o.rescale_factor == Approx(1 / 250.0));
  CHECK(o.mean[1] == Approx(0.4f));
  CHECK(o.std[2] == Approx(0.3f));
  CHECK(o.resize_arithmetic == video::ResizeArithmetic::TorchUint8);
}

TEST_CASE("LlavaProcessor reads the frame preprocessing from a separate video_preprocessor_config.json first",
          "[model][llava][processor]") {
  const ProcessorCopy copy("llava_next_video_hf");
  nlohmann::json video = copy.read()["video_processor"];
  video["size"] = nlohmann::json{{"shortest_edge", 30}};
  std::ofstream(copy.dir / "video_preprocessor_config.json") << video.dump();
  const model::LlavaProcessor p(copy.dir);
  CHECK(p.frame_preprocessing_file().filename() == "video_preprocessor_config.json");
  CHECK(p.frame_preprocessing().shortest_edge == 30);
}

TEST_CASE("LlavaProcessor refuses processor fields that change the result and are not supported, naming them",
          "[model][llava][processor][errors]") {
  const ProcessorCopy copy("llava_next_video_hf");
  const std::string where = "processor_config.json (video_processor)";
  SECTION("another resampling filter") {
    copy.edit("resample", 2);
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir), Contains("resample 2") && Contains(where));
  }
  SECTION("size.longest_edge") {
    copy.edit("size", nlohmann::json{{"longest_edge", 40}});
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir), Contains("size.longest_edge") && Contains(where));
  }
  SECTION("frame sampling by the processor") {
    copy.edit("do_sample_frames", true);
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir), Contains("do_sample_frames") && Contains(where));
  }
  SECTION("padding") {
    copy.edit("do_pad", true);
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir), Contains("do_pad") && Contains(where));
  }
  SECTION("an unknown field") {
    copy.edit("crop_pct", 0.9);
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir), Contains("\"crop_pct\"") && Contains(where));
  }
  SECTION("a crop that is not the vision tower's input size") {
    copy.edit("crop_size", nlohmann::json{{"height", 24}, {"width", 24}});
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir), Contains("24x24") && Contains("28x28"));
  }
  SECTION("a processor_config.json field") {
    copy.edit("num_image_tokens", 3, true);
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir),
                      Contains("\"num_image_tokens\"") && Contains("processor_config.json"));
  }
  SECTION("a patch size that counts other visual tokens than the model makes") {
    copy.edit("patch_size", 14, true);
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir),
                      Contains("visual tokens per frame") && Contains("patch_size 14"));
  }
  SECTION("a placeholder token the tokenizer does not have") {
    copy.edit("video_token", "<clip>", true);
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir), Contains("no <clip> token"));
  }
  SECTION("no frame preprocessing at all") {
    nlohmann::json j = copy.read();
    j.erase("video_processor");
    j.erase("image_processor");
    copy.write(j);
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir),
                      Contains("video_preprocessor_config.json") && Contains("\"video_processor\""));
  }
  SECTION("a chat template that prints no video placeholder") {
    std::ofstream(copy.dir / "chat_template.jinja") << "{{ messages[0]['content'] }}";
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir),
                      Contains("chat_template.jinja") && Contains("placeholder '<video>' 0 times"));
  }
  SECTION("a chat template that prints the placeholder twice") {
    std::ofstream(copy.dir / "chat_template.jinja") << "<video>{{ '<video>' }}{{ messages[0]['content'][1]['text'] }}";
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir),
                      Contains("chat_template.jinja") && Contains("placeholder '<video>' 2 times"));
  }
  SECTION("a chat template that drops the question") {
    std::ofstream(copy.dir / "chat_template.jinja") << "USER: <video> ASSISTANT:";
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir), Contains("chat_template.jinja") && Contains("question 0 times"));
  }
  SECTION("a chat template that does not print the answer") {
    std::ofstream(copy.dir / "chat_template.jinja")
        << "<video>{{ messages[0]['content'][1]['text'] }}{% if add_generation_prompt %} A:{% endif %}";
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir),
                      Contains("chat_template.jinja") && Contains("does not print the assistant's answer"));
  }
  SECTION("a chat template that does not parse") {
    std::ofstream(copy.dir / "chat_template.jinja") << "{{ '<video>' ";
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir), Contains("chat_template.jinja"));
  }
  SECTION("a chat template that reads a special token tokenizer_config.json does not name") {
    std::ofstream(copy.dir / "chat_template.jinja") << "{{ sep_token }}<video>{{ messages[0]['content'][1]['text'] }}";
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir), Contains("chat_template.jinja") && Contains("reads sep_token") &&
                                                           Contains("tokenizer_config.json does not name"));
  }
  SECTION("chat templates as a list in tokenizer_config.json: the one named default") {
    std::filesystem::remove(copy.dir / "chat_template.jinja");
    std::ifstream in(copy.dir / "tokenizer_config.json");
    nlohmann::json config = nlohmann::json::parse(in);
    in.close();
    config["chat_template"] = nlohmann::json::array(
        {{{"name", "tool_use"}, {"template", "{{ 'tools' }}"}},
         {{"name", "default"},
          {"template", "Q: <video>{% for m in messages %}{{ m['content'][-1]['text'] }}{% endfor %}"}}});
    std::ofstream(copy.dir / "tokenizer_config.json", std::ios::trunc) << config.dump();
    CHECK(model::LlavaProcessor(copy.dir).prompt("q") == "Q: <video>q");
    config["chat_template"].erase(1);
    std::ofstream(copy.dir / "tokenizer_config.json", std::ios::trunc) << config.dump();
    CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir),
                      Contains("tokenizer_config.json") && Contains("no template named \"default\""));
  }
}

// tools/reference/llava_processor_templates.py: templates rendered by transformers' render_jinja_template as
// processor.apply_chat_template calls it, over one user turn (the video, then the question).
TEST_CASE("LlavaProcessor runs the directory's chat template as transformers renders it",
          "[model][llava][processor][chat]") {
  std::ifstream in(vidlora::test::fixture_path("model/llava_processor_templates.json"));
  const nlohmann::json ref = nlohmann::json::parse(in);
  const std::string question = ref["question"], answer = ref["answer"];
  REQUIRE(ref["cases"].size() >= 10);
  for (const auto& c : ref["cases"]) {
    const std::string name = c["name"], directory = c["directory"];
    INFO("case " << name << " over " << directory);
    const ProcessorCopy copy(directory);
    std::ofstream(copy.dir / "chat_template.jinja", std::ios::trunc) << c["template"].get<std::string>();
    if (!c["tokenizer_config"].empty()) {  // the variables beyond the standard seven
      std::ifstream config_in(copy.dir / "tokenizer_config.json");
      nlohmann::json config = nlohmann::json::parse(config_in);
      config_in.close();
      config.update(c["tokenizer_config"]);
      std::ofstream(copy.dir / "tokenizer_config.json", std::ios::trunc) << config.dump();
    }
    // The template's variables: transformers' special_tokens_map.
    std::ifstream config_in(copy.dir / "tokenizer_config.json");
    const nlohmann::json config = nlohmann::json::parse(config_in);
    const auto by_key = model::detail::config_special_tokens(&config, "tokenizer_config.json").by_key;
    CHECK(std::map<std::string, std::string>(by_key.begin(), by_key.end()) ==
          c["special_tokens_map"].get<std::map<std::string, std::string>>());
    const model::LlavaProcessor processor(copy.dir);
    const std::string prompt = c["prompt"], conversation = c["conversation"];
    CHECK(processor.prompt(question) == prompt);
    // The answer the model learns follows the prompt, after what the template writes between them where its
    // conversation begins with the prompt (chatml_role_space's does not: "assistant \n" there, "assistant\n" here).
    const std::size_t at = conversation.find(answer);
    REQUIRE(at != std::string::npos);
    CHECK(processor.chat_template().response_prefix ==
          (conversation.starts_with(prompt) ? conversation.substr(prompt.size(), at - prompt.size()) : ""));
    CHECK(conversation.starts_with(prompt) == (name != "chatml_role_space"));
    const std::string kind = name == "llava_hf" ? "llava_next_video"
                             : name == "chatml" ? "llava_qwen_chatml"
                                                : "chat_template.jinja";
    CHECK(processor.chat_template().name == kind);
    // A prompt that begins with the BOS text gets no second BOS (apply_chat_template(tokenize=True)).
    const auto ids = processor.prompt_ids(question);
    CHECK(ids == c["prompt_ids"].get<std::vector<int>>());
    const auto bos = std::visit([](const auto& t) { return t.bos_id(); }, processor.tokenizer());
    REQUIRE(ids.size() > 2);
    if (bos) {
      CHECK(ids[0] == *bos);
      CHECK(ids[1] != *bos);
    }
    CHECK(c["prompt_starts_with_bos"].get<bool>() == (name == "llava_hf_bos_first"));
  }
}

TEST_CASE("a ChatML template's own default system turn is the prompt's, and none gives none",
          "[model][llava][processor]") {
  const ProcessorCopy copy("llava_qwen_hf");
  const auto template_with = [&](const std::string& from, const std::string& to) {
    std::ifstream in(copy.dir / "chat_template.jinja");
    std::string text{std::istreambuf_iterator<char>(in), {}};
    in.close();
    REQUIRE(text.find(from) != std::string::npos);
    text.replace(text.find(from), from.size(), to);
    std::ofstream(copy.dir / "chat_template.jinja", std::ios::trunc) << text;
  };
  CHECK(model::LlavaProcessor(copy.dir).prompt("Q").starts_with(
      "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"));
  template_with("You are a helpful assistant.", "Answer the questions.");
  CHECK(model::LlavaProcessor(copy.dir).prompt("Q").starts_with(
      "<|im_start|>system\nAnswer the questions.<|im_end|>\n<|im_start|>user\n"));
  template_with(
      "{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nAnswer the questions.<|im_end|>\\n' }}{% endif "
      "%}",
      "");
  CHECK(model::LlavaProcessor(copy.dir).prompt("Q").starts_with("<|im_start|>user\n"));
}

TEST_CASE("LlavaProcessor finds the chat template where transformers' processors find theirs",
          "[model][llava][processor][chat]") {
  using Catch::Contains;
  const ProcessorCopy copy("llava_next_video_hf");
  const auto write_json = [&](const std::string& file, const nlohmann::json& j) {
    std::ofstream(copy.dir / file, std::ios::trunc) << j.dump();
  };
  const auto edit_json = [&](const std::string& file, const auto& edit) {
    std::ifstream in(copy.dir / file);
    nlohmann::json j = nlohmann::json::parse(in);
    in.close();
    edit(j);
    write_json(file, j);
  };
  const std::string question = "{{ messages[0]['content'][1]['text'] }}";
  const auto answers = "{% for m in messages[1:] %} {{ m['content'][0]['text'] }}{% endfor %}";
  std::ofstream(copy.dir / "chat_template.jinja", std::ios::trunc) << "jinja <video>" << question << answers;
  CHECK(model::LlavaProcessor(copy.dir).prompt("q") == "jinja <video>q");
  write_json("chat_template.json", {{"chat_template", "json <video>" + question + answers}});
  CHECK(model::LlavaProcessor(copy.dir).prompt("q") == "json <video>q");  // the legacy file first, as transformers
  edit_json("processor_config.json",
            [&](nlohmann::json& j) { j["chat_template"] = "config <video>" + question + answers; });
  CHECK(model::LlavaProcessor(copy.dir).prompt("q") == "config <video>q");  // processor_config.json's before both
  edit_json("processor_config.json", [&](nlohmann::json& j) {
    j["chat_template"] = {{"default", "named <video>" + question + answers}, {"tools", "{{ 'tools' }}"}};
  });
  CHECK(model::LlavaProcessor(copy.dir).prompt("q") == "named <video>q");
  edit_json("processor_config.json", [&](nlohmann::json& j) { j["chat_template"] = {{"tools", "{{ 'tools' }}"}}; });
  CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir),
                    Contains("processor_config.json") && Contains("no template \"default\""));
  edit_json("processor_config.json", [&](nlohmann::json& j) { j["chat_template"] = nullptr; });
  CHECK(model::LlavaProcessor(copy.dir).prompt("q") == "json <video>q");  // a null field names none
  edit_json("processor_config.json", [&](nlohmann::json& j) {
    j["chat_template"] = {{{"name", "default"}, {"template", "list <video>" + question + answers}}};
  });
  CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir),
                    Contains("processor_config.json") && Contains("only in tokenizer_config.json"));
  edit_json("processor_config.json", [&](nlohmann::json& j) { j.erase("chat_template"); });
  write_json("chat_template.json", {{"template", "no field"}});
  CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir),
                    Contains("chat_template.json") && Contains("no \"chat_template\""));
  write_json("chat_template.json", {{"chat_template", "json <video>" + question + answers}});

  // Named templates in additional_chat_templates/ beside the legacy file, or with no default: refused, as there.
  std::filesystem::create_directories(copy.dir / "additional_chat_templates");
  std::ofstream(copy.dir / "additional_chat_templates" / "tools.jinja") << "{{ 'tools' }}";
  CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir),
                    Contains("chat_template.json beside named templates in additional_chat_templates/"));
  std::filesystem::remove(copy.dir / "chat_template.json");
  CHECK(model::LlavaProcessor(copy.dir).prompt("q") == "jinja <video>q");
  std::filesystem::remove(copy.dir / "chat_template.jinja");
  CHECK_THROWS_WITH(model::LlavaProcessor(copy.dir), Contains("none is the default"));
  std::ofstream(copy.dir / "additional_chat_templates" / "default.jinja") << "default <video>" << question << answers;
  CHECK(model::LlavaProcessor(copy.dir).prompt("q") == "default <video>q");
  std::filesystem::remove_all(copy.dir / "additional_chat_templates");

  // A processor without a template (transformers' raises) takes the tokenizer's, else the fixed format.
  edit_json("tokenizer_config.json",
            [&](nlohmann::json& j) { j["chat_template"] = "tok <video>" + question + answers; });
  CHECK(model::LlavaProcessor(copy.dir).prompt("q") == "tok <video>q");
  edit_json("tokenizer_config.json", [&](nlohmann::json& j) { j.erase("chat_template"); });
  CHECK(model::LlavaProcessor(copy.dir).prompt("q") == "USER: <video>\nq ASSISTANT:");
}

TEST_CASE("a prompt beginning with the BOS text is encoded without the tokenizer's own special tokens",
          "[model][llava][processor][chat]") {
  // The tokenizer adds BOS and EOS here (its post_processor); apply_chat_template(tokenize=True) adds neither to a
  // prompt that begins with the BOS text, and both to one that does not.
  const ProcessorCopy copy("llava_next_video_hf");
  std::ifstream in(copy.dir / "tokenizer.json");
  nlohmann::json tokenizer = nlohmann::json::parse(in);
  in.close();
  auto& post = tokenizer["post_processor"];
  post["single"].push_back({{"SpecialToken", {{"id", "</s>"}, {"type_id", 0}}}});
  post["special_tokens"]["</s>"] = {{"id", "</s>"}, {"ids", {2}}, {"tokens", {"</s>"}}};
  std::ofstream(copy.dir / "tokenizer.json", std::ios::trunc) << tokenizer.dump();
  const std::string rest =
      "USER: <video>\n{{ messages[0]['content'][1]['text'] }} ASSISTANT:{% for m in messages[1:] "
      "%} {{ m['content'][0]['text'] }}{% endfor %}";
  std::ofstream(copy.dir / "chat_template.jinja", std::ios::trunc) << "{{ bos_token }}" << rest;
  const auto with_bos = model::LlavaProcessor(copy.dir).prompt_ids("q");
  std::ofstream(copy.dir / "chat_template.jinja", std::ios::trunc) << rest;
  const auto without = model::LlavaProcessor(copy.dir).prompt_ids("q");
  CHECK(without.front() == 1);
  CHECK(without.back() == 2);  // the tokenizer's EOS
  REQUIRE(with_bos.size() > 2);
  CHECK(with_bos.front() == 1);  // "<s>" in the text is the one BOS
  CHECK(with_bos[1] != 1);
  CHECK(with_bos.back() == without[without.size() - 2]);  // no EOS after the prompt's last token
}
