// Invariance tests of the decoder's modes: gradient checkpointing vs keeping activations, KV-cache
// decoding vs full recomputation (and vs transformers' generate), NF4 base vs its dequantized
// weights; and the errors a bad checkpoint gives.

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include <vidlora/io.hpp>
#include <vidlora/loss.hpp>
#include <vidlora/model.hpp>
#include <vidlora/quant.hpp>

#include "model_fixtures.hpp"

using namespace vidlora;
using vidlora::test::json_3d;
using vidlora::test::json_flat_ints;
using vidlora::test::model_dir;
using vidlora::test::model_reference;
using vidlora::test::normwise_error;

namespace {

const std::vector<std::string> kAllSevenProjections{"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                    "gate_proj", "up_proj", "down_proj"};

template <class D>
void randomize_lora_b(D& decoder, std::uint64_t seed) {
  std::uint64_t stream = 0;
  decoder.for_each_lora([&](const std::string&, auto& lin) {
    lin.lora_B() = model::random_normal(lin.lora_B().rows(), lin.lora_B().cols(), 0.2, seed, stream++);
  });
}

// Every tensor of a checkpoint, copied into memory (so single tensors can be replaced).
model::TensorTable copy_of(const io::CheckpointDir& dir) {
  model::TensorTable map;
  for (const auto& name : dir.names()) {
    const Vector v = dir.vector(name);
    map.insert(name, dir.info(name).shape, std::vector<float>(v.data(), v.data() + v.size()));
  }
  return map;
}

model::SequenceBatch padded_batch(Eigen::Index batch, Eigen::Index t, Eigen::Index pad_last) {
  model::SequenceBatch b;
  b.batch = batch;
  b.seq_len = t;
  b.attention_mask.assign(static_cast<std::size_t>(batch * t), 1);
  for (Eigen::Index i = t - pad_last; i < t; ++i) b.attention_mask[static_cast<std::size_t>((batch - 1) * t + i)] = 0;
  return b;
}

std::vector<int> random_ids(std::size_t n, int vocab, std::uint64_t seed) {
  CounterRng rng(seed);
  std::vector<int> ids(n);
  for (auto& id : ids) id = static_cast<int>(rng.next_u32() % static_cast<std::uint32_t>(vocab));
  return ids;
}

}  // namespace

TEST_CASE("gradient checkpointing gives the same loss and gradients with less activation memory",
          "[model][decoder][checkpointing]") {
  const model::DecoderConfig config = model::llama_config(64, 128, 8, 4, 2, 128);
  const model::TensorTable weights = model::random_decoder_weights(config, 5);
  model::DecoderOptions options;
  options.target_modules = kAllSevenProjections;
  options.lora.dropout = 0.1;  // recomputation must replay the same dropout masks
  options.lora.seed = 9;
  model::Decoder<4, 8> plain(config, weights, options);
  options.gradient_checkpointing = true;
  model::Decoder<4, 8> checkpointed(config, weights, options);
  randomize_lora_b(plain, 3);
  randomize_lora_b(checkpointed, 3);

  const model::SequenceBatch batch = padded_batch(2, 24, 5);
  const std::vector<int> ids = random_ids(48, 128, 1);
  std::vector<int> labels = ids;
  for (int i = 0; i < 4; ++i) labels[static_cast<std::size_t>(i)] = -100;
  for (Eigen::Index i = 0; i < batch.tokens(); ++i)
    if (!batch.attention_mask[static_cast<std::size_t>(i)]) labels[static_cast<std::size_t>(i)] = -100;
  CrossEntropyOptions ce;
  ce.label_smoothing = 0.1;

  for (int step = 0; step < 2; ++step) {  // two steps: dropout steps advance identically
    plain.zero_grad();
    checkpointed.zero_grad();
    const auto a = plain.loss_and_backward(plain.embed(ids), batch, labels, ce);
    const auto b = checkpointed.loss_and_backward(checkpointed.embed(ids), batch, labels, ce);
    CHECK(b.loss == Approx(a.loss).epsilon(1e-12));
    CHECK(normwise_error(b.grad_embeds, a.grad_embeds) < 1e-6);
    std::vector<Matrix> grads;
    plain.for_each_lora([&](const std::string&, auto& lin) {
      grads.push_back(lin.grad_A());
      grads.push_back(lin.grad_B());
    });
    std::size_t k = 0;
    checkpointed.for_each_lora([&](const std::string& path, auto& lin) {
      CAPTURE(path);
      CHECK(normwise_error(lin.grad_A(), grads[k++]) < 1e-6);
      CHECK(normwise_error(lin.grad_B(), grads[k++]) < 1e-6);
    });
  }
  const auto& full = plain.activation_stats();
  const auto& ckpt = checkpointed.activation_stats();
  CAPTURE(full.after_forward, full.peak, ckpt.after_forward, ckpt.peak);
  CHECK(ckpt.after_forward * 4 < full.after_forward);
  CHECK(ckpt.peak * 3 < full.peak);
}

TEST_CASE("greedy decoding with the kv cache equals transformers generate and decoding without cache",
          "[model][decoder][generate][reference]") {
  const auto ref = model_reference("llama");
  const auto config = model::DecoderConfig::from_file(model_dir("llama") + "/config.json");
  model::Decoder<4, 8> decoder(config, io::CheckpointDir::open(model_dir("llama")));
  const auto prompt = ref["generate"]["prompt"].get<std::vector<int>>();
  const auto expected = ref["generate"]["tokens"].get<std::vector<int>>();
  CHECK(decoder.generate_greedy(prompt, 8, -1, true) == expected);
  CHECK(decoder.generate_greedy(prompt, 8, -1, false) == expected);
  // eos stops decoding right after it is produced
  const auto stopped = decoder.generate_greedy(prompt, 8, expected[2], true);
  CHECK(stopped == std::vector<int>(expected.begin(), expected.begin() + 3));
}

TEST_CASE("kv cache forward in pieces equals the full forward for qwen3 with LoRA", "[model][decoder][generate]") {
  const auto config = model::DecoderConfig::from_file(model_dir("qwen3") + "/config.json");
  model::DecoderOptions options;
  options.target_modules = kAllSevenProjections;
  model::Decoder<4, 8> decoder(config, io::CheckpointDir::open(model_dir("qwen3")), options);
  decoder.load_adapter(io::CheckpointDir::open(model_dir("qwen3") + "/adapter/adapter_model.safetensors"));
  const std::vector<int> ids{3, 17, 42, 5, 9, 33, 61, 2, 8};
  model::SequenceBatch one;
  one.seq_len = static_cast<Eigen::Index>(ids.size());
  const Matrix full = decoder.logits(decoder.forward(decoder.embed(ids), one, false));
  auto cache = decoder.make_cache();
  Matrix pieces(full.rows(), full.cols());
  pieces.topRows(5) = decoder.logits(decoder.forward_cached(decoder.embed(std::span(ids).first(5)), cache));
  for (std::size_t i = 5; i < ids.size(); ++i)
    pieces.row(static_cast<Eigen::Index>(i)) =
        decoder.logits(decoder.forward_cached(decoder.embed(std::span(ids).subspan(i, 1)), cache));
  CHECK(cache.length == static_cast<Eigen::Index>(ids.size()));
  CHECK(normwise_error(pieces, full) < 1e-5);
  // and the training forward matches the reference logits of sequence 0 of the fixture
  const auto ref = model_reference("qwen3");
  const auto fixture_ids = json_flat_ints(ref["input_ids"]);
  auto cache2 = decoder.make_cache();
  const Matrix cached = decoder.logits(decoder.forward_cached(decoder.embed(std::span(fixture_ids).first(10)), cache2));
  CHECK(normwise_error(cached, Matrix(json_3d(ref["logits"]).topRows(10))) < 1e-5);
}

TEST_CASE("nf4 base forward and backward equal the dense model on the dequantized weights", "[model][decoder][nf4]") {
  const auto ref = model_reference("llama");
  const auto config = model::DecoderConfig::from_file(model_dir("llama") + "/config.json");
  const auto dir = io::CheckpointDir::open(model_dir("llama"));
  const auto adapter = io::CheckpointDir::open(model_dir("llama") + "/adapter/adapter_model.safetensors");
  model::DecoderOptions options;
  options.target_modules = kAllSevenProjections;
  model::Decoder<4, 8, NF4Weight> nf4(config, dir, options);
  nf4.load_adapter(adapter);

  model::TensorTable dequantized = copy_of(dir);
  for (int l = 0; l < config.num_hidden_layers; ++l)
    for (const auto module : model::kDecoderModules) {
      const std::string key = nf4.module_path(l, module) + ".weight";
      dequantized.insert(key, nf4.slot(l, module).base().to_dense());
    }
  model::Decoder<4, 8> dense(config, dequantized, options);
  dense.load_adapter(adapter);

  model::SequenceBatch batch;
  batch.batch = 2;
  batch.seq_len = 10;
  batch.attention_mask = json_flat_ints(ref["attention_mask"]);
  const auto ids = json_flat_ints(ref["input_ids"]);
  const auto labels = json_flat_ints(ref["labels"]);
  const Matrix a = nf4.logits(nf4.forward(nf4.embed(ids), batch, false));
  const Matrix b = dense.logits(dense.forward(dense.embed(ids), batch, false));
  CHECK(normwise_error(a, b) < 1e-6);
  CHECK(normwise_error(a, json_3d(ref["logits"])) > 1e-4);  // quantization does change the model

  const auto ga = nf4.loss_and_backward(nf4.embed(ids), batch, labels);
  const auto gb = dense.loss_and_backward(dense.embed(ids), batch, labels);
  CHECK(ga.loss == Approx(gb.loss).epsilon(1e-6));
  std::vector<Matrix> grads;
  dense.for_each_lora([&](const std::string&, auto& lin) { grads.push_back(lin.grad_A()); });
  std::size_t k = 0;
  nf4.for_each_lora([&](const std::string&, auto& lin) { CHECK(normwise_error(lin.grad_A(), grads[k++]) < 1e-5); });

  CAPTURE(nf4.linear_weight_bytes(), dense.linear_weight_bytes());
  CHECK(nf4.linear_weight_bytes() * 10 < dense.linear_weight_bytes() * 3);  // at most 0.3x
}

TEST_CASE("bf16 base forward and backward equal the dense model on bf16-rounded weights", "[model][decoder][bf16]") {
  const model::DecoderConfig config = model::llama_config(32, 600, 2, 4, 2, 64);  // 600 rows: more than one decode tile
  const model::TensorTable weights = model::random_decoder_weights(config, 2);
  model::DecoderOptions options;
  options.target_modules = kAllSevenProjections;
  model::Decoder<4, 8, model::Bf16Weight> bf16(config, weights, options);
  model::TensorTable rounded = weights;
  for (int l = 0; l < config.num_hidden_layers; ++l)
    for (const auto module : model::kDecoderModules) {
      Matrix w = bf16.slot(l, module).base().to_dense();
      rounded.insert(bf16.module_path(l, module) + ".weight", w);
      const Matrix original = model::load_matrix(weights, bf16.module_path(l, module) + ".weight", w.rows(), w.cols());
      CHECK(w.unaryExpr([](float v) { return io::round_to_bf16(v); }).isApprox(w, 0.0f));
      CHECK(normwise_error(w, original) < 1e-2);  // bf16 keeps 8 significant bits
    }
  model::Decoder<4, 8> dense(config, rounded, options);
  randomize_lora_b(bf16, 6);
  randomize_lora_b(dense, 6);
  const model::SequenceBatch batch = padded_batch(2, 7, 2);
  const std::vector<int> ids = random_ids(14, 64, 3);
  const Matrix a = bf16.logits(bf16.forward(bf16.embed(ids), batch, false));
  const Matrix b = dense.logits(dense.forward(dense.embed(ids), batch, false));
  CHECK(normwise_error(a, b) < 1e-5);
  const auto ga = bf16.loss_and_backward(bf16.embed(ids), batch, ids);
  const auto gb = dense.loss_and_backward(dense.embed(ids), batch, ids);
  CHECK(ga.loss == Approx(gb.loss).epsilon(1e-5));
  CHECK(normwise_error(ga.grad_embeds, gb.grad_embeds) < 1e-5);
  CHECK(bf16.linear_weight_bytes() * 2 == dense.linear_weight_bytes());
}

TEST_CASE("target modules select which linear slots carry LoRA", "[model][decoder][lora]") {
  const model::DecoderConfig config = model::llama_config(32, 64, 2, 4, 2, 64);
  const model::TensorTable weights = model::random_decoder_weights(config, 1);
  model::DecoderOptions options;
  options.target_modules = {"q_proj", "v_proj"};
  model::Decoder<4, 8> decoder(config, weights, options);
  for (int l = 0; l < 2; ++l) {
    CHECK(decoder.slot(l, "q_proj").has_lora());
    CHECK(decoder.slot(l, "v_proj").has_lora());
    CHECK_FALSE(decoder.slot(l, "k_proj").has_lora());
    CHECK_FALSE(decoder.slot(l, "down_proj").has_lora());
  }
  CHECK(decoder.trainable_parameters() == 2 * (4 * (32 + 32) + 4 * (32 + 16)));
  options.target_modules = {"lm_head"};
  REQUIRE_THROWS_WITH((model::Decoder<4, 8>(config, weights, options)), Catch::Contains("lm_head"));
}

TEST_CASE("a checkpoint missing a tensor or with a wrong shape names the key and both shapes",
          "[model][decoder][errors]") {
  const model::DecoderConfig config = model::llama_config(32, 64, 2, 4, 2, 64);
  model::TensorTable missing = model::random_decoder_weights(config, 1);
  missing.erase("model.layers.1.mlp.up_proj.weight");
  REQUIRE_THROWS_WITH((model::Decoder<4, 8>(config, missing)),
                      Catch::Contains("model.layers.1.mlp.up_proj.weight") && Catch::Contains("missing"));
  model::TensorTable wrong = model::random_decoder_weights(config, 1);
  wrong.insert("model.layers.0.self_attn.k_proj.weight", Matrix::Zero(32, 32));
  REQUIRE_THROWS_WITH((model::Decoder<4, 8>(config, wrong)),
                      Catch::Contains("model.layers.0.self_attn.k_proj.weight") && Catch::Contains("[32, 32]") &&
                          Catch::Contains("[16, 32]"));
  const model::TensorTable ok = model::random_decoder_weights(config, 1);
  model::DecoderOptions options;
  options.target_modules = {"q_proj"};
  model::Decoder<4, 8> decoder(config, ok, options);
  model::TensorTable adapter;
  adapter.insert("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", Matrix::Zero(8, 32));
  REQUIRE_THROWS_WITH(decoder.load_adapter(adapter),
                      Catch::Contains("lora_A") && Catch::Contains("[8, 32]") && Catch::Contains("[4, 32]"));
}
