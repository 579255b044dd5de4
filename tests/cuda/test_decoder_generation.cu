// The evaluation on the device (model/cuda/decoder_model.cuh's loss, KV cache, forward_cached and logits;
// model/cuda/cached_decoder.cuh) against model::Decoder on the CPU from the same exported weights: the evaluation's
// loss (no dropout, no dropout stream moved) to 1e-5, a prompt run through the device KV cache in three pieces (the
// cache growing twice) to the CPU's single forward_cached, a copied cache continuing on its own as beam search needs,
// and greedy and beam search over the device cache choosing the CPU's tokens.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <vidlora/loss/lm_head_cross_entropy.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/model/cuda/cached_decoder.cuh>
#include <vidlora/model/cuda/decoder_model.cuh>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/decoder_weights_export.hpp>
#include <vidlora/model/generation.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/quant/quantized_weight.hpp>

#include "support/cuda_test.cuh"

using namespace vidlora;

namespace {

// A tiny decoder with LoRA on all seven slots (B random, so the adapters change the result) and `dropout`.
template <class Base = lora::DenseWeight>
model::Decoder<16, 32, Base> make_decoder(const model::DecoderConfig& config, double dropout, std::uint64_t seed) {
  model::DecoderOptions o;
  o.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  o.lora.dropout = dropout;
  o.lora.seed = seed;
  model::Decoder<16, 32, Base> d(config, model::random_decoder_weights(config, seed), o);
  std::uint64_t stream = 200;
  d.for_each_lora([&](const std::string&, auto& lin) {
    lin.lora_B() = model::random_normal(lin.lora_B().rows(), lin.lora_B().cols(), 0.05, seed, stream++);
  });
  return d;
}

std::vector<float> flat(const Matrix& m) { return std::vector<float>(m.data(), m.data() + m.size()); }

model::cuda::DeviceTensor upload(const Matrix& m) {
  model::cuda::DeviceTensor x(m.rows(), m.cols());
  x.buffer.upload(std::span<const float>(m.data(), static_cast<std::size_t>(m.size())));
  return x;
}

std::vector<float> download(const model::cuda::DeviceTensor& t) {
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
  return t.buffer.download();
}

model::DecoderConfig config_named(const std::string& name) {
  if (name == "llama, head_dim 16 (tiled attention)") return model::llama_config(64, 96, 2, 4, 2, 50);
  if (name == "llama, head_dim 8 (row attention)") return model::llama_config(64, 96, 2, 8, 4, 50);
  auto c = model::llama_config(64, 96, 2, 4, 2, 50);
  c.architecture = model::Architecture::Qwen3;
  c.validate();
  return c;
}

const std::vector<std::string> kConfigs{"llama, head_dim 16 (tiled attention)", "llama, head_dim 8 (row attention)",
                                        "qwen3 head norms"};

}  // namespace

TEST_CASE(
    "cuda decoder KV cache: a prompt in three pieces gives the CPU's forward_cached; a copied cache goes on alone",
    "[decoder]") {
  for (const std::string& name : kConfigs) {
    INFO(name);
    const model::DecoderConfig config = config_named(name);
    auto dec = make_decoder(config, 0.1, 3);  // dropout: generation must not apply it
    vidlora::cuda::GemmRunner gemm;
    model::cuda::DecoderModel dev(gemm, model::export_decoder_weights(dec));

    const Matrix prompt = model::random_normal(105, config.hidden_size, 1.0, 3, 9);
    auto cpu_cache = dec.make_cache();
    const Matrix want = dec.forward_cached(prompt, cpu_cache);

    auto cache = dev.make_cache();
    std::vector<float> got;
    const long pieces[][2] = {{0, 5}, {5, 70}, {75, 30}};  // 5 + 64 rows of room, then 75 + 64, then enough
    const long capacities[] = {69, 139, 139};
    for (int i = 0; i < 3; ++i) {
      const auto h = download(dev.forward_cached(upload(prompt.middleRows(pieces[i][0], pieces[i][1])), cache));
      got.insert(got.end(), h.begin(), h.end());
      CHECK(cache.capacity() == capacities[i]);
    }
    CHECK(cache.length() == 105);
    CHECK(cuda_test::normwise_error(got, flat(want)) < 2e-5);

    // Beam search's copy: the copy and the original each take another token, as two CPU caches do.
    auto copy = cache;
    auto cpu_copy = cpu_cache;
    const int a[1] = {3}, b[1] = {7};
    const Matrix want_a = dec.forward_cached(dec.embed(a), cpu_cache);
    const Matrix want_b = dec.forward_cached(dec.embed(b), cpu_copy);
    const model::cuda::DeviceTensor got_b = dev.forward_cached(upload(dec.embed(b)), copy);
    const model::cuda::DeviceTensor got_a = dev.forward_cached(upload(dec.embed(a)), cache);
    CHECK(cuda_test::normwise_error(download(got_a), flat(want_a)) < 2e-5);
    CHECK(cuda_test::normwise_error(download(got_b), flat(want_b)) < 2e-5);
    CHECK(cache.length() == 106);
    CHECK(copy.length() == 106);
    // The LM head's logits of those rows.
    CHECK(cuda_test::normwise_error(dev.logits(got_a), flat(dec.logits(want_a))) < 2e-5);
    // No dropout stream moved.
    for (const std::uint64_t s : dev.dropout_steps()) CHECK(s == 0);
  }
  // A cache of another model, and embeds of the wrong width, are refused.
  const model::DecoderConfig config = config_named(kConfigs[0]);
  auto dec = make_decoder(config, 0.0, 4);
  vidlora::cuda::GemmRunner gemm;
  model::cuda::DecoderModel one(gemm, model::export_decoder_weights(dec));
  vidlora::cuda::CudaCachingAllocator other_allocator;
  model::cuda::DecoderModel two(gemm, model::export_decoder_weights(dec), nullptr, &other_allocator);
  auto foreign = two.make_cache();
  CHECK_THROWS_AS(one.forward_cached(upload(Matrix::Ones(2, config.hidden_size)), foreign), vidlora::cuda::CudaError);
  auto mine = one.make_cache();
  CHECK_THROWS_AS(one.forward_cached(upload(Matrix::Ones(2, 3)), mine), vidlora::cuda::CudaError);
}

template <class Base>
void check_eval_loss(const std::string& name, bool nf4) {
  INFO(name << (nf4 ? ", NF4 base" : ", dense base"));
  const model::DecoderConfig config = config_named(name);
  auto dec = make_decoder<Base>(config, 0.1, 5);
  vidlora::cuda::GemmRunner gemm;
  model::cuda::DecoderModel dev(gemm, model::export_decoder_weights(dec));
  model::SequenceBatch batch{2, 7, {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0}};
  const std::vector<int> labels{-100, -100, 3, 7, 1, 9, 4, 4, 2, 11, 30, 41, -100, -100};
  const Matrix embeds = model::random_normal(14, config.hidden_size, 1.0, 5, 3);
  loss::CrossEntropyOptions ce;
  ce.label_smoothing = 0.1;
  loss::LmHeadOptions lm;
  lm.chunk_size = 16;
  const auto want = loss::lm_head_cross_entropy<float>(dec.forward(embeds, batch, false), dec.head_weight(),
                                                       model::next_token_targets(labels, batch), ce, lm);
  loss::cuda::LmHeadCeOptions o;
  o.label_smoothing = 0.1;
  o.sum_reduction = true;
  o.chunk_size = 16;
  model::cuda::DecoderBatch b{2, 7, batch.attention_mask};
  const model::DecoderLossTotals got = dev.loss(upload(embeds), b, labels, o);
  CHECK(got.valid_tokens == want.valid_tokens);
  CHECK(std::fabs(got.loss - want.loss_sum) <= 1e-5 * std::fabs(want.loss_sum));
  for (const std::uint64_t s : dev.dropout_steps()) CHECK(s == 0);  // an evaluation draws no mask
  // The same call again: the same bits.
  CHECK(dev.loss(upload(embeds), b, labels, o).loss == got.loss);
}

TEST_CASE("cuda decoder evaluation loss equals Decoder::forward without dropout + the LM-head loss", "[decoder]") {
  for (const std::string& name : kConfigs) check_eval_loss<lora::DenseWeight>(name, false);
  check_eval_loss<quant::NF4Weight>(kConfigs[0], true);
}

TEST_CASE("cuda generation: greedy and beam search over the device KV cache choose the CPU's tokens", "[decoder]") {
  for (const std::string& name : kConfigs) {
    INFO(name);
    const model::DecoderConfig config = config_named(name);
    auto dec = make_decoder(config, 0.1, 6);
    vidlora::cuda::GemmRunner gemm;
    model::cuda::DecoderModel dev(gemm, model::export_decoder_weights(dec));
    model::cuda::CachedDecoder<decltype(dec)> cached(dev, dec);
    const Matrix prompt = model::random_normal(12, config.hidden_size, 1.0, 6, 4);

    model::GenerationOptions greedy;
    greedy.max_new_tokens = 10;
    // How far the CPU's chosen token is ahead of the next one at each step: a margin far above the 1e-5 the device's
    // logits may differ by, so equal ids are the expected outcome (a tie would make either choice right).
    double margin = INFINITY;
    {
      auto cache = dec.make_cache();
      Matrix h = dec.forward_cached(prompt, cache);
      for (int s = 0; s < greedy.max_new_tokens; ++s) {
        const Matrix lg = dec.logits(h.bottomRows(1));
        std::vector<float> row(lg.data(), lg.data() + lg.cols());
        std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<float>());
        margin = std::min(margin, static_cast<double>(row[0] - row[1]));
        Eigen::Index id = 0;
        lg.row(0).maxCoeff(&id);
        const int one[1] = {static_cast<int>(id)};
        h = dec.forward_cached(dec.embed(one), cache);
      }
    }
    INFO("smallest top-1 / top-2 logit gap on the CPU's greedy path: " << margin);
    const auto want = model::generate(dec, prompt, greedy);
    const auto got = model::generate(cached, prompt, greedy);
    CHECK(got.ids == want.ids);
    CHECK(std::fabs(got.score - want.score) <= 1e-4 * std::fabs(want.score) + 1e-6);

    model::GenerationOptions beam;
    beam.max_new_tokens = 8;
    beam.num_beams = 3;
    beam.repetition_penalty = 1.2;
    beam.no_repeat_ngram_size = 2;
    beam.eos_token_id = 5;
    const auto want_beam = model::generate(dec, prompt, beam);
    const auto got_beam = model::generate(cached, prompt, beam);
    CHECK(got_beam.ids == want_beam.ids);
    CHECK(got_beam.finished == want_beam.finished);
    CHECK(std::fabs(got_beam.score - want_beam.score) <= 1e-4 * std::fabs(want_beam.score) + 1e-6);
    for (const std::uint64_t s : dev.dropout_steps()) CHECK(s == 0);
  }
}
