#pragma once
// Random decoder weights under Hugging Face key names (model.layers.N…), for tests and benchmarks
// that need a model of a given shape without a checkpoint: linears ~ N(0, 1/in), norms ~ 1 + N(0, 0.1²),
// embeddings ~ N(0, 1), biases ~ N(0, 0.1²). Deterministic in `seed`.

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <vidlora/core/matrix.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/tensor_source.hpp>

namespace vidlora::model {

inline TensorTable random_decoder_weights(const DecoderConfig& c, std::uint64_t seed) {
  TensorTable map;
  std::uint64_t stream = 0;
  auto mat = [&](const std::string& name, Eigen::Index rows, Eigen::Index cols, double std) {
    map.insert(name, random_normal(rows, cols, std, seed, stream++));
  };
  auto vec = [&](const std::string& name, Eigen::Index n, double mean, double std) {
    Matrix v = random_normal(1, n, std, seed, stream++);
    v.array() += static_cast<float>(mean);
    map.insert(name, {n}, std::vector<float>(v.data(), v.data() + v.size()));
  };
  const Eigen::Index d = c.hidden_size, inter = c.intermediate_size, qf = c.q_features(), kvf = c.kv_features();
  mat("model.embed_tokens.weight", c.vocab_size, d, 1.0);
  if (!c.tie_word_embeddings) mat("lm_head.weight", c.vocab_size, d, 1.0 / std::sqrt(double(d)));
  vec("model.norm.weight", d, 1.0, 0.1);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    vec(p + "input_layernorm.weight", d, 1.0, 0.1);
    vec(p + "post_attention_layernorm.weight", d, 1.0, 0.1);
    mat(p + "self_attn.q_proj.weight", qf, d, 1.0 / std::sqrt(double(d)));
    mat(p + "self_attn.k_proj.weight", kvf, d, 1.0 / std::sqrt(double(d)));
    mat(p + "self_attn.v_proj.weight", kvf, d, 1.0 / std::sqrt(double(d)));
    mat(p + "self_attn.o_proj.weight", d, qf, 1.0 / std::sqrt(double(qf)));
    mat(p + "mlp.gate_proj.weight", inter, d, 1.0 / std::sqrt(double(d)));
    mat(p + "mlp.up_proj.weight", inter, d, 1.0 / std::sqrt(double(d)));
    mat(p + "mlp.down_proj.weight", d, inter, 1.0 / std::sqrt(double(inter)));
    if (c.qkv_bias()) {
      vec(p + "self_attn.q_proj.bias", qf, 0.0, 0.1);
      vec(p + "self_attn.k_proj.bias", kvf, 0.0, 0.1);
      vec(p + "self_attn.v_proj.bias", kvf, 0.0, 0.1);
    }
    if (c.o_bias()) vec(p + "self_attn.o_proj.bias", d, 0.0, 0.1);
    if (c.qk_norm()) {
      vec(p + "self_attn.q_norm.weight", c.head_dim, 1.0, 0.1);
      vec(p + "self_attn.k_norm.weight", c.head_dim, 1.0, 0.1);
    }
  }
  return map;
}

// A small LLaMA-shaped config (tests, benchmarks).
inline DecoderConfig llama_config(int hidden, int intermediate, int layers, int heads, int kv_heads, int vocab) {
  DecoderConfig c;
  c.architecture = Architecture::Llama;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = kv_heads;
  c.head_dim = hidden / heads;
  c.vocab_size = vocab;
  c.validate();
  return c;
}

}  // namespace vidlora::model
