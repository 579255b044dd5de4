// config.json fields that change the math, against transformers (tools/reference/hf_config_cases.py):
// RoPE scaling (linear, dynamic, yarn, llama3), attention and MLP biases, several vision feature layers
// with the "full" select strategy and a bias-free projector; and every unsupported field refused by name.

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <vidlora/io.hpp>
#include <vidlora/model.hpp>

#include "model_fixtures.hpp"

using namespace vidlora;
using Catch::Contains;
using vidlora::test::json_3d;
using vidlora::test::json_flat_ints;
using vidlora::test::normwise_error;

namespace {

std::string case_dir(const std::string& name) { return vidlora::test::model_dir("hfconfig/" + name); }
nlohmann::json case_ref(const std::string& name) {
  return vidlora::test::load_fixture("model/hfconfig/" + name + "/reference.json");
}
nlohmann::json case_config(const std::string& name) {
  return vidlora::test::load_fixture("model/hfconfig/" + name + "/config.json");
}

Vector json_vec(const nlohmann::json& a) {
  Vector v(static_cast<Eigen::Index>(a.size()));
  for (Eigen::Index i = 0; i < v.size(); ++i) v(i) = a[static_cast<std::size_t>(i)].get<float>();
  return v;
}

model::SequenceBatch batch_of(const nlohmann::json& ids, const nlohmann::json& mask) {
  model::SequenceBatch b;
  b.batch = static_cast<Eigen::Index>(ids.size());
  b.seq_len = static_cast<Eigen::Index>(ids[0].size());
  b.attention_mask = json_flat_ints(mask);
  return b;
}

Matrix logits_of(model::Decoder<4, 8>& d, const nlohmann::json& ids, const nlohmann::json& mask) {
  const std::vector<int> flat = json_flat_ints(ids);
  return d.logits(d.forward(d.embed(flat), batch_of(ids, mask), false));
}

// Logits of a decoder case, and the RoPE frequencies a fresh table builds.
void check_decoder_case(const std::string& name) {
  CAPTURE(name);
  const auto ref = case_ref(name);
  const auto config = model::DecoderConfig::from_file(case_dir(name) + "/config.json");
  const model::RotaryTable rope(config.head_dim, config.rope_theta, config.rope_scaling,
                                config.max_position_embeddings);
  CHECK(normwise_error(rope.inv_freq(), json_vec(ref["inv_freq"])) < 1e-6);
  CHECK(rope.attention_scaling() == Approx(ref["attention_scaling"].get<double>()).epsilon(1e-7));
  model::Decoder<4, 8> decoder(config, io::CheckpointDir::open(case_dir(name)));
  CHECK(normwise_error(logits_of(decoder, ref["input_ids"], ref["attention_mask"]), json_3d(ref["logits"])) < 1e-5);
}

}  // namespace

TEST_CASE("rope_parameters of each type parse into RopeScaling", "[model][config][rope]") {
  const auto linear = model::DecoderConfig::from_file(case_dir("rope_linear") + "/config.json");
  CHECK(linear.rope_scaling.type == model::RopeType::Linear);
  CHECK(linear.rope_scaling.factor == 2.0);
  const auto yarn = model::DecoderConfig::from_file(case_dir("rope_yarn_qwen3") + "/config.json");
  CHECK(yarn.rope_scaling.type == model::RopeType::Yarn);
  CHECK(yarn.rope_scaling.original_max_position_embeddings == 16);
  CHECK(yarn.rope_scaling.beta_fast == 16.0);
  CHECK_FALSE(yarn.rope_scaling.truncate);
  CHECK(yarn.rope_theta == 1e6);
  const auto llama3 = model::DecoderConfig::from_file(case_dir("rope_llama3") + "/config.json");
  CHECK(llama3.rope_scaling.type == model::RopeType::Llama3);
  CHECK(llama3.rope_scaling.high_freq_factor == 4.0);
  CHECK(llama3.max_position_embeddings == 512);
  // The transformers 4 spelling: rope_scaling with "type", rope_theta beside it.
  nlohmann::json old = case_config("rope_linear");
  old.erase("rope_parameters");
  old["rope_theta"] = 500000.0;
  old["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  const auto c = model::DecoderConfig::from_json(old);
  CHECK(c.rope_scaling.type == model::RopeType::Linear);
  CHECK(c.rope_scaling.factor == 4.0);
  CHECK(c.rope_theta == 500000.0);
}

TEST_CASE("linear RoPE scaling matches transformers", "[model][rope][reference]") { check_decoder_case("rope_linear"); }
TEST_CASE("yarn RoPE with the inferred attention factor matches transformers", "[model][rope][reference]") {
  check_decoder_case("rope_yarn");
}
TEST_CASE("yarn RoPE with mscale, betas and no truncation matches transformers for qwen3", "[model][rope][reference]") {
  check_decoder_case("rope_yarn_qwen3");
}
TEST_CASE("llama3 RoPE over all three frequency bands matches transformers", "[model][rope][reference]") {
  check_decoder_case("rope_llama3");
}
TEST_CASE("attention_bias and mlp_bias load their biases and match transformers", "[model][decoder][reference]") {
  const auto config = model::DecoderConfig::from_file(case_dir("biases") + "/config.json");
  CHECK(config.attention_bias);
  CHECK(config.mlp_bias);
  check_decoder_case("biases");
  // Without the bias tensors the checkpoint is refused, naming the missing one.
  model::TensorTable weights;
  const auto dir = io::CheckpointDir::open(case_dir("biases"));
  for (const auto& name : dir.names()) {
    if (name.find("mlp.up_proj.bias") != std::string::npos) continue;
    const Vector v = dir.vector(name);
    weights.insert(name, dir.info(name).shape, std::vector<float>(v.data(), v.data() + v.size()));
  }
  REQUIRE_THROWS_WITH((model::Decoder<4, 8>(config, weights)), Contains("model.layers.0.mlp.up_proj.bias"));
}

TEST_CASE("dynamic NTK RoPE grows, resets and generates as transformers does", "[model][rope][reference]") {
  const auto ref = case_ref("rope_dynamic");
  const auto config = model::DecoderConfig::from_file(case_dir("rope_dynamic") + "/config.json");
  REQUIRE(config.rope_scaling.type == model::RopeType::Dynamic);
  REQUIRE(config.max_position_embeddings == 8);
  model::RotaryTable rope(config.head_dim, config.rope_theta, config.rope_scaling, config.max_position_embeddings);
  const Vector original = rope.inv_freq();
  rope.prepare(8);
  CHECK(rope.inv_freq() == original);  // not longer than max_position_embeddings: unchanged
  rope.prepare(10);
  CHECK(normwise_error(rope.inv_freq(), json_vec(ref["grown_inv_freq"])) < 1e-6);
  rope.prepare(9);  // shorter than the longest seen but not below the original length: kept
  CHECK(normwise_error(rope.inv_freq(), json_vec(ref["grown_inv_freq"])) < 1e-6);
  rope.prepare(6);
  CHECK(normwise_error(rope.inv_freq(), json_vec(ref["reset_inv_freq"])) < 1e-7);

  // The same sequence of calls on the model: 10 tokens, 6 tokens, greedy generation with the KV cache.
  model::Decoder<4, 8> decoder(config, io::CheckpointDir::open(case_dir("rope_dynamic")));
  CHECK(normwise_error(logits_of(decoder, ref["input_ids"], ref["attention_mask"]), json_3d(ref["logits"])) < 1e-5);
  CHECK(normwise_error(logits_of(decoder, ref["short_input_ids"], ref["short_attention_mask"]),
                       json_3d(ref["short_logits"])) < 1e-5);
  const auto prompt = ref["generate"]["prompt"].get<std::vector<int>>();
  CHECK(decoder.generate_greedy(prompt, ref["generate"]["max_new_tokens"].get<int>()) ==
        ref["generate"]["tokens"].get<std::vector<int>>());
}

TEST_CASE("llava with two feature layers, the full strategy and a bias-free projector matches transformers",
          "[model][llava][reference]") {
  const auto ref = case_ref("llava_layers");
  const auto config = model::LlavaConfig::from_file(case_dir("llava_layers") + "/config.json");
  CHECK(config.vision_feature_layers == std::vector<int>{1, -2});
  CHECK_FALSE(config.drop_cls);
  CHECK_FALSE(config.projector_bias);
  CHECK(config.projector_in_features() == 64);
  const auto weights = io::CheckpointDir::open(case_dir("llava_layers"));
  const model::ClipVision vision(config.vision, weights, model::ClipVisionOptions::from(config));
  REQUIRE(vision.tokens_per_frame() == 17);
  REQUIRE(vision.feature_width() == 64);
  std::vector<float> pixels;
  for (const auto& f : ref["pixel_values"])
    for (const auto& ch : f)
      for (const auto& row : ch)
        for (const auto& v : row) pixels.push_back(v.get<float>());
  const Matrix features = vision.features(pixels, 2);
  CHECK(normwise_error(features, json_3d(ref["vision_features"])) < 1e-5);
  auto projector = model::Mlp2xGelu::load(weights, config);
  CHECK_FALSE(projector.linear_1().has_bias());
  CHECK(projector.linear_1().bias().size() == 0);
  const Matrix visual = projector.apply(features);
  CHECK(normwise_error(visual, json_3d(ref["projected"])) < 1e-5);

  model::Decoder<4, 8> decoder(config.text, weights);
  std::vector<model::SplicedSequence> seqs;
  for (int b = 0; b < 2; ++b)
    seqs.push_back(model::splice_visual_tokens<float>(ref["prompts"][b].get<std::vector<int>>(), {},
                                                      config.image_token_id, Matrix(visual.middleRows(17 * b, 17)),
                                                      decoder.embed_tokens()));
  const model::SplicedBatch batch = model::collate(seqs, decoder.embed_tokens(), 0);
  CHECK(batch.batch.attention_mask == json_flat_ints(ref["attention_mask"]));
  CHECK(normwise_error(decoder.logits(decoder.forward(batch.embeds, batch.batch, false)), json_3d(ref["logits"])) <
        1e-5);

  // A bias tensor the config says is not there is refused by name.
  model::TensorTable with_bias;
  for (const auto& name : weights.names())
    if (name.starts_with("multi_modal_projector.") || name.starts_with("model.multi_modal_projector.")) {
      const Vector v = weights.vector(name);
      with_bias.insert(name, weights.info(name).shape, std::vector<float>(v.data(), v.data() + v.size()));
    }
  with_bias.insert("multi_modal_projector.linear_1.bias", {32}, std::vector<float>(32, 0.f));
  REQUIRE_THROWS_WITH(model::Mlp2xGelu::load(with_bias, config),
                      Contains("multi_modal_projector.linear_1.bias") && Contains("multimodal_projector_bias"));
}

TEST_CASE("decoder config refuses each unsupported field by name", "[model][config][errors]") {
  const nlohmann::json llama = vidlora::test::load_fixture("model/llama/config.json");
  const nlohmann::json qwen2 = vidlora::test::load_fixture("model/qwen2/config.json");
  const auto refuses = [](nlohmann::json j, const std::string& key, const nlohmann::json& value,
                          const std::vector<std::string>& words) {
    j[key] = value;
    CAPTURE(key, value.dump());
    try {
      (void)model::DecoderConfig::from_json(j);
      FAIL("accepted");
    } catch (const Error& e) {
      for (const auto& w : words) CHECK_THAT(e.what(), Contains(w));
    }
  };
  refuses(llama, "hidden_act", "gelu", {"hidden_act", "gelu"});
  refuses(llama, "attention_dropout", 0.1, {"attention_dropout", "0.1"});
  refuses(llama, "quantization_config", {{"quant_method", "bitsandbytes"}}, {"quantization_config", "bitsandbytes"});
  refuses(llama, "partial_rotary_factor", 0.5, {"partial_rotary_factor", "0.5"});
  refuses(llama, "final_logit_softcapping", 30.0, {"final_logit_softcapping"});
  refuses(llama, "sliding_window", 16, {"sliding_window"});
  refuses(llama, "rope_parameters", {{"rope_type", "longrope"}, {"rope_theta", 1e4}}, {"rope_type", "longrope"});
  refuses(llama, "rope_parameters", {{"rope_type", "yarn"}, {"rope_theta", 1e4}}, {"yarn", "factor"});
  refuses(llama, "rope_parameters", {{"rope_type", "llama3"}, {"factor", 8.0}}, {"llama3", "low_freq_factor"});
  refuses(llama, "rope_parameters", {{"rope_type", "linear"}, {"factor", 2.0}, {"partial_rotary_factor", 0.25}},
          {"partial_rotary_factor"});
  refuses(llama, "head_dim", "eight", {"head_dim", "wrong type"});
  refuses(qwen2, "mlp_bias", true, {"mlp_bias", "qwen2"});
  refuses(qwen2, "attention_bias", true, {"attention_bias", "qwen2"});
  refuses(qwen2, "layer_types", {"full_attention", "chunked_attention"}, {"layer_types", "chunked_attention"});
  nlohmann::json mistral = llama;
  mistral["model_type"] = "mistral";
  refuses(mistral, "mlp_bias", true, {"mlp_bias", "mistral"});
}

TEST_CASE("sliding-window layers run only sequences that fit the window", "[model][config][errors]") {
  nlohmann::json j = vidlora::test::load_fixture("model/qwen2/config.json");
  j["layer_types"] = {"full_attention", "sliding_attention"};
  j["sliding_window"] = 6;
  const auto config = model::DecoderConfig::from_json(j);
  CHECK(config.sliding_window == 6);
  model::Decoder<4, 8> decoder(config, io::CheckpointDir::open(vidlora::test::model_dir("qwen2")));
  model::SequenceBatch fits;
  fits.seq_len = 6;
  const std::vector<int> six{1, 2, 3, 4, 5, 6}, seven{1, 2, 3, 4, 5, 6, 7};
  CHECK(decoder.forward(decoder.embed(six), fits, false).rows() == 6);
  model::SequenceBatch longer;
  longer.seq_len = 7;
  REQUIRE_THROWS_WITH(decoder.forward(decoder.embed(seven), longer, false), Contains("sliding_window 6"));
  // use_sliding_window without layer_types: layers from max_window_layers on slide.
  nlohmann::json k = vidlora::test::load_fixture("model/qwen2/config.json");
  k.erase("layer_types");
  k["use_sliding_window"] = true;
  k["sliding_window"] = 32;
  k["max_window_layers"] = 1;
  CHECK(model::DecoderConfig::from_json(k).sliding_window == 32);
  k["max_window_layers"] = 2;
  CHECK(model::DecoderConfig::from_json(k).sliding_window == 0);
}

TEST_CASE("llava config refuses unsupported fields by name and never leaks a json type error",
          "[model][config][llava][errors]") {
  const nlohmann::json base = vidlora::test::load_fixture("model/llava/config.json");
  const auto refuses = [&](const std::string& key, const nlohmann::json& value, const std::vector<std::string>& words) {
    nlohmann::json j = base;
    j[key] = value;
    CAPTURE(key, value.dump());
    try {
      (void)model::LlavaConfig::from_json(j);
      FAIL("accepted");
    } catch (const Error& e) {
      for (const auto& w : words) CHECK_THAT(e.what(), Contains(w));
    }
  };
  refuses("vision_feature_layer", "last", {"vision_feature_layer", "last"});
  refuses("vision_feature_layer", nlohmann::json::array(), {"vision_feature_layer"});
  refuses("vision_feature_layer", {-2, "x"}, {"vision_feature_layer"});
  refuses("vision_feature_layer", {-2, 7}, {"vision_feature_layer 7"});
  refuses("vision_feature_select_strategy", "cls_patch", {"vision_feature_select_strategy", "cls_patch"});
  refuses("projector_hidden_act", "silu", {"projector_hidden_act", "silu"});
  refuses("multimodal_projector_bias", "no", {"multimodal_projector_bias", "wrong type"});
  refuses("model_type", "llava_next", {"model_type", "llava_next"});
  nlohmann::json video = base;
  video["model_type"] = "llava_next_video";
  video["spatial_pool_mode"] = "max";
  REQUIRE_THROWS_WITH(model::LlavaConfig::from_json(video), Contains("spatial_pool_mode") && Contains("max"));
  video["spatial_pool_mode"] = "average";
  video["spatial_pool_stride"] = 3;
  REQUIRE_THROWS_WITH(model::LlavaConfig::from_json(video), Contains("spatial_pool_stride 3"));
  video["spatial_pool_stride"] = 2;
  video["vision_feature_select_strategy"] = "full";
  REQUIRE_THROWS_WITH(model::LlavaConfig::from_json(video), Contains("\"full\"") && Contains("spatial_pool_stride 2"));
  video["spatial_pool_stride"] = 1;  // transformers' pooler still views 577 tokens as a 24x24 grid and raises
  REQUIRE_THROWS_WITH(model::LlavaConfig::from_json(video), Contains("\"full\"") && Contains("spatial_pool_stride 1"));
  nlohmann::json text = base;
  text["text_config"]["mlp_bias"] = "yes";
  REQUIRE_THROWS_WITH(model::LlavaConfig::from_json(text), Contains("mlp_bias"));
}

TEST_CASE("config.json fields left out take transformers' class defaults, as the Hub's diff-style configs need",
          "[model][config][reference]") {
  // tools/reference/hf_config_defaults.py: configs that hold only the fields differing from the class defaults (how
  // transformers 4 saved llava-hf's LLaVA-NeXT-Video-7B), and what transformers resolves from each.
  const nlohmann::json ref = vidlora::test::load_fixture("model/hfconfig/defaults.json");
  int llava_cases = 0, decoder_cases = 0, vision_cases = 0;
  for (const auto& c : ref["cases"]) {
    const std::string name = c["name"].get<std::string>();
    CAPTURE(name);
    const nlohmann::json& config = c["config"];
    const std::string type = config["model_type"].get<std::string>();
    if (c.contains("text")) {
      const auto t = model::DecoderConfig::from_json(config);
      const auto& e = c["text"];
      CHECK(model::architecture_name(t.architecture) ==
            (e["model_type"] == "mistral" ? std::string("llama") : e["model_type"].get<std::string>()));
      CHECK(t.hidden_size == e["hidden_size"].get<int>());
      CHECK(t.intermediate_size == e["intermediate_size"].get<int>());
      CHECK(t.num_hidden_layers == e["num_hidden_layers"].get<int>());
      CHECK(t.num_attention_heads == e["num_attention_heads"].get<int>());
      CHECK(t.num_key_value_heads == e["num_key_value_heads"].get<int>());
      CHECK(t.head_dim == e["head_dim"].get<int>());
      CHECK(t.rms_norm_eps == e["rms_norm_eps"].get<double>());
      CHECK(t.rope_theta == e["rope_theta"].get<double>());
      CHECK(t.max_position_embeddings == e["max_position_embeddings"].get<int>());
      CHECK(t.vocab_size == e["vocab_size"].get<int>());
      CHECK(t.sliding_window == (e["sliding_window"].is_null() ? 0 : e["sliding_window"].get<int>()));
      if (c.contains("tied")) CHECK(t.tie_word_embeddings == c["tied"].get<bool>());
      ++decoder_cases;
    }
    if (c.contains("vision")) {
      const auto v = model::ClipVisionConfig::from_json(config);
      const auto& e = c["vision"];
      CHECK(v.hidden_size == e["hidden_size"].get<int>());
      CHECK(v.intermediate_size == e["intermediate_size"].get<int>());
      CHECK(v.num_hidden_layers == e["num_hidden_layers"].get<int>());
      CHECK(v.num_attention_heads == e["num_attention_heads"].get<int>());
      CHECK(v.image_size == e["image_size"].get<int>());
      CHECK(v.patch_size == e["patch_size"].get<int>());
      CHECK(v.num_channels == e["num_channels"].get<int>());
      CHECK(v.layer_norm_eps == e["layer_norm_eps"].get<double>());
      ++vision_cases;
    }
    if (c.contains("llava")) {
      const auto l = model::LlavaConfig::from_json(config);
      const auto& e = c["llava"];
      CHECK(l.image_token_id == e["image_token_index"].get<int>());
      CHECK(l.video_token_id == (e["video_token_index"].is_null() ? -1 : e["video_token_index"].get<int>()));
      CHECK(l.vision_feature_layer == e["vision_feature_layer"].get<int>());
      CHECK(l.drop_cls == (e["vision_feature_select_strategy"] == "default"));
      CHECK(l.spatial_pool_stride == (e["spatial_pool_stride"].is_null() ? 1 : e["spatial_pool_stride"].get<int>()));
      CHECK(l.projector_bias == e["multimodal_projector_bias"].get<bool>());
      ++llava_cases;
    }
  }
  CHECK(decoder_cases == 12);
  CHECK(vision_cases == 7);
  CHECK(llava_cases == 5);
  // LLaVA-OneVision's defaults are another model's (a Qwen2 decoder, a SigLIP tower): not filled in as LLaVA's.
  REQUIRE_THROWS_WITH(model::DecoderConfig::from_json({{"model_type", "llava_onevision"}}),
                      Contains("llava_onevision") && Contains("text_config"));
  REQUIRE_THROWS_WITH(model::ClipVisionConfig::from_json({{"model_type", "llava_onevision"}}),
                      Contains("llava_onevision") && Contains("vision_config"));
  // The seed's model: LLaVA-NeXT-Video-7B's shapes from a config that names none of the decoder's.
  const auto seven_b = model::LlavaConfig::from_json(ref["cases"][0]["config"]);
  CHECK(seven_b.text.hidden_size == 4096);
  CHECK(seven_b.text.num_hidden_layers == 32);
  CHECK(seven_b.vision.num_patches() == 576);
}

TEST_CASE("a tied config uses the checkpoint's lm_head when it holds one, as transformers does",
          "[model][config][decoder]") {
  // transformers 5 does not tie a head the checkpoint gives (it warns when it differs from the embeddings); without
  // one, a tied config shares the embeddings and an untied one is an error naming the tensor.
  model::DecoderConfig untied = model::llama_config(16, 32, 1, 2, 2, 24);
  const model::TensorTable with_head = model::random_decoder_weights(untied, 5);
  model::DecoderConfig tied = untied;
  tied.tie_word_embeddings = true;
  const model::Decoder<2, 4> given(tied, with_head);
  const Matrix file_head = model::load_matrix<float>(with_head, "lm_head.weight", 24, 16);
  CHECK_FALSE(given.config().tie_word_embeddings);
  CHECK(given.head_weight() == file_head);
  CHECK_FALSE(given.head_weight() == given.embed_tokens());
  const model::TensorTable without_head = model::random_decoder_weights(tied, 5);
  REQUIRE_FALSE(without_head.contains("lm_head.weight"));
  const model::Decoder<2, 4> shared(tied, without_head);
  CHECK(shared.head_weight() == shared.embed_tokens());
  REQUIRE_THROWS_WITH((model::Decoder<2, 4>(untied, without_head)), Contains("lm_head.weight"));
}
