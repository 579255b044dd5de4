// Decoder forward and backward against transformers + PEFT (tools/reference/tiny_models.py).

#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <vidlora/io.hpp>
#include <vidlora/loss.hpp>
#include <vidlora/model.hpp>

#include "model_fixtures.hpp"

using namespace vidlora;
using vidlora::test::json_3d;
using vidlora::test::json_flat_ints;
using vidlora::test::model_dir;
using vidlora::test::model_reference;
using vidlora::test::normwise_error;

namespace {

using TinyDecoder = model::Decoder<4, 8>;  // PEFT r=4, alpha=8 in the fixtures

const std::vector<std::string> kAllSeven{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};

struct Case {
  nlohmann::json ref;
  model::SequenceBatch batch;
  std::vector<int> ids, labels;
};

Case load_case(const std::string& name) {
  Case c;
  c.ref = model_reference(name);
  c.ids = json_flat_ints(c.ref["input_ids"]);
  c.labels = json_flat_ints(c.ref["labels"]);
  c.batch.batch = static_cast<Eigen::Index>(c.ref["input_ids"].size());
  c.batch.seq_len = static_cast<Eigen::Index>(c.ref["input_ids"][0].size());
  c.batch.attention_mask = json_flat_ints(c.ref["attention_mask"]);
  return c;
}

TinyDecoder load_decoder(const std::string& name, bool with_lora) {
  const auto config = model::DecoderConfig::from_file(model_dir(name) + "/config.json");
  const auto weights = io::CheckpointDir::open(model_dir(name));
  model::DecoderOptions options;
  if (with_lora) options.target_modules = kAllSeven;
  TinyDecoder decoder(config, weights, options);
  if (with_lora) decoder.load_adapter(io::CheckpointDir::open(model_dir(name) + "/adapter/adapter_model.safetensors"));
  return decoder;
}

void check_base_logits_and_loss(const std::string& name) {
  const Case c = load_case(name);
  TinyDecoder decoder = load_decoder(name, false);
  const Matrix logits = decoder.logits(decoder.forward(decoder.embed(c.ids), c.batch, false));
  const Matrix expected = json_3d(c.ref["base_logits"]);
  CAPTURE(name);
  CHECK(normwise_error(logits, expected) < 1e-5);
  const auto targets = model::next_token_targets(c.labels, c.batch);
  CrossEntropyOptions ce;
  ce.label_smoothing = 0.1;
  const double loss = loss::cross_entropy(logits, targets, ce).loss;
  CHECK(std::abs(loss - c.ref["base_loss"].get<double>()) < 1e-5 * c.ref["base_loss"].get<double>());
}

void check_lora_loss_and_grads(const std::string& name, bool checkpointing) {
  const Case c = load_case(name);
  TinyDecoder decoder = load_decoder(name, true);
  decoder.set_gradient_checkpointing(checkpointing);
  CAPTURE(name, checkpointing);
  const Matrix logits = decoder.logits(decoder.forward(decoder.embed(c.ids), c.batch, false));
  CHECK(normwise_error(logits, json_3d(c.ref["logits"])) < 1e-5);

  CrossEntropyOptions ce;
  ce.label_smoothing = 0.1;
  decoder.zero_grad();
  const auto result = decoder.loss_and_backward(decoder.embed(c.ids), c.batch, c.labels, ce);
  const double ref_loss = c.ref["loss"].get<double>();
  CHECK(std::abs(result.loss - ref_loss) < 1e-5 * ref_loss);

  int checked = 0;
  decoder.for_each_lora([&](const std::string& path, auto& lin) {
    const auto& grads = c.ref["lora_grads"];
    const Matrix ga = vidlora::test::json_matrix(grads.at(path + ".lora_A.weight"));
    const Matrix gb = vidlora::test::json_matrix(grads.at(path + ".lora_B.weight"));
    CAPTURE(path);
    CHECK(normwise_error(lin.grad_A(), ga) < 1e-4);
    CHECK(normwise_error(lin.grad_B(), gb) < 1e-4);
    checked += 2;
  });
  CHECK(checked == static_cast<int>(c.ref["lora_grads"].size()));
  CHECK(checked == 2 * 7 * decoder.config().num_hidden_layers);
}

}  // namespace

TEST_CASE("decoder config parses llama qwen2 and qwen3 config.json", "[model][config]") {
  const auto llama = model::DecoderConfig::from_file(model_dir("llama") + "/config.json");
  CHECK(llama.architecture == model::Architecture::Llama);
  CHECK(llama.head_dim == 8);
  CHECK(llama.num_key_value_heads == 2);
  CHECK(llama.rope_theta == 10000.0);
  CHECK_FALSE(llama.qkv_bias());
  const auto qwen2 = model::DecoderConfig::from_file(model_dir("qwen2") + "/config.json");
  CHECK(qwen2.architecture == model::Architecture::Qwen2);
  CHECK(qwen2.qkv_bias());
  CHECK_FALSE(qwen2.o_bias());
  CHECK(qwen2.tie_word_embeddings);
  CHECK(qwen2.rope_theta == 1e6);
  const auto qwen3 = model::DecoderConfig::from_file(model_dir("qwen3") + "/config.json");
  CHECK(qwen3.qk_norm());
  CHECK(qwen3.head_dim == 16);  // explicit, not hidden / heads = 8
  CHECK(qwen3.rms_norm_eps == 1e-5);
  const auto llava = model::DecoderConfig::from_file(model_dir("llava") + "/config.json");
  CHECK(llava.architecture == model::Architecture::Llama);
  CHECK(llava.hidden_size == 32);
}

TEST_CASE("decoder config rejects an unknown architecture by name", "[model][config][errors]") {
  nlohmann::json j = {{"model_type", "mamba"}, {"hidden_size", 8}};
  REQUIRE_THROWS_AS(model::DecoderConfig::from_json(j), Error);
  REQUIRE_THROWS_WITH(model::DecoderConfig::from_json(j), Catch::Contains("mamba"));
  nlohmann::json scaled = vidlora::test::load_fixture("model/llama/config.json");
  scaled["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 10000.0}};
  REQUIRE_THROWS_WITH(model::DecoderConfig::from_json(scaled), Catch::Contains("yarn"));
}

TEST_CASE("decoder logits and loss match transformers for llama", "[model][decoder][reference]") {
  check_base_logits_and_loss("llama");
}
TEST_CASE("decoder logits and loss match transformers for qwen2 with q k v bias and tied head",
          "[model][decoder][reference]") {
  check_base_logits_and_loss("qwen2");
}
TEST_CASE("decoder logits and loss match transformers for qwen3 with q_norm and k_norm",
          "[model][decoder][reference]") {
  check_base_logits_and_loss("qwen3");
}

TEST_CASE("decoder LoRA logits loss and gradients match PEFT for llama", "[model][decoder][lora][reference]") {
  check_lora_loss_and_grads("llama", false);
}
TEST_CASE("decoder LoRA logits loss and gradients match PEFT for qwen2", "[model][decoder][lora][reference]") {
  check_lora_loss_and_grads("qwen2", false);
}
TEST_CASE("decoder LoRA logits loss and gradients match PEFT for qwen3", "[model][decoder][lora][reference]") {
  check_lora_loss_and_grads("qwen3", false);
}
