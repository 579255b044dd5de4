#pragma once
// A seeded random CLIP vision tower (CLIPVisionModel key names under "vision_model."): a generic
// frozen encoder that knows nothing of any caption grammar (the demo's stage 0 encoder).

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <vidlora/core/matrix.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/tensor_source.hpp>

namespace vidlora::train {

// A seeded random CLIP vision tower (CLIPVisionModel key names under "vision_model."), a generic
// frozen encoder that knows nothing of any caption grammar. Weights ~ N(0, 0.02²) as CLIP's init
// (patch embedding N(0, 1/fan_in)), LayerNorms at 1 / 0.
inline model::TensorTable random_clip_vision_weights(const model::ClipVisionConfig& c, std::uint64_t seed) {
  model::TensorTable t;
  std::uint64_t stream = 1000;
  const Eigen::Index d = c.hidden_size, inter = c.intermediate_size, ps = c.patch_size, ch = c.num_channels;
  const std::string p = "vision_model.";
  auto normal = [&](Eigen::Index r, Eigen::Index k, double std) { return model::random_normal(r, k, std, seed, stream++); };
  auto vec = [&](const std::string& name, Eigen::Index n, float value) {
    t.insert(name, {n}, std::vector<float>(static_cast<std::size_t>(n), value));
  };
  {
    const Matrix w = normal(d, ch * ps * ps, 1.0 / std::sqrt(static_cast<double>(ch * ps * ps)));
    t.insert(p + "embeddings.patch_embedding.weight", {d, ch, ps, ps}, std::vector<float>(w.data(), w.data() + w.size()));
  }
  {
    const Matrix cls = normal(1, d, 0.02);
    t.insert(p + "embeddings.class_embedding", {d}, std::vector<float>(cls.data(), cls.data() + cls.size()));
  }
  t.insert(p + "embeddings.position_embedding.weight", normal(c.num_patches() + 1, d, 0.02));
  vec(p + "pre_layrnorm.weight", d, 1.0f);
  vec(p + "pre_layrnorm.bias", d, 0.0f);
  vec(p + "post_layernorm.weight", d, 1.0f);
  vec(p + "post_layernorm.bias", d, 0.0f);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string lp = fmt::format("{}encoder.layers.{}.", p, l);
    for (const char* ln : {"layer_norm1", "layer_norm2"}) {
      vec(lp + ln + ".weight", d, 1.0f);
      vec(lp + ln + ".bias", d, 0.0f);
    }
    for (const char* m : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      t.insert(lp + "self_attn." + m + ".weight", normal(d, d, 1.0 / std::sqrt(static_cast<double>(d))));
      vec(lp + "self_attn." + m + ".bias", d, 0.0f);
    }
    t.insert(lp + "mlp.fc1.weight", normal(inter, d, 1.0 / std::sqrt(static_cast<double>(d))));
    vec(lp + "mlp.fc1.bias", inter, 0.0f);
    t.insert(lp + "mlp.fc2.weight", normal(d, inter, 1.0 / std::sqrt(static_cast<double>(inter))));
    vec(lp + "mlp.fc2.bias", d, 0.0f);
  }
  return t;
}

}  // namespace vidlora::train

namespace vidlora {
using train::random_clip_vision_weights;
}  // namespace vidlora
