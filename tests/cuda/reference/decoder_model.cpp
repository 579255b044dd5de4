#include "decoder_model.hpp"

#include <cstdint>
#include <string>

#include <vidlora/core/rng.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/decoder_weights_export.hpp>
#include <vidlora/model/random_weights.hpp>
#include <vidlora/optim/adamw_update.hpp>
#include <vidlora/optim/clip.hpp>
#include <vidlora/quant/quantized_weight.hpp>

namespace ref {
namespace {

template <class Base>
DecoderModelRun run(const DecoderModelCase& c) {
  using vidlora::Matrix;
  namespace model = vidlora::model;
  model::DecoderConfig config = model::llama_config(c.hidden, c.intermediate, c.layers, c.heads, c.kv_heads, c.vocab);
  if (c.qwen3 || c.qwen2) config.architecture = c.qwen3 ? model::Architecture::Qwen3 : model::Architecture::Qwen2;
  scaled_rope(config, c.rope_type);
  config.validate();
  model::DecoderOptions options;
  options.target_modules = c.target_modules;
  options.lora.dropout = c.dropout;
  options.lora.seed = c.seed;
  model::Decoder<16, 32, Base> decoder(config, model::random_decoder_weights(config, c.seed), options);
  std::uint64_t stream = 100;
  decoder.for_each_lora([&](const std::string&, auto& lin) {  // B = 0 at init would leave half the gradients zero
    lin.lora_B() = vidlora::model::random_normal(lin.lora_B().rows(), lin.lora_B().cols(), 0.05, c.seed, stream++);
  });

  DecoderModelRun r;
  r.weights = model::export_decoder_weights(decoder);
  const long tokens = c.batch * c.seq_len;
  const Matrix embeds = vidlora::model::random_normal(tokens, c.hidden, 1.0, c.seed, 7);
  r.embeds.assign(static_cast<std::size_t>(tokens * c.hidden), 0.0f);
  for (long i = 0; i < tokens; ++i)
    for (long j = 0; j < c.hidden; ++j) r.embeds[static_cast<std::size_t>(i * c.hidden + j)] = embeds(i, j);
  r.labels.resize(static_cast<std::size_t>(tokens));
  for (long i = 0; i < tokens; ++i)
    r.labels[static_cast<std::size_t>(i)] =
        static_cast<int>(vidlora::random_uniform(c.seed, 8, static_cast<std::uint64_t>(i)) *
                         static_cast<float>(c.vocab)) %
        c.vocab;
  for (int i = 0; i < c.ignored_labels && i < c.seq_len; ++i) r.labels[static_cast<std::size_t>(i)] = -100;
  model::SequenceBatch batch;
  batch.batch = c.batch;
  batch.seq_len = c.seq_len;
  if (c.pad_last > 0) {
    batch.attention_mask.assign(static_cast<std::size_t>(tokens), 1);
    for (long t = c.seq_len - c.pad_last; t < c.seq_len; ++t) {
      const auto i = static_cast<std::size_t>((c.batch - 1) * c.seq_len + t);
      batch.attention_mask[i] = 0;
      r.labels[i] = -100;
    }
  }
  r.attention_mask = batch.attention_mask;

  vidlora::loss::CrossEntropyOptions ce;
  ce.label_smoothing = c.label_smoothing;
  vidlora::loss::LmHeadOptions lm;
  lm.chunk_size = c.chunk;

  // AdamW state per LoRA factor, in DecoderModel::lora_tensors order (layer, slot, A then B).
  std::vector<Matrix*> values, grads;
  decoder.for_each_lora([&](const std::string&, auto& lin) {
    values.push_back(&lin.lora_A());
    grads.push_back(&lin.grad_A());
    values.push_back(&lin.lora_B());
    grads.push_back(&lin.grad_B());
  });
  std::vector<Matrix> m, v;
  for (Matrix* p : values) {
    m.push_back(Matrix::Zero(p->rows(), p->cols()));
    v.push_back(Matrix::Zero(p->rows(), p->cols()));
  }
  for (int s = 0; s < c.steps; ++s) {
    decoder.zero_grad();
    const auto res = decoder.loss_and_backward(embeds, batch, r.labels, ce, lm);
    r.losses.push_back(res.loss);
    if (s == 0) {
      r.valid_tokens = res.valid_tokens;
      for (const Matrix* g : grads) {
        // row-major, as the device stores [rows, cols]
        std::vector<float> flat(static_cast<std::size_t>(g->size()));
        for (long i = 0; i < g->rows(); ++i)
          for (long j = 0; j < g->cols(); ++j) flat[static_cast<std::size_t>(i * g->cols() + j)] = (*g)(i, j);
        r.grads.push_back(std::move(flat));
      }
      r.grad_embeds.resize(static_cast<std::size_t>(tokens * c.hidden));
      for (long i = 0; i < tokens; ++i)
        for (long j = 0; j < c.hidden; ++j)
          r.grad_embeds[static_cast<std::size_t>(i * c.hidden + j)] = res.grad_embeds(i, j);
    }
    if (s + 1 == c.steps) break;
    std::vector<vidlora::optim::Parameter> params;
    for (std::size_t i = 0; i < values.size(); ++i) params.push_back({"t" + std::to_string(i), values[i], grads[i]});
    vidlora::optim::clip_grad_norm(std::span<const vidlora::optim::Parameter>(params), c.max_grad_norm);
    const auto step = vidlora::optim::AdamWStepParams::make(c.lr, c.weight_decay, 0.9, 0.999, 1e-8, s + 1);
    for (std::size_t i = 0; i < values.size(); ++i)
      vidlora::optim::adamw_update_range(values[i]->data(), grads[i]->data(), m[i].data(), v[i].data(),
                                         static_cast<std::ptrdiff_t>(values[i]->size()), step);
  }
  return r;
}

}  // namespace

void scaled_rope(vidlora::model::DecoderConfig& config, const std::string& rope_type) {
  namespace model = vidlora::model;
  model::RopeScaling& s = config.rope_scaling;
  s = {};
  if (rope_type == "default") return;
  if (rope_type == "linear") {
    s.type = model::RopeType::Linear;
    s.factor = 2.0;
  } else if (rope_type == "dynamic") {
    s.type = model::RopeType::Dynamic;
    s.factor = 2.0;
    config.max_position_embeddings = 4;
  } else if (rope_type == "yarn") {
    s.type = model::RopeType::Yarn;
    s.factor = 4.0;
    s.original_max_position_embeddings = 4096;
  } else if (rope_type == "llama3") {
    s.type = model::RopeType::Llama3;
    s.factor = 8.0;
    s.low_freq_factor = 1.0;
    s.high_freq_factor = 4.0;
    s.original_max_position_embeddings = 64;
  } else {
    vidlora::fail("scaled_rope: unknown rope_type \"{}\"", rope_type);
  }
  if (config.max_position_embeddings <= 0) config.max_position_embeddings = 128;
}

DecoderModelRun decoder_model(const DecoderModelCase& c) {
  return c.nf4 ? run<vidlora::quant::NF4Weight>(c) : run<vidlora::lora::DenseWeight>(c);
}

}  // namespace ref
