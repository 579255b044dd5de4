// The host side of the device decoder (model/cuda/decoder_model.cuh): export_decoder_weights copies a CPU
// model::Decoder exactly (dense and NF4 bases, norms, head, LoRA factors row-major, dropout streams), the size
// check names the tensor, unsupported configurations are errors, and the next-token shift and input checks agree
// with model::Decoder's.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>

#include <cstring>
#include <memory>
#include <optional>
#include <tuple>

#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/model/cuda/decoder_model.cuh>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/decoder_layer_cpu.hpp>
#include <vidlora/model/decoder_model_steps.hpp>
#include <vidlora/model/decoder_weights_export.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/model/rms_norm.hpp>
#include <vidlora/loss/lm_head_cross_entropy.hpp>
#include <vidlora/quant/quantized_weight.hpp>

#include "host_decoder_exec.hpp"

using namespace vidlora;

namespace {

model::DecoderOptions all_slots(double dropout = 0.0) {
  model::DecoderOptions o;
  o.target_modules = {"q_proj", "v_proj", "down_proj"};
  o.lora.dropout = dropout;
  o.lora.seed = 5;
  return o;
}

template <class M>
bool same_row_major(const std::vector<float>& flat, const M& m) {
  if (static_cast<Eigen::Index>(flat.size()) != m.size()) return false;
  for (Eigen::Index r = 0; r < m.rows(); ++r)
    for (Eigen::Index c = 0; c < m.cols(); ++c)
      if (flat[static_cast<std::size_t>(r * m.cols() + c)] != m(r, c)) return false;
  return true;
}

bool same_bits(const Matrix& a, const Matrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) == 0;
}

// A small step's inputs: a decoder with LoRA on all_slots(dropout) and B off zero, its exported weights, two
// right-padded sequences of 6 with their labels, and input embeddings; all drawn from `seed`.
struct StepCase {
  model::Decoder<16, 32> dec;
  model::DecoderHostWeights w;
  model::SequenceBatch batch;
  std::vector<int> labels;
  Matrix embeds;
  StepCase(const model::DecoderConfig& config, double dropout, std::uint64_t seed, std::uint64_t b_stream,
           std::vector<int> mask = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0},
           std::vector<int> l = {-100, -100, 3, 7, 1, 9, 4, 4, 2, 11, -100, -100})
      : dec(config, model::random_decoder_weights(config, seed), all_slots(dropout)),
        labels(std::move(l)),
        embeds(model::random_normal(12, config.hidden_size, 1.0, seed, 3)) {
    dec.for_each_lora([&](const std::string&, auto& lin) {
      lin.lora_B() = model::random_normal(lin.lora_B().rows(), lin.lora_B().cols(), 0.05, seed, b_stream++);
    });
    w = model::export_decoder_weights(dec);
    batch.batch = 2;
    batch.seq_len = 6;
    batch.attention_mask = std::move(mask);
  }
};

// decoder_loss_and_backward_steps (with or without checkpointing) against Decoder::loss_and_backward (with or
// without its own checkpointing): the same bits either way.
void check_steps_equal_decoder(model::DecoderConfig config, double dropout, double smoothing, bool checkpoint = false,
                               bool decoder_checkpoint = false, bool offload = false) {
  INFO("qk_norm " << config.qk_norm() << " dropout " << dropout << " smoothing " << smoothing << " checkpoint "
                  << checkpoint << " decoder checkpoint " << decoder_checkpoint << " offload " << offload << " layers "
                  << config.num_hidden_layers);
  StepCase k(config, dropout, 6, 40);
  auto& dec = k.dec;
  dec.set_gradient_checkpointing(decoder_checkpoint);
  const auto& [w, batch, labels, embeds] = std::tie(k.w, k.batch, k.labels, k.embeds);
  loss::CrossEntropyOptions ce;
  ce.label_smoothing = smoothing;
  loss::LmHeadOptions lm;
  lm.chunk_size = 7;
  const auto want = dec.loss_and_backward(embeds, batch, labels, ce, lm);

  test::HostDecoderModelExec exec(config, w, batch, labels, ce, 7);
  model::DecoderStepOptions options;
  options.checkpoint_layers = checkpoint;
  options.offload_checkpoints = offload;
  const auto got = model::decoder_loss_and_backward_steps(exec, embeds, options);
  CHECK(got.totals.loss == want.loss);
  CHECK(got.totals.valid_tokens == want.valid_tokens);
  CHECK(same_bits(got.grad_embeds, want.grad_embeds));
  // Without checkpointing every block's executor (its linears' caches) lives from its forward to its backward; with
  // it, a checkpointed block's executor is released after its forward and a new one recomputes it: one at a time.
  const int layers = config.num_hidden_layers, checkpointed = checkpoint ? layers - 1 : 0;
  CHECK(exec.created == layers + checkpointed);
  CHECK(exec.released == layers + checkpointed);
  CHECK(exec.live == 0);
  CHECK(exec.most_live == (checkpoint ? 1 : layers));
  CHECK(exec.offloaded == (offload ? checkpointed : 0));
  CHECK(exec.reloaded == exec.offloaded);
  // layer_backward_done: every block once, from the last down, when its LoRA gradients are final and no block below
  // has one yet (what the CUDA step sums over the ranks there, overlapped with the blocks below).
  std::vector<std::size_t> down;
  for (int l = layers; l-- > 0;) down.push_back(static_cast<std::size_t>(l));
  CHECK(exec.backward_done == down);
  for (int l = 0; l < layers; ++l) {
    const auto final_grads = exec.lora_grads_of(static_cast<std::size_t>(l));
    const auto& then = exec.grads_when_done.at(static_cast<std::size_t>(l));
    REQUIRE(then.size() == final_grads.size());
    for (std::size_t i = 0; i < then.size(); ++i) CHECK(same_bits(then[i], final_grads[i]));
    CHECK_FALSE(exec.below_touched_when_done.at(static_cast<std::size_t>(l)));
    // (each block ends with a non-zero LoRA gradient, so a block's gradients written early would be seen above)
    CHECK(std::any_of(final_grads.begin(), final_grads.end(), [](const Matrix& g) { return !g.isZero(0.0); }));
  }
  for (int l = 0; l < layers; ++l)
    for (std::size_t m = 0; m < 7; ++m) {
      const auto& cpu = dec.layer_weights(l).slots[m];
      if (!cpu.has_lora()) continue;
      INFO("layer " << l << " slot " << m);
      auto& host = exec.layers[static_cast<std::size_t>(l)].slots[m].lora();
      CHECK(same_bits(host.grad_A(), cpu.lora().grad_A()));
      CHECK(same_bits(host.grad_B(), cpu.lora().grad_B()));
      CHECK(host.step() == cpu.lora().step());  // the dropout streams advanced alike
    }
}

}  // namespace

TEST_CASE("decoder_loss_and_backward_steps over CPU executors equals Decoder::loss_and_backward bit for bit",
          "[decoder_host]") {
  auto config = model::llama_config(32, 48, 2, 4, 2, 20);
  check_steps_equal_decoder(config, 0.0, 0.0);
  check_steps_equal_decoder(config, 0.1, 0.1);
  config.architecture = model::Architecture::Qwen3;
  config.validate();
  check_steps_equal_decoder(config, 0.1, 0.0);
  config.architecture = model::Architecture::Qwen2;  // q/k/v biases
  config.validate();
  check_steps_equal_decoder(config, 0.0, 0.0);
}

TEST_CASE("decoder_loss_and_backward_steps with checkpointed blocks gives the same loss and gradients bit for bit",
          "[decoder_host]") {
  auto config = model::llama_config(32, 48, 3, 4, 2, 20);
  for (const bool decoder_checkpoint : {false, true}) {
    check_steps_equal_decoder(config, 0.0, 0.0, true, decoder_checkpoint);
    check_steps_equal_decoder(config, 0.1, 0.1, true, decoder_checkpoint);  // dropout streams rewound
  }
  check_steps_equal_decoder(config, 0.1, 0.0, false, true);
  check_steps_equal_decoder(config, 0.1, 0.1, true, true, /*offload=*/true);  // inputs back from "host" memory
  config.num_hidden_layers = 1;  // the last block is never checkpointed: nothing to recompute
  config.validate();
  check_steps_equal_decoder(config, 0.1, 0.0, true, false);
  config = model::llama_config(32, 48, 2, 4, 2, 20);
  config.architecture = model::Architecture::Qwen3;  // the head norms' inputs are recomputed too
  config.validate();
  check_steps_equal_decoder(config, 0.1, 0.0, true, true);
}

TEST_CASE("export_decoder_weights copies a dense llama decoder exactly", "[decoder_host]") {
  const auto config = model::llama_config(32, 48, 2, 4, 2, 20);
  model::Decoder<16, 32> dec(config, model::random_decoder_weights(config, 3), all_slots(0.1));
  dec.slot(1, "v_proj").lora().lora_B() = model::random_normal(16, 16, 0.1, 3, 50);  // [kv_features, rank]
  const model::DecoderHostWeights w = model::export_decoder_weights(dec);
  CHECK(w.hidden == 32);
  CHECK(w.intermediate == 48);
  CHECK(w.q_heads == 4);
  CHECK(w.kv_heads == 2);
  CHECK(w.head_dim == 8);
  CHECK(w.vocab == 20);
  CHECK_FALSE(w.qk_norm);
  REQUIRE(w.layers.size() == 2);
  CHECK(same_row_major(w.head, dec.head_weight()));
  CHECK(same_row_major(w.final_norm, dec.final_norm().transpose()));
  for (int l = 0; l < 2; ++l) {
    const auto& layer = dec.layer_weights(l);
    CHECK(same_row_major(w.layers[l].norm1, layer.norm1.transpose()));
    CHECK(same_row_major(w.layers[l].norm2, layer.norm2.transpose()));
    CHECK(w.layers[l].q_norm.empty());
    for (std::size_t m = 0; m < 7; ++m) {
      INFO("layer " << l << " slot " << m);
      const auto& s = w.layers[l].linears[m];
      const auto& slot = layer.slots[m];
      CHECK_FALSE(s.quantized);
      CHECK(same_row_major(s.w, slot.base().dense()));
      CHECK(s.bias.empty());
      CHECK(s.has_lora() == (m == 0 || m == 2 || m == 6));
      if (!s.has_lora()) continue;
      CHECK(s.rank == 16);
      CHECK(same_row_major(s.lora_a, slot.lora().lora_A()));
      CHECK(same_row_major(s.lora_b, slot.lora().lora_B()));
      CHECK(s.scaling == 2.0f);
      CHECK(s.dropout == 0.1f);
      CHECK(s.seed == 5);
      CHECK(s.layer_index == static_cast<std::uint32_t>(l * 7 + static_cast<int>(m)));
      CHECK(s.step == 0);
    }
  }
  CHECK(model::host_slot_name(1, 5) == "layers.1.mlp.up_proj");
  CHECK(model::host_slot_name(0, 3) == "layers.0.self_attn.o_proj");
}

TEST_CASE("export_decoder_weights keeps an NF4 base as its blocks and a qwen3 decoder's head norms", "[decoder_host]") {
  auto config = model::llama_config(64, 96, 1, 4, 1, 30);
  config.architecture = model::Architecture::Qwen3;
  config.validate();
  model::Decoder<16, 32, quant::NF4Weight> dec(config, model::random_decoder_weights(config, 4), all_slots());
  const model::DecoderHostWeights w = model::export_decoder_weights(dec);
  CHECK(w.qk_norm);
  CHECK(w.layers[0].q_norm.size() == 16);
  CHECK(w.layers[0].k_norm.size() == 16);
  for (std::size_t m = 0; m < 7; ++m) {
    const auto& s = w.layers[0].linears[m];
    const auto& blocks = dec.layer_weights(0).slots[m].base().blocks();
    CHECK(s.quantized);
    CHECK(s.q.nf4);
    CHECK(s.w.empty());
    CHECK(s.q.packed == blocks.packed);
    CHECK(s.q.qabsmax == blocks.qabsmax);
    CHECK(s.q.nested_absmax == blocks.nested_absmax);
    CHECK(s.q.absmax_offset == blocks.absmax_offset);
    CHECK(s.q.blocksize == 64);
  }
}

TEST_CASE("export_decoder_weights copies qwen2's q/k/v biases, on LoRA and frozen slots", "[decoder_host]") {
  auto config = model::llama_config(32, 48, 1, 4, 2, 20);
  config.architecture = model::Architecture::Qwen2;
  config.validate();
  model::Decoder<16, 32> dec(config, model::random_decoder_weights(config, 8), all_slots());
  const model::DecoderHostWeights w = model::export_decoder_weights(dec);
  for (std::size_t m = 0; m < 7; ++m) {
    INFO("slot " << m);
    const auto* bias = dec.layer_weights(0).slots[m].bias();
    CHECK((bias != nullptr) == (m < 3));  // q (LoRA), k (frozen), v (LoRA)
    if (bias)
      CHECK(same_row_major(w.layers[0].linears[m].bias, bias->transpose()));
    else
      CHECK(w.layers[0].linears[m].bias.empty());
  }
}

// The device decoder rotates with the frequencies the CPU decoder's RotaryTable holds: exported with the weights, then
// updated forward by forward (dynamic NTK) by the same RopeFrequencyState rules.
TEST_CASE("export_decoder_weights carries the RoPE frequencies, dynamic NTK's state included", "[decoder_host]") {
  auto config = model::llama_config(32, 48, 1, 4, 2, 20);  // head_dim 8
  config.max_position_embeddings = 64;
  config.rope_scaling.type = model::RopeType::Yarn;
  config.rope_scaling.factor = 4.0;
  config.rope_scaling.original_max_position_embeddings = 4096;
  {
    model::Decoder<16, 32> dec(config, model::random_decoder_weights(config, 3), all_slots());
    const model::DecoderHostWeights w = model::export_decoder_weights(dec);
    const model::RotaryTable table(8, config.rope_theta, config.rope_scaling, 64);
    CHECK(w.rope.current().inv_freq == std::vector<float>(table.inv_freq().data(), table.inv_freq().data() + 4));
    CHECK(w.rope.current().attention_scaling == table.attention_scaling());
    CHECK(w.rope.current().attention_scaling > 1.1f);  // yarn's mscale
    CHECK(w.rope.current() != model::default_rope_frequencies(8, config.rope_theta));
    model::cuda::DecoderBatch b;
    b.seq_len = 3;
    CHECK(model::cuda::decoder_layer_shape(w, b).rope == w.rope.current());
  }
  config.rope_scaling = {};
  config.rope_scaling.type = model::RopeType::Dynamic;
  config.rope_scaling.factor = 2.0;
  config.max_position_embeddings = 4;
  model::Decoder<16, 32> dec(config, model::random_decoder_weights(config, 3), all_slots());
  const model::RopeFrequencies original = model::export_decoder_weights(dec).rope.current();
  const Matrix embeds = model::random_normal(6, 32, 1.0, 3, 4);
  (void)dec.forward(embeds, model::SequenceBatch{1, 6, {}}, false);  // past max_position_embeddings: grown
  model::DecoderHostWeights w = model::export_decoder_weights(dec);
  CHECK(w.rope.dynamic());
  CHECK(w.rope.current() != original);
  CHECK(w.rope.current().inv_freq == model::dynamic_ntk_inv_freq(8, config.rope_theta, 2.0, 4, 6));
  CHECK(!w.rope.prepare(5));  // shorter, still past the original length: kept
  CHECK(w.rope.prepare(9));   // longer: grown again
  CHECK(w.rope.current().inv_freq == model::dynamic_ntk_inv_freq(8, config.rope_theta, 2.0, 4, 9));
  CHECK(w.rope.prepare(3));  // below max_position_embeddings: the original frequencies
  CHECK(w.rope.current() == original);
  CHECK(!w.rope.prepare(4));
}

TEST_CASE("the device decoder refuses sequences past the sliding window, as model::Decoder does", "[decoder_host]") {
  // Within the window sliding-window attention is full attention (what both decoders run); past it the CPU refuses,
  // and so must the device instead of attending to every key.
  auto config = model::llama_config(32, 48, 1, 4, 2, 20);
  config.sliding_window = 6;
  model::Decoder<16, 32> dec(config, model::random_decoder_weights(config, 3), all_slots());
  const model::DecoderHostWeights w = model::export_decoder_weights(dec);
  CHECK(w.sliding_window == 6);
  CHECK_NOTHROW(model::cuda::check_sliding_window(w, 6, "test"));
  CHECK_THROWS_WITH(model::cuda::check_sliding_window(w, 7, "test"),
                    Catch::Contains("a sequence of 7 positions is longer than sliding_window 6"));
  model::SequenceBatch seven;
  seven.batch = 1;
  seven.seq_len = 7;
  CHECK_THROWS_WITH(dec.forward(dec.embed(std::vector<int>{1, 2, 3, 4, 5, 6, 7}), seven, false),
                    Catch::Contains("a sequence of 7 positions is longer than sliding_window 6"));
  config.sliding_window = 0;
  model::Decoder<16, 32> full(config, model::random_decoder_weights(config, 3), all_slots());
  CHECK(model::export_decoder_weights(full).sliding_window == 0);
  CHECK_NOTHROW(model::cuda::check_sliding_window(model::export_decoder_weights(full), 100000, "test"));
}

TEST_CASE("check_decoder_host_weights names the tensor whose size is wrong", "[decoder_host]") {
  const auto config = model::llama_config(32, 48, 2, 4, 2, 20);
  model::Decoder<16, 32> dec(config, model::random_decoder_weights(config, 3), all_slots());
  const model::DecoderHostWeights good = model::export_decoder_weights(dec);
  CHECK_NOTHROW(model::check_decoder_host_weights(good));
  auto w = good;
  w.head.pop_back();
  CHECK_THROWS_WITH(model::check_decoder_host_weights(w),
                    Catch::Contains("lm_head.weight has 639 values for [20, 32]"));
  w = good;
  w.layers[1].norm2.push_back(1.0f);
  CHECK_THROWS_WITH(model::check_decoder_host_weights(w),
                    Catch::Contains("layers.1.post_attention_layernorm.weight has 33 values for [32]"));
  w = good;
  w.layers[0].linears[6].lora_a.resize(10);
  CHECK_THROWS_WITH(model::check_decoder_host_weights(w),
                    Catch::Contains("layers.0.mlp.down_proj.lora_A.weight has 10 values for [16, 48]"));
  w = good;
  w.layers[1].linears[4].in = 31;
  CHECK_THROWS_WITH(model::check_decoder_host_weights(w),
                    Catch::Contains("layers.1.mlp.gate_proj is [48, 31], the shape needs [48, 32]"));
  w = good;
  w.layers[0].linears[0].dropout = 1.0f;
  CHECK_THROWS_WITH(model::check_decoder_host_weights(w), Catch::Contains("LoRA dropout 1.0"));
  w = good;
  w.kv_heads = 3;
  CHECK_THROWS_WITH(model::check_decoder_host_weights(w), Catch::Contains("heads 4/3"));
}

TEST_CASE("the device decoder's next-token targets and input checks agree with model::Decoder", "[decoder_host]") {
  model::SequenceBatch sb;
  sb.batch = 3;
  sb.seq_len = 4;
  const std::vector<int> labels{5, 6, -100, 7, 1, 2, 3, 4, 9, -100, -100, -100};
  const std::vector<int> want = model::next_token_targets(labels, sb);
  model::cuda::DecoderBatch b;
  b.batch = 3;
  b.seq_len = 4;
  const std::vector<std::int32_t> got = model::cuda::next_token_targets(labels, b);
  CHECK(std::vector<int>(got.begin(), got.end()) == want);
  const std::vector<std::int32_t> other_ignore = model::cuda::next_token_targets(labels, b, -1);
  CHECK(other_ignore[3] == -1);  // the last position of each sequence takes the given ignore_index
  CHECK_THROWS_WITH(model::cuda::next_token_targets({1, 2}, b), Catch::Contains("2 labels for 3x4 tokens"));
  CHECK_NOTHROW(model::cuda::check_decoder_input(32, 12, 32, b));
  CHECK_THROWS_WITH(model::cuda::check_decoder_input(32, 12, 16, b),
                    Catch::Contains("input embeddings [12, 16] do not match batch 3 x seq_len 4 x hidden 32"));
  b.attention_mask = {1, 1, 0};
  CHECK_THROWS_WITH(model::cuda::check_decoder_input(32, 12, 32, b),
                    Catch::Contains("attention mask of 3 for 12 tokens"));
  b.seq_len = 0;
  CHECK_THROWS_WITH(model::cuda::check_decoder_input(32, 0, 32, b), Catch::Contains("empty batch (3 x 0)"));
}

TEST_CASE("decoder_layer_shape carries the model's sizes and the batch", "[decoder_host]") {
  auto config = model::llama_config(64, 96, 1, 4, 1, 30);
  config.architecture = model::Architecture::Qwen3;
  config.rope_theta = 5e5;
  config.validate();
  model::Decoder<16, 32> dec(config, model::random_decoder_weights(config, 4), all_slots());
  model::cuda::DecoderBatch b;
  b.batch = 2;
  b.seq_len = 9;
  const auto s = model::cuda::decoder_layer_shape(model::export_decoder_weights(dec), b);
  CHECK(s.tokens() == 18);
  CHECK(s.hidden == 64);
  CHECK(s.intermediate == 96);
  CHECK(s.q_heads == 4);
  CHECK(s.kv_heads == 1);
  CHECK(s.head_dim == 16);
  CHECK(s.qk_norm);
  CHECK(s.rope == model::default_rope_frequencies(16, 5e5));
  CHECK_NOTHROW(model::cuda::check_layer_shape(s));
}

// The evaluation's loss as a step list (what DecoderModel::loss runs on the device): every block forward without
// dropout, one block alive at a time, the final norm and the LM-head loss, summed: the CPU evaluation's loss sum
// (Decoder::forward(…, false), then lm_head_cross_entropy) bit for bit, with no dropout stream moved.
TEST_CASE("decoder_loss_steps over CPU executors equals the evaluation's forward and LM-head loss bit for bit",
          "[decoder_host]") {
  auto config = model::llama_config(32, 48, 3, 4, 2, 20);
  for (const bool qwen3 : {false, true}) {
    if (qwen3) {
      config.architecture = model::Architecture::Qwen3;
      config.validate();
    }
    INFO("qwen3 " << qwen3);
    StepCase k(config, 0.1, 8, 70, {1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0},
               {-100, 2, 3, 7, 1, 9, -100, 4, 2, -100, -100, -100});
    auto& dec = k.dec;
    const auto& [w, batch, labels, embeds] = std::tie(k.w, k.batch, k.labels, k.embeds);
    loss::CrossEntropyOptions mean;
    mean.label_smoothing = 0.1;
    loss::LmHeadOptions lm;
    lm.chunk_size = 7;
    const auto want = loss::lm_head_cross_entropy<float>(dec.forward(embeds, batch, false), dec.head_weight(),
                                                         model::next_token_targets(labels, batch), mean, lm);
    REQUIRE(want.valid_tokens == 7);

    loss::CrossEntropyOptions sum = mean;  // the device evaluation sums: its loss is the sum itself
    sum.reduction = loss::Reduction::Sum;
    test::HostDecoderModelExec exec(config, w, batch, labels, sum, 7);
    exec.training = false;
    const model::DecoderLossTotals got = model::decoder_loss_steps(exec, embeds);
    CHECK(got.loss == want.loss_sum);
    CHECK(got.valid_tokens == want.valid_tokens);
    CHECK(exec.created == config.num_hidden_layers);
    CHECK(exec.released == config.num_hidden_layers);
    CHECK(exec.most_live == 1);
    for (const auto& layer : exec.layers)
      for (const auto& slot : layer.slots)
        if (slot.has_lora()) CHECK(slot.step() == 0);  // no mask drawn

    // With dropout applied (a training forward) the loss differs: the evaluation's is the no-dropout one.
    test::HostDecoderModelExec training(config, w, batch, labels, sum, 7);
    CHECK(model::decoder_loss_steps(training, embeds).loss != want.loss_sum);
  }
}

// DecoderStepOptions::pack_saved (the device's bf16 saved activations, emulated by rounding them in place): every
// block but the last (and none that is checkpointed) is packed after its forward and unpacked before its backward;
// the loss is the same bits; the gradients are those of the bf16-rounded activations: close to the fp32 ones, not
// equal.
TEST_CASE("decoder_loss_and_backward_steps with bf16 saved activations: the same loss, gradients within bf16's error",
          "[decoder_host]") {
  const auto config = model::llama_config(32, 48, 3, 4, 2, 20);
  const StepCase k(config, 0.0, 6, 40);
  const auto& [w, batch, labels, embeds] = std::tie(k.w, k.batch, k.labels, k.embeds);
  loss::CrossEntropyOptions ce;
  test::HostDecoderModelExec plain(config, w, batch, labels, ce, 7);
  const auto want = model::decoder_loss_and_backward_steps(plain, embeds);
  test::HostDecoderModelExec packed(config, w, batch, labels, ce, 7);
  model::DecoderStepOptions o;
  o.pack_saved = true;
  const auto got = model::decoder_loss_and_backward_steps(packed, embeds, o);
  CHECK(packed.packed == std::vector<std::size_t>{0, 1});  // not the last block, whose backward comes first
  CHECK(packed.unpacked == 2);
  CHECK(got.totals.loss == want.totals.loss);  // the forward is untouched
  const auto normwise = [](const Matrix& a, const Matrix& b) {
    return static_cast<double>((a - b).cwiseAbs().maxCoeff() / b.cwiseAbs().maxCoeff());
  };
  CHECK(normwise(got.grad_embeds, want.grad_embeds) < 2e-2);
  CHECK(normwise(got.grad_embeds, want.grad_embeds) > 0.0);
  for (std::size_t l = 0; l < 3; ++l)
    for (std::size_t m = 0; m < 7; ++m) {
      auto& a = packed.layers[l].slots[m];
      if (!a.has_lora()) continue;
      INFO("layer " << l << " slot " << m);
      const auto& b = plain.layers[l].slots[m];
      CHECK(normwise(a.lora().grad_A(), b.lora().grad_A()) < 2e-2);
      CHECK(normwise(a.lora().grad_B(), b.lora().grad_B()) < 2e-2);
      if (l == 2) CHECK(same_bits(a.lora().grad_B(), b.lora().grad_B()));  // the last block's B: its own inputs
    }
  // With checkpointing, the checkpointed blocks keep their input only: nothing is packed.
  test::HostDecoderModelExec checkpointed(config, w, batch, labels, ce, 7);
  o.checkpoint_layers = true;
  (void)model::decoder_loss_and_backward_steps(checkpointed, embeds, o);
  CHECK(checkpointed.packed.empty());
  CHECK(checkpointed.unpacked == 0);
}
