// generation_config.json and the logits processors against transformers' own (tests/fixtures/model/
// generation_config_cases.json from tools/reference/generation_config_cases.py): the settings generate() resolves
// from the file (or from config.json without one), and the processed scores of the processors and sampling warpers
// it builds for them, bit for bit; and greedy decoding and beam search against generate() on the tiny
// LLaVA-NeXT-Video fixture (generation_search_cases.json from tools/reference/generation_search_cases.py).
#include <catch2/catch.hpp>

#include <bit>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <vidlora/model/generation.hpp>
#include <vidlora/model/generation_config.hpp>
#include <vidlora/model/llava_model.hpp>

#include "model_fixtures.hpp"

using namespace vidlora;
namespace fs = std::filesystem;

namespace {

std::vector<float> floats_from_hex(const nlohmann::json& a) {
  std::vector<float> out;
  for (const auto& h : a)
    out.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(std::stoul(h.get<std::string>(), nullptr, 16))));
  return out;
}

std::vector<std::uint32_t> bits(const std::vector<float>& v) {
  std::vector<std::uint32_t> out;
  for (const float x : v) out.push_back(std::bit_cast<std::uint32_t>(x));
  return out;
}

// A directory holding the case's config.json (with its edits) and its generation_config.json (none where the case
// has none).
fs::path case_directory(const test::TempDir& tmp, const nlohmann::json& c, int index) {
  const fs::path d = tmp.path / std::to_string(index);
  fs::create_directories(d);
  nlohmann::json config = test::load_fixture("model/" + c["directory"].get<std::string>() + "/config.json");
  if (!c["config_edits"].is_null()) {
    config.update(c["config_edits"]["top_level"]);
    config["text_config"].update(c["config_edits"]["text_config"]);
  }
  std::ofstream(d / "config.json") << config.dump(2);
  if (!c["generation_config"].is_null()) std::ofstream(d / "generation_config.json") << c["generation_config"].dump(2);
  return d;
}

// Whether the case's directory sets max_length (transformers' global default, 20 new tokens, is vidlora's 64).
bool sets_max_length(const nlohmann::json& c) {
  const auto has = [](const nlohmann::json& j) {
    return j.is_object() && j.contains("max_length") && !j["max_length"].is_null();
  };
  if (!c["generation_config"].is_null()) return has(c["generation_config"]);
  return !c["config_edits"].is_null() && (has(c["config_edits"]["top_level"]) || has(c["config_edits"]["text_config"]));
}

void write_file(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

}  // namespace

TEST_CASE("generation_config.json resolves as transformers' generate resolves it", "[generation][hf]") {
  const auto fixture = test::load_fixture("model/generation_config_cases.json");
  for (const auto& field : fixture["generation_config_fields"]) {
    INFO("transformers' GenerationConfig field " << field.get<std::string>());
    CHECK(model::is_generation_config_field(field.get<std::string>()));
  }
  test::TempDir tmp("generation_config_cases");
  int index = 0;
  for (const auto& c : fixture["cases"]) {
    INFO(c["name"].get<std::string>());
    const fs::path dir = case_directory(tmp, c, index++);
    const model::GenerationConfigFile file = model::read_generation_config(dir);
    CHECK(file.file.filename() == (c["generation_config"].is_null() ? "config.json" : "generation_config.json"));
    model::GenerationOptions o;  // transformers' global defaults, but for max_new_tokens (vidlora always passes one)
    const int vidlora_default_max_new_tokens = o.max_new_tokens;
    file.apply(o);
    const auto& r = c["resolved"];
    CHECK(o.do_sample == r["do_sample"].get<bool>());
    CHECK(o.temperature == r["temperature"].get<double>());
    CHECK(o.top_k == r["top_k"].get<int>());
    CHECK(o.top_p == r["top_p"].get<double>());
    CHECK(o.min_p == (r["min_p"].is_null() ? 0.0 : r["min_p"].get<double>()));
    CHECK(o.repetition_penalty == r["repetition_penalty"].get<double>());
    CHECK(o.no_repeat_ngram_size == r["no_repeat_ngram_size"].get<int>());
    CHECK(o.num_beams == r["num_beams"].get<int>());
    CHECK(o.length_penalty == r["length_penalty"].get<double>());
    CHECK(o.encoder_repetition_penalty == r["encoder_repetition_penalty"].get<double>());
    CHECK(o.encoder_no_repeat_ngram_size == r["encoder_no_repeat_ngram_size"].get<int>());
    const bool max_length = sets_max_length(c) && r["max_new_tokens"].is_null();
    CHECK(o.max_length == (max_length ? r["max_length"].get<int>() : 0));
    CHECK(o.max_new_tokens == (max_length                      ? r["max_length"].get<int>()
                               : r["max_new_tokens"].is_null() ? vidlora_default_max_new_tokens
                                                               : r["max_new_tokens"].get<int>()));
    CHECK(o.min_new_tokens == (r["min_new_tokens"].is_null() ? 0 : r["min_new_tokens"].get<int>()));
    CHECK(o.min_length == r["min_length"].get<int>());
    CHECK(o.eos_token_id == -1);
    CHECK(o.extra_eos_token_ids == r["eos_token_ids"].get<std::vector<int>>());
    CHECK_NOTHROW(file.check_supported(o));
    CHECK_NOTHROW(model::check_generation(o));
    for (const auto& run : c["runs"]) {
      o.context_ids = run["prompt_ids"].get<std::vector<int>>();
      std::vector<float> scores = floats_from_hex(run["scores"]);
      model::process_scores(scores, run["generated_ids"].get<std::vector<int>>(), o);
      CHECK(bits(scores) == bits(floats_from_hex(run["processed"])));
    }
  }
}

TEST_CASE("generation_config.json fields without effect are listed and the others refused naming them",
          "[generation][hf]") {
  test::TempDir tmp("generation_config_refusals");
  const fs::path dir = tmp.path;
  fs::create_directories(dir);
  const auto read = [&](const std::string& json) {
    write_file(dir / "generation_config.json", json);
    return model::read_generation_config(dir);
  };
  const auto refusal = [&](const std::string& json, const model::GenerationOptions& o = {}) {
    const auto g = read(json);
    try {
      g.check_supported(o);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(accepted)");
  };

  const auto quiet = read(R"({"bos_token_id": 1, "pad_token_id": 0, "use_cache": true, "chat_format": "chatml",
                              "forced_bos_token_id": 1, "transformers_version": "4.45.0", "_from_model_config": true})");
  CHECK(quiet.unsupported.empty());
  CHECK(quiet.not_used == std::vector<std::string>{"_from_model_config", "bos_token_id", "chat_format",
                                                   "forced_bos_token_id", "pad_token_id", "transformers_version",
                                                   "use_cache"});
  CHECK(quiet.summary() == "nothing generate() uses");

  // Refused wherever they act: the message names the file, the field and its value.
  const std::string bad_words = refusal(R"({"bad_words_ids": [[5]]})");
  CHECK_THAT(bad_words, Catch::Contains("generation_config.json") && Catch::Contains("bad_words_ids = [[5]]") &&
                            Catch::Contains("not supported"));
  CHECK_THAT(refusal(R"({"suppress_tokens": [1, 2]})"), Catch::Contains("suppress_tokens = [1,2]"));
  CHECK_THAT(refusal(R"({"guidance_scale": 1.5})"), Catch::Contains("guidance_scale = 1.5"));
  CHECK_THAT(refusal(R"({"num_return_sequences": 3})"),
             Catch::Contains("num_return_sequences = 3") && Catch::Contains("without beam search"));
  CHECK_THAT(refusal(R"({"cache_implementation": "quantized"})"),
             Catch::Contains("cache_implementation = \"quantized\""));
  CHECK(refusal(R"({"cache_implementation": "static"})") == "(accepted)");
  CHECK_THROWS_WITH(read(R"({"max_new_tokens": 0})"), Catch::Contains("max_new_tokens must be an integer >= 1"));
  CHECK_THAT(refusal(R"({"penalty_alpha": 0.6, "top_k": 4})"), Catch::Contains("penalty_alpha = 0.6"));
  CHECK_THAT(refusal(R"({"bad_words_ids": []})"), Catch::Contains("bad_words_ids = []"));  // transformers raises
  // ... at the values that do nothing they are accepted
  CHECK(refusal(R"({"guidance_scale": 1.0, "suppress_tokens": [], "typical_p": 1, "encoder_repetition_penalty": 1,
                    "num_return_sequences": 1, "diversity_penalty": 0.5, "encoder_repetition_penalty": 1.2})") ==
        "(accepted)");

  // Sampling-only fields act only when sampling, early_stopping only with beams.
  CHECK(refusal(R"({"typical_p": 0.9})") == "(accepted)");
  model::GenerationOptions sampling;
  sampling.do_sample = true;
  CHECK_THAT(refusal(R"({"typical_p": 0.9})", sampling),
             Catch::Contains("typical_p = 0.9") && Catch::Contains("when sampling"));
  CHECK_THAT(refusal(R"({"do_sample": true, "epsilon_cutoff": 0.001})", sampling), Catch::Contains("epsilon_cutoff"));
  // ... where transformers builds their warper: typical_p below 1, the cutoffs inside (0, 1)
  CHECK(refusal(R"({"typical_p": 1.5, "epsilon_cutoff": 1.5, "eta_cutoff": 0})", sampling) == "(accepted)");
  CHECK(refusal(R"({"early_stopping": true})") == "(accepted)");
  model::GenerationOptions beams;
  beams.num_beams = 4;
  CHECK_THAT(refusal(R"({"early_stopping": true})", beams),
             Catch::Contains("early_stopping = true") && Catch::Contains("with beam search"));
  CHECK_THAT(refusal(R"({"early_stopping": "never"})", beams), Catch::Contains("early_stopping = \"never\""));
  CHECK(refusal(R"({"early_stopping": false})", beams) == "(accepted)");
  CHECK(refusal(R"({"num_return_sequences": 3})", beams) == "(accepted)");
  CHECK(refusal(R"({"renormalize_logits": true, "low_memory": true})") == "(accepted)");
  CHECK_THAT(refusal(R"({"renormalize_logits": true})", beams), Catch::Contains("renormalize_logits = true"));
  CHECK_THAT(refusal(R"({"low_memory": true})", beams), Catch::Contains("low_memory = true"));

  // Wrong types name the field.
  CHECK_THROWS_WITH(read(R"({"do_sample": "yes"})"), Catch::Contains("do_sample must be true or false"));
  CHECK_THROWS_WITH(read(R"({"top_k": 2.5})"), Catch::Contains("top_k must be an integer >= 0"));
  CHECK_THROWS_WITH(read(R"({"num_beams": 0})"), Catch::Contains("num_beams must be an integer >= 1"));
  CHECK_THROWS_WITH(read(R"({"temperature": "hot"})"), Catch::Contains("temperature must be a number"));
  CHECK_THROWS_WITH(read(R"({"eos_token_id": [2, "x"]})"), Catch::Contains("eos_token_id must be a token id"));
  CHECK_THROWS_WITH(read(R"([1, 2])"), Catch::Contains("expected a JSON object"));
  CHECK_THROWS_WITH(read(R"({"top_k": )"), Catch::Contains("is not valid JSON"));

  // The summary says what the file sets.
  CHECK(read(R"({"do_sample": true, "temperature": 0.7, "top_k": 20, "eos_token_id": [7, 5]})").summary() ==
        "do_sample true, temperature 0.7, top_k 20, eos_token_id 7, 5");
  CHECK(read(R"({"max_length": 4096})").summary() == "max_length 4096");
}

TEST_CASE("generation_config.json's EOS ids join the options' own once", "[generation][hf]") {
  test::TempDir tmp("generation_config_eos");
  fs::create_directories(tmp.path);
  write_file(tmp.path / "generation_config.json", R"({"eos_token_id": [7, 5, 7]})");
  const auto g = model::read_generation_config(tmp.path);
  model::GenerationOptions o;
  o.eos_token_id = 5;
  g.apply(o);
  CHECK(o.extra_eos_token_ids == std::vector<int>{7});
  CHECK(model::is_eos(o, 5));
  CHECK(model::is_eos(o, 7));
  CHECK_FALSE(model::is_eos(o, 6));
  CHECK_FALSE(model::is_eos(o, -1));
}

TEST_CASE("greedy decoding and beam search choose what transformers' generate chooses", "[generation][hf]") {
  const auto fixture = test::load_fixture("model/generation_search_cases.json");
  model::LlavaModel<4, 8> llava(test::model_dir("llava_next_video_hf"));
  auto& decoder = llava.decoder();
  int beam_cases = 0, finished_beams = 0;
  for (const auto& c : fixture["cases"]) {
    const auto& s = c["settings"];
    INFO("prompt " << c["prompt_ids"].dump() << ", settings " << s.dump());
    model::GenerationOptions o;
    if (c["max_new_tokens"].is_null()) {  // max_length alone: the prompt and the new tokens together
      o.max_length = s["max_length"].get<int>();
      o.max_new_tokens = o.max_length;
    } else {
      o.max_new_tokens = c["max_new_tokens"].get<int>();
    }
    o.num_beams = s["num_beams"].get<int>();
    o.length_penalty = s.value("length_penalty", 1.0);
    o.repetition_penalty = s.value("repetition_penalty", 1.0);
    o.no_repeat_ngram_size = s.value("no_repeat_ngram_size", 0);
    o.min_new_tokens = s.value("min_new_tokens", 0);
    o.extra_eos_token_ids = s["eos_token_id"].get<std::vector<int>>();
    o.context_ids = c["prompt_ids"].get<std::vector<int>>();
    const auto r = model::generate(decoder, decoder.embed(o.context_ids), o);
    std::vector<int> tokens = r.ids;
    if (r.finished) tokens.push_back(r.eos_id);
    CHECK(tokens == c["tokens"].get<std::vector<int>>());
    if (o.num_beams > 1) {
      ++beam_cases;
      finished_beams += r.finished ? 1 : 0;
      CHECK(r.score == Approx(c["sequences_score"].get<double>()).epsilon(1e-4));
    }
  }
  CHECK(beam_cases == 20);
  CHECK(finished_beams == 6);  // hypotheses ended by an EOS id, whose length counts it
}
