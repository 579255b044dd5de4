// The vision side against transformers + PEFT: CLIP features, pooling, splicing, and a full LLaVA
// step (vision → Mlp2xGelu projector → spliced prompt → LoRA decoder → loss → gradients).

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <vidlora/io.hpp>
#include <vidlora/loss.hpp>
#include <vidlora/model.hpp>
#include <vidlora/model/frame_encoder.hpp>

#include "model_fixtures.hpp"

using namespace vidlora;
using vidlora::test::json_3d;
using vidlora::test::json_flat_ints;
using vidlora::test::model_dir;
using vidlora::test::model_reference;
using vidlora::test::normwise_error;

namespace {

std::vector<float> flat_pixels(const nlohmann::json& a) {
  std::vector<float> out;
  for (const auto& f : a)
    for (const auto& c : f)
      for (const auto& row : c)
        for (const auto& v : row) out.push_back(v.get<float>());
  return out;
}

struct Llava {
  model::LlavaConfig config = model::LlavaConfig::from_file(model_dir("llava") + "/config.json");
  io::CheckpointDir weights = io::CheckpointDir::open(model_dir("llava"));
  nlohmann::json ref = model_reference("llava");
};

}  // namespace

TEST_CASE("llava config parses the vision tower and the projector glue", "[model][config][llava]") {
  const Llava m;
  CHECK(m.config.image_token_id == 60);
  CHECK(m.config.vision.num_patches() == 16);
  CHECK(m.config.vision.num_hidden_layers == 3);
  CHECK(m.config.vision_feature_layer == -2);
  CHECK(m.config.drop_cls);
  CHECK(m.config.text.architecture == model::Architecture::Llama);
}

TEST_CASE("clip vision features equal transformers hidden_states -2 without CLS", "[model][vision][reference]") {
  const Llava m;
  const model::ClipVision vision(m.config.vision, m.weights);
  const Matrix features = vision.features(flat_pixels(m.ref["pixel_values"]), 2);
  REQUIRE(features.rows() == 2 * 16);
  CHECK(normwise_error(features, json_3d(m.ref["vision_features"])) < 1e-5);
}

TEST_CASE("spatial average pooling of the token grid equals torch avg_pool2d", "[model][vision][reference]") {
  const Llava m;
  const Matrix features = json_3d(m.ref["vision_features"]);  // 2 frames of 4x4 tokens
  const Matrix pooled = model::spatial_average_pool(features, 4, 2);
  REQUIRE(pooled.rows() == 2 * 4);
  CHECK(normwise_error(pooled, json_3d(m.ref["pooled_features"])) < 1e-6);
  // 24x24 -> 12x12 (LLaVA-NeXT-Video): 576 tokens per frame become 144.
  CHECK(model::spatial_average_pool(Matrix::Ones(2 * 576, 3), 24, 2).rows() == 2 * 144);
  REQUIRE_THROWS_AS(model::spatial_average_pool(Matrix::Ones(10, 3), 4, 2), Error);
}

TEST_CASE("a FrameEncoder gives its tower's features and names the tower's precision", "[model][vision]") {
  // What the programs' feature code sees of a tower: its config, its features, and its variant, which the feature
  // caches add to their ids (empty for the fp32 tower; a GPU tower's "bf16" / "fp16" / "tf32").
  const Llava m;
  const auto vision = std::make_shared<const model::ClipVision>(m.config.vision, m.weights);
  const std::vector<float> pixels = flat_pixels(m.ref["pixel_values"]);
  const model::FrameEncoder plain = model::FrameEncoder::borrowing(*vision);
  const model::FrameEncoder named(vision, "bf16");
  CHECK(plain.variant().empty());
  CHECK(named.variant() == "bf16");
  CHECK(&named.config() == &vision->config());
  const Matrix want = vision->features(pixels, 2);
  CHECK(plain.features(pixels, 2) == want);
  CHECK(named.features(pixels, 2) == want);
}

TEST_CASE("splicing expands one placeholder and masks prompt and visual labels", "[model][splice]") {
  Matrix table(8, 2);
  for (int i = 0; i < 8; ++i) table.row(i) << static_cast<float>(i), static_cast<float>(-i);
  Matrix visual(3, 2);
  visual << 100, 101, 200, 201, 300, 301;
  const std::vector<int> prompt{1, 7, 2}, answer{4, 5};
  const auto s = model::splice_visual_tokens<float>(prompt, answer, 7, visual, table);
  REQUIRE(s.embeds.rows() == 7);
  CHECK(s.visual_positions == std::vector<Eigen::Index>{1, 2, 3});
  CHECK(s.labels == std::vector<int>{-100, -100, -100, -100, -100, 4, 5});
  CHECK(s.embeds(2, 0) == 200);
  CHECK(s.embeds(4, 0) == 2);
  CHECK(s.embeds(6, 1) == -5);
  // Already-expanded placeholders are replaced one for one.
  const std::vector<int> expanded{1, 7, 7, 7};
  CHECK(model::splice_visual_tokens<float>(expanded, answer, 7, visual, table).embeds.rows() == 6);
  // Collate right-pads with the pad embedding, mask 0 and label -100.
  const auto b =
      model::collate<float>({s, model::splice_visual_tokens<float>(expanded, answer, 7, visual, table)}, table, 0);
  CHECK(b.batch.seq_len == 7);
  CHECK(b.batch.attention_mask[13] == 0);
  CHECK(b.labels[13] == -100);
  CHECK(b.visual_rows == std::vector<Eigen::Index>{1, 2, 3, 8, 9, 10});
}

TEST_CASE("splicing rejects a prompt without the video placeholder", "[model][splice][errors]") {
  const Matrix table = Matrix::Zero(8, 2), visual = Matrix::Zero(3, 2);
  const std::vector<int> prompt{1, 2, 3}, answer{4};
  REQUIRE_THROWS_WITH(model::splice_visual_tokens<float>(prompt, answer, 7, visual, table),
                      Catch::Contains("no video/image placeholder"));
  const std::vector<int> two{1, 7, 7};
  REQUIRE_THROWS_WITH(model::splice_visual_tokens<float>(two, answer, 7, visual, table),
                      Catch::Contains("2 placeholder"));
}

TEST_CASE("splice_layout is collate(splice_visual_tokens) without the visual values, bit for bit once assembled",
          "[model][splice]") {
  // What the CUDA decoder step assembles on the device: the text rows from the host, the visual rows from the
  // projector's output where it already is. Sequences of different lengths (padding rows), a prompt with one
  // placeholder and one expanded placeholder per visual token, different visual counts per sequence.
  Matrix table(12, 3);
  for (int i = 0; i < 12; ++i) table.row(i) << static_cast<float>(i) + 0.25f, static_cast<float>(-i), 1.0f / (i + 1);
  const std::vector<int> prompt{1, 9, 2, 3};
  const std::vector<std::vector<int>> answers{{4, 5}, {6, 7, 8, 10, 11}, {}};
  const std::vector<Eigen::Index> counts{3, 2, 4};
  Matrix visual(9, 3);
  for (Eigen::Index i = 0; i < visual.size(); ++i) visual.data()[i] = 1000.0f + static_cast<float>(i) / 7.0f;
  for (const int pad : {0, 11}) {
    INFO("pad id " << pad);
    std::vector<model::SplicedSequence> seqs;
    Eigen::Index r = 0;
    for (std::size_t b = 0; b < answers.size(); ++b) {
      seqs.push_back(
          model::splice_visual_tokens<float>(prompt, answers[b], 9, Matrix(visual.middleRows(r, counts[b])), table));
      r += counts[b];
    }
    const model::SplicedBatch want = model::collate(seqs, table, pad);
    const model::SplicedLayout got = model::splice_layout<float>(prompt, answers, 9, counts, table, pad);
    CHECK(got.batch.batch == want.batch.batch);
    CHECK(got.batch.seq_len == want.batch.seq_len);
    CHECK(got.batch.attention_mask == want.batch.attention_mask);
    CHECK(got.labels == want.labels);
    CHECK(got.visual_rows == want.visual_rows);
    REQUIRE(static_cast<Eigen::Index>(got.text_rows.size() + got.visual_rows.size()) == want.batch.tokens());
    CHECK(std::is_sorted(got.text_rows.begin(), got.text_rows.end()));
    const Matrix assembled = model::assemble_embeds(got, visual);
    REQUIRE(assembled.rows() == want.embeds.rows());
    CHECK(std::memcmp(assembled.data(), want.embeds.data(),
                      sizeof(float) * static_cast<std::size_t>(assembled.size())) == 0);
  }
  // Expanded placeholders, one sequence.
  const std::vector<int> expanded{1, 9, 9, 9, 2};
  const model::SplicedLayout one =
      model::splice_layout<float>(expanded, std::vector<std::vector<int>>{{4}}, 9, std::vector<Eigen::Index>{3}, table);
  CHECK(one.visual_rows == std::vector<Eigen::Index>{1, 2, 3});
  CHECK(one.text_rows == std::vector<Eigen::Index>{0, 4, 5});
  CHECK(one.labels == std::vector<int>{-100, -100, -100, -100, -100, 4});
  // The same errors as splice_visual_tokens and collate, naming splice_layout.
  const std::vector<std::vector<int>> a1{{4}};
  const std::vector<Eigen::Index> c3{3};
  CHECK_THROWS_WITH(model::splice_layout<float>(std::vector<int>{1, 2}, a1, 9, c3, table),
                    Catch::Contains("splice_layout") && Catch::Contains("no video/image placeholder"));
  CHECK_THROWS_WITH(model::splice_layout<float>(std::vector<int>{1, 9, 9}, a1, 9, c3, table),
                    Catch::Contains("2 placeholder"));
  CHECK_THROWS_WITH(model::splice_layout<float>(prompt, std::vector<std::vector<int>>{{12}}, 9, c3, table),
                    Catch::Contains("token id 12 is outside [0, 12)"));
  CHECK_THROWS_WITH(model::splice_layout<float>(prompt, a1, 9, std::vector<Eigen::Index>{3, 1}, table),
                    Catch::Contains("1 answers for 2 visual token counts"));
  CHECK_THROWS_WITH(model::splice_layout<float>(prompt, a1, 9, c3, table, 12), Catch::Contains("pad id 12"));
  CHECK_THROWS_WITH(model::assemble_embeds(one, Matrix(Matrix::Zero(2, 3))), Catch::Contains("assemble_embeds"));
  // The runs of consecutive rows the device copies take, one copy each.
  std::vector<std::pair<std::size_t, std::size_t>> runs;
  const std::vector<Eigen::Index> rows{3, 4, 5, 9, 10, 2};
  model::for_each_row_run(rows, [&](std::size_t i, std::size_t j) { runs.emplace_back(i, j); });
  CHECK(runs == std::vector<std::pair<std::size_t, std::size_t>>{{0, 3}, {3, 5}, {5, 6}});
  runs.clear();
  model::for_each_row_run(std::vector<Eigen::Index>{}, [&](std::size_t i, std::size_t j) { runs.emplace_back(i, j); });
  CHECK(runs.empty());
}

TEST_CASE("llava logits loss LoRA and projector gradients match PEFT", "[model][llava][lora][reference]") {
  const Llava m;
  const model::ClipVision vision(m.config.vision, m.weights);
  auto projector = model::Mlp2xGelu::load(m.weights, m.config.vision.hidden_size, m.config.text.hidden_size);
  model::DecoderOptions options;
  options.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  model::Decoder<4, 8> decoder(m.config.text, m.weights, options);
  decoder.load_adapter(io::CheckpointDir::open(model_dir("llava") + "/adapter/adapter_model.safetensors"));

  const Matrix features = vision.features(flat_pixels(m.ref["pixel_values"]), 2);
  const Matrix visual = projector.forward(features);  // [32, hidden]
  std::vector<model::SplicedSequence> seqs;
  for (int b = 0; b < 2; ++b) {
    const auto prompt = m.ref["prompts"][b].get<std::vector<int>>();
    const auto answer = m.ref["answers"][b].get<std::vector<int>>();
    const Matrix frame_tokens = visual.middleRows(16 * b, 16);
    seqs.push_back(model::splice_visual_tokens<float>(prompt, answer, m.config.image_token_id, frame_tokens,
                                                      decoder.embed_tokens()));
  }
  const model::SplicedBatch batch = model::collate(seqs, decoder.embed_tokens(), 0);
  CHECK(batch.labels == json_flat_ints(m.ref["labels"]));
  CHECK(batch.batch.attention_mask == json_flat_ints(m.ref["attention_mask"]));

  const Matrix logits = decoder.logits(decoder.forward(batch.embeds, batch.batch, false));
  CHECK(normwise_error(logits, json_3d(m.ref["logits"])) < 1e-5);

  CrossEntropyOptions ce;
  ce.label_smoothing = 0.1;
  const auto result = decoder.loss_and_backward(batch.embeds, batch.batch, batch.labels, ce);
  const double ref_loss = m.ref["loss"].get<double>();
  CHECK(std::abs(result.loss - ref_loss) < 1e-5 * ref_loss);

  int checked = 0;
  decoder.for_each_lora([&](const std::string& path, auto& lin) {
    const std::string key = path.substr(path.find("layers."));
    CAPTURE(key);
    CHECK(normwise_error(lin.grad_A(), vidlora::test::json_matrix(m.ref["lora_grads"].at(key + ".lora_A.weight"))) <
          1e-4);
    CHECK(normwise_error(lin.grad_B(), vidlora::test::json_matrix(m.ref["lora_grads"].at(key + ".lora_B.weight"))) <
          1e-4);
    checked += 2;
  });
  CHECK(checked == static_cast<int>(m.ref["lora_grads"].size()));

  projector.backward(model::gather_rows<float>(result.grad_embeds, batch.visual_rows));
  const auto& pg = m.ref["projector_grads"];
  CHECK(normwise_error(projector.linear_1().grad_weight(), vidlora::test::json_matrix(pg["linear_1.weight"])) < 1e-4);
  CHECK(normwise_error(projector.linear_2().grad_weight(), vidlora::test::json_matrix(pg["linear_2.weight"])) < 1e-4);
  const auto b1 = vidlora::test::json_vector<float>(pg["linear_1.bias"]);
  const auto b2 = vidlora::test::json_vector<float>(pg["linear_2.bias"]);
  CHECK(normwise_error(projector.linear_1().grad_bias(), Eigen::Map<const Vector>(b1.data(), b1.size())) < 1e-4);
  CHECK(normwise_error(projector.linear_2().grad_bias(), Eigen::Map<const Vector>(b2.data(), b2.size())) < 1e-4);
}

TEST_CASE("the newer llava key layout loads the same model as the older one", "[model][llava][checkpoint]") {
  const Llava m;
  model::TensorTable newer;  // model.language_model.*, lm_head.*, model.vision_tower.*, model.multi_modal_projector.*
  auto renamed = [](const std::string& name) {
    const std::pair<std::string, std::string> rules[] = {{"language_model.model.", "model.language_model."},
                                                         {"language_model.lm_head.", "lm_head."},
                                                         {"vision_tower.", "model.vision_tower."},
                                                         {"multi_modal_projector.", "model.multi_modal_projector."}};
    for (const auto& [from, to] : rules)
      if (name.rfind(from, 0) == 0) return to + name.substr(from.size());
    return name;
  };
  for (const auto& name : m.weights.names()) {
    const Vector v = m.weights.vector(name);
    newer.insert(renamed(name), m.weights.info(name).shape, std::vector<float>(v.data(), v.data() + v.size()));
  }
  REQUIRE(newer.contains("model.language_model.layers.0.self_attn.q_proj.weight"));
  REQUIRE_FALSE(newer.contains("language_model.model.norm.weight"));
  const std::vector<float> pixels = flat_pixels(m.ref["pixel_values"]);
  const Matrix old_features = model::ClipVision(m.config.vision, m.weights).features(pixels, 2);
  const Matrix new_features = model::ClipVision(m.config.vision, newer).features(pixels, 2);
  CHECK(new_features == old_features);
  const Matrix old_visual = model::Mlp2xGelu::load(m.weights, 32, 32).apply(old_features);
  CHECK(model::Mlp2xGelu::load(newer, 32, 32).apply(new_features) == old_visual);
  model::Decoder<4, 8> old_decoder(m.config.text, m.weights), new_decoder(m.config.text, newer);
  model::SequenceBatch one;
  one.seq_len = 6;
  const std::vector<int> ids{1, 5, 7, 9, 11, 20};
  CHECK(new_decoder.logits(new_decoder.forward(new_decoder.embed(ids), one, false)) ==
        old_decoder.logits(old_decoder.forward(old_decoder.embed(ids), one, false)));
}
