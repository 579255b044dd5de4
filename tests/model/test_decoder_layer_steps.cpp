// The decoder block's step list (model/decoder_layer_steps.hpp) over the CPU executor: standalone, it gives
// model::Decoder's results bit for bit (the CPU half of tests/cuda/test_decoder_layer.cu, which compares the
// CUDA executor with this one); its backward is the derivative of its forward (central differences in
// float64); and the KV-cache mode extends a sequence exactly as the full forward computes it.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <vidlora/model.hpp>

using namespace vidlora;

namespace {

const std::vector<std::string> kAllSevenTargets{"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                "gate_proj", "up_proj", "down_proj"};

template <class Slot>
using Weights = model::DecoderLayerWeights<Slot>;

// Layer 0 of `source` as Decoder::load_layer builds it (LoRA on `targets`, slot RNG layer = module index).
template <class Slot, class Source>
Weights<Slot> layer_from(const model::DecoderConfig& c, const Source& source, const std::vector<std::string>& targets,
                         lora::LoraOptions lo) {
  using T = typename Slot::scalar_type;
  Weights<Slot> w;
  const Eigen::Index d = c.hidden_size, f = c.intermediate_size, qf = c.q_features(), kvf = c.kv_features();
  w.norm1 = model::load_vector<T>(source, "model.layers.0.input_layernorm.weight", d);
  w.norm2 = model::load_vector<T>(source, "model.layers.0.post_attention_layernorm.weight", d);
  if (c.qk_norm()) {
    w.q_norm = model::load_vector<T>(source, "model.layers.0.self_attn.q_norm.weight", c.head_dim);
    w.k_norm = model::load_vector<T>(source, "model.layers.0.self_attn.k_norm.weight", c.head_dim);
  }
  const Eigen::Index outs[7] = {qf, kvf, kvf, d, f, f, d}, ins[7] = {d, d, d, qf, d, d, f};
  for (std::size_t m = 0; m < 7; ++m) {
    const std::string key = std::string("model.layers.0.") + (m < 4 ? "self_attn." : "mlp.") + kAllSevenTargets[m];
    lo.layer = static_cast<std::uint32_t>(m);
    const bool with_lora = std::find(targets.begin(), targets.end(), kAllSevenTargets[m]) != targets.end();
    w.slots.emplace_back(model::load_matrix<T>(source, key + ".weight", outs[m], ins[m]), std::nullopt, with_lora, lo);
  }
  return w;
}

template <class Slot>
void randomize_b(Weights<Slot>& w, std::uint64_t seed) {
  using T = typename Slot::scalar_type;
  for (std::size_t m = 0; m < w.slots.size(); ++m)
    if (w.slots[m].has_lora()) {
      auto& b = w.slots[m].lora().lora_B();
      b = model::random_normal(b.rows(), b.cols(), 0.2, seed, m).template cast<T>();
    }
}

template <class A, class B>
bool same_bits(const A& a, const B& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(*a.data())) == 0;
}

}  // namespace

TEST_CASE("the CPU executor's block gives a one-layer Decoder's forward and backward bit for bit", "[model][layer]") {
  for (auto arch : {model::Architecture::Llama, model::Architecture::Qwen3}) {
    for (double dropout : {0.0, 0.2}) {
      INFO("architecture " << model::architecture_name(arch) << " dropout " << dropout);
      model::DecoderConfig c = model::llama_config(48, 80, 1, 4, 2, 40);
      c.architecture = arch;
      c.validate();
      const auto table = model::random_decoder_weights(c, 21);
      model::DecoderOptions o;
      o.target_modules = {"q_proj", "v_proj", "o_proj", "up_proj", "down_proj"};
      o.lora.dropout = dropout;
      o.lora.seed = 4;
      model::Decoder<8, 16> decoder(c, table, o);
      std::uint64_t stream = 0;
      decoder.for_each_lora([&](const std::string&, auto& lin) {
        lin.lora_B() = model::random_normal(lin.lora_B().rows(), lin.lora_B().cols(), 0.2, 9, stream++);
      });
      auto layer = layer_from<model::LinearSlot<8, 16, lora::DenseWeight>>(c, table, o.target_modules, o.lora);
      stream = 0;
      for (auto& s : layer.slots)
        if (s.has_lora())
          s.lora().lora_B() =
              model::random_normal(s.lora().lora_B().rows(), s.lora().lora_B().cols(), 0.2, 9, stream++);

      model::SequenceBatch batch{2, 6, std::vector<int>{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}};
      const Matrix x = model::random_normal(12, 48, 1.0, 5, 0);
      const Matrix d_hidden = model::random_normal(12, 48, 1.0, 5, 1);
      const Matrix hidden = decoder.forward(x, batch, true);
      const Matrix dx = decoder.backward(d_hidden);

      std::vector<Eigen::Index> positions(12);
      for (Eigen::Index i = 0; i < 12; ++i) positions[static_cast<std::size_t>(i)] = i % 6;
      model::RotaryTable rope(c.head_dim, c.rope_theta);
      model::CpuLayerExecutor<model::LinearSlot<8, 16, lora::DenseWeight>> exec(layer, c, rope, positions, batch, true);
      decltype(exec)::saved_type saved;
      const Matrix block = model::decoder_layer_forward_steps(exec, x, saved);
      Vector inv;
      const Vector final_norm = model::load_vector<float>(table, "model.norm.weight", 48);
      CHECK(same_bits(model::rms_norm<float>(block, final_norm, c.rms_norm_eps, &inv), hidden));
      const Matrix d_block = model::rms_norm_backward<float>(block, final_norm, inv, d_hidden);
      CHECK(same_bits(model::decoder_layer_backward_steps(exec, saved, d_block), dx));
      for (std::size_t m = 0; m < 7; ++m) {
        if (!layer.slots[m].has_lora()) continue;
        INFO("slot " << kAllSevenTargets[m]);
        CHECK(same_bits(layer.slots[m].lora().grad_A(), decoder.slot(0, kAllSevenTargets[m]).lora().grad_A()));
        CHECK(same_bits(layer.slots[m].lora().grad_B(), decoder.slot(0, kAllSevenTargets[m]).lora().grad_B()));
      }
    }
  }
}

TEST_CASE("the block's backward steps are the derivative of its forward steps (float64 central differences)",
          "[model][layer]") {
  using Slot = model::LinearSlot<4, 8, lora::DenseWeight64>;
  for (auto arch : {model::Architecture::Llama, model::Architecture::Qwen3}) {
    INFO("architecture " << model::architecture_name(arch));
    model::DecoderConfig c = model::llama_config(16, 24, 1, 4, 2, 10);
    c.architecture = arch;
    c.validate();
    const auto table = model::random_decoder_weights(c, 3);
    auto layer = layer_from<Slot>(c, table, kAllSevenTargets, {});
    randomize_b(layer, 8);
    model::SequenceBatch batch{2, 5, std::vector<int>{1, 1, 1, 1, 1, 1, 1, 1, 0, 0}};
    std::vector<Eigen::Index> positions(10);
    for (Eigen::Index i = 0; i < 10; ++i) positions[static_cast<std::size_t>(i)] = i % 5;
    model::RotaryTable rope(c.head_dim, c.rope_theta);
    const MatrixD x = model::random_normal(10, 16, 1.0, 6, 0).cast<double>();
    const MatrixD w_out = model::random_normal(10, 16, 1.0, 6, 1).cast<double>();  // loss = Σ w_out ⊙ block(x)
    const auto loss = [&](const MatrixD& input) {
      model::CpuLayerExecutor<Slot> e(layer, c, rope, positions, batch, false);
      model::CpuLayerExecutor<Slot>::saved_type s;
      return model::decoder_layer_forward_steps(e, input, s).cwiseProduct(w_out).sum();
    };
    for (auto& s : layer.slots) s.lora().zero_grad();
    model::CpuLayerExecutor<Slot> exec(layer, c, rope, positions, batch, true);
    model::CpuLayerExecutor<Slot>::saved_type saved;
    model::decoder_layer_forward_steps(exec, x, saved);
    const MatrixD dx = model::decoder_layer_backward_steps(exec, saved, w_out);
    const double h = 1e-6;
    double worst = 0, scale = 0;
    for (Eigen::Index i = 0; i < x.size(); i += 7) {
      MatrixD xp = x, xm = x;
      xp.data()[i] += h;
      xm.data()[i] -= h;
      const double numeric = (loss(xp) - loss(xm)) / (2 * h);
      worst = std::max(worst, std::abs(numeric - dx.data()[i]));
      scale = std::max(scale, std::abs(numeric));
    }
    CHECK(worst / scale < 1e-6);
    // d loss / d lora_B of the down projection (the gradient the optimizer sees)
    auto& down = layer.slots[6].lora();
    const MatrixD grad_b = down.grad_B();
    worst = scale = 0;
    for (Eigen::Index i = 0; i < grad_b.size(); i += 3) {
      const double keep = down.lora_B().data()[i];
      down.lora_B().data()[i] = keep + h;
      const double lp = loss(x);
      down.lora_B().data()[i] = keep - h;
      const double lm = loss(x);
      down.lora_B().data()[i] = keep;
      const double numeric = (lp - lm) / (2 * h);
      worst = std::max(worst, std::abs(numeric - grad_b.data()[i]));
      scale = std::max(scale, std::abs(numeric));
    }
    CHECK(worst / scale < 1e-6);
  }
}

TEST_CASE("the executor's KV-cache mode continues a sequence as the batch forward computes it", "[model][layer]") {
  using Slot = model::LinearSlot<4, 8, lora::DenseWeight>;
  model::DecoderConfig c = model::llama_config(32, 48, 1, 4, 1, 10);
  const auto table = model::random_decoder_weights(c, 5);
  auto layer = layer_from<Slot>(c, table, {"q_proj", "v_proj"}, {});
  randomize_b(layer, 2);
  const Matrix x = model::random_normal(7, 32, 1.0, 4, 0);
  model::SequenceBatch batch{1, 7, {}};
  std::vector<Eigen::Index> positions{0, 1, 2, 3, 4, 5, 6};
  model::RotaryTable rope(c.head_dim, c.rope_theta);
  model::CpuLayerExecutor<Slot> full(layer, c, rope, positions, batch, false);
  model::CpuLayerExecutor<Slot>::saved_type saved;
  const Matrix want = model::decoder_layer_forward_steps(full, x, saved);

  Matrix k_cache(0, c.kv_features()), v_cache(0, c.kv_features());
  Matrix got(7, 32);
  for (auto [first, n] : {std::pair<Eigen::Index, Eigen::Index>{0, 4}, {4, 1}, {5, 2}}) {
    std::vector<Eigen::Index> pos;
    for (Eigen::Index i = 0; i < n; ++i) pos.push_back(first + i);
    model::CpuLayerExecutor<Slot> step(layer, c, rope, pos, k_cache, v_cache, first);
    got.middleRows(first, n) = model::decoder_layer_forward_steps(step, Matrix(x.middleRows(first, n)), saved);
    CHECK(k_cache.rows() == first + n);
  }
  CHECK((got - want).cwiseAbs().maxCoeff() <= 1e-5f * want.cwiseAbs().maxCoeff());
  model::CpuLayerExecutor<Slot> step(layer, c, rope, positions, k_cache, v_cache, 7);
  CHECK_THROWS_WITH(step.linear_backward(model::LayerLinear::q, Matrix::Zero(1, 32)),
                    Catch::Contains("no backward through a KV-cache forward"));
}
