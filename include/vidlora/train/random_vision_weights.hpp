#pragma once
// A seeded random CLIP vision tower (CLIPVisionModel key names under "vision_model."): a generic
// frozen encoder that knows nothing of any caption grammar (the demo's stage 0 encoder).

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/tensor_source.hpp>

namespace vidlora::train {

// The position embedding of a random tower.
enum class RandomVisionPositions {
  clip_init,  // N(0, 0.02²), CLIP's initialisation: next to the patch embedding (std ~1) it is ~2 % of a
              // token, so the frozen features say little about where in the frame a patch is
  sincos_2d,  // fixed 2-D sine-cosine (as MAE's get_2d_sincos_pos_embed, rows first): half of the features
              // code the patch's row, half its column, with values in [-1, 1]; CLS gets 0
};

inline RandomVisionPositions random_vision_positions_from_string(const std::string& name) {
  if (name == "clip_init") return RandomVisionPositions::clip_init;
  if (name == "sincos_2d") return RandomVisionPositions::sincos_2d;
  fail("unknown position embedding '{}' for a random vision tower (known: clip_init, sincos_2d)", name);
}

// A fixed 2-D sine-cosine position embedding for a grid×grid patch grid, [grid², dim] (dim a multiple of
// 4), patches row by row: per axis dim/4 frequencies ω_i = 10000^(−i/(dim/4)); the patch in row y,
// column x gets [sin(y·ω), cos(y·ω), sin(x·ω), cos(x·ω)]. MAE's get_2d_sincos_pos_embed has the same
// values with the two halves swapped (its meshgrid puts the column first).
inline Matrix sincos_2d_position_embedding(int grid, Eigen::Index dim) {
  require(dim % 4 == 0, "a 2-D sine-cosine position embedding needs a width divisible by 4, got {}", dim);
  const Eigen::Index quarter = dim / 4;
  Matrix e(static_cast<Eigen::Index>(grid) * grid, dim);
  for (int r = 0; r < grid; ++r)
    for (int col = 0; col < grid; ++col) {
      const Eigen::Index row = static_cast<Eigen::Index>(r) * grid + col;
      for (Eigen::Index i = 0; i < quarter; ++i) {
        const double omega = std::pow(10000.0, -static_cast<double>(i) / static_cast<double>(quarter));
        e(row, i) = static_cast<float>(std::sin(r * omega));
        e(row, quarter + i) = static_cast<float>(std::cos(r * omega));
        e(row, 2 * quarter + i) = static_cast<float>(std::sin(col * omega));
        e(row, 3 * quarter + i) = static_cast<float>(std::cos(col * omega));
      }
    }
  return e;
}

// A seeded random CLIP vision tower (CLIPVisionModel key names under "vision_model."), a generic
// frozen encoder that knows nothing of any caption grammar. Weights ~ N(0, 0.02²) as CLIP's init
// (patch embedding N(0, 1/fan_in)), LayerNorms at 1 / 0; the position embedding as `positions` says.
inline model::TensorTable random_clip_vision_weights(
    const model::ClipVisionConfig& c, std::uint64_t seed,
    RandomVisionPositions positions = RandomVisionPositions::clip_init) {
  model::TensorTable t;
  std::uint64_t stream = 1000;
  const Eigen::Index d = c.hidden_size, inter = c.intermediate_size, ps = c.patch_size, ch = c.num_channels;
  const std::string p = "vision_model.";
  auto normal = [&](Eigen::Index r, Eigen::Index k, double std) {
    return model::random_normal(r, k, std, seed, stream++);
  };
  auto vec = [&](const std::string& name, Eigen::Index n, float value) {
    t.insert(name, {n}, std::vector<float>(static_cast<std::size_t>(n), value));
  };
  {
    const Matrix w = normal(d, ch * ps * ps, 1.0 / std::sqrt(static_cast<double>(ch * ps * ps)));
    t.insert(p + "embeddings.patch_embedding.weight", {d, ch, ps, ps},
             std::vector<float>(w.data(), w.data() + w.size()));
  }
  {
    const Matrix cls = normal(1, d, 0.02);
    t.insert(p + "embeddings.class_embedding", {d}, std::vector<float>(cls.data(), cls.data() + cls.size()));
  }
  {
    Matrix pos = normal(c.num_patches() + 1, d, 0.02);  // drawn in both cases: the other weights stay the same
    if (positions == RandomVisionPositions::sincos_2d) {
      pos.row(0).setZero();
      pos.bottomRows(c.num_patches()) = sincos_2d_position_embedding(c.grid(), d);
    }
    t.insert(p + "embeddings.position_embedding.weight", pos);
  }
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
