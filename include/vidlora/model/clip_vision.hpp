#pragma once
// ClipVision: the frozen CLIP vision tower of LLaVA, forward only, from CLIPVisionModel weights.
//   patches (conv k=s=patch as a matmul) → [CLS; patches] + position embeddings → pre_layrnorm
//   → encoder layers (x += attn(ln1(x)); x += fc2(quick_gelu(fc1(ln2(x)))))
// The features are hidden_states[feature_layer] (LLaVA: -2, the input of the last layer), with
// the CLS token dropped ("default" select strategy): [frames · patches, hidden], 576 per 336² frame
// for ViT-L/14-336. With several feature layers (vision_feature_layer as a list) their hidden states
// are concatenated along the features, in list order, as transformers does: [frames · patches,
// hidden · layers]. post_layernorm is not part of LLaVA's features and is not applied.

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/model/attention.hpp>
#include <vidlora/model/clip_layer_steps.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/elementwise.hpp>
#include <vidlora/model/tensor_source.hpp>

namespace vidlora::model {

struct ClipVisionOptions {
  int feature_layer = -2;  // index into hidden_states (0 = embeddings after pre_layrnorm; negative from the end)
  bool drop_cls = true;
  std::vector<int> feature_layers;  // several indices, features concatenated; empty: {feature_layer}

  // LLaVA's choice: vision_feature_layer (an index or a list) and vision_feature_select_strategy.
  static ClipVisionOptions from(const LlavaConfig& c) {
    ClipVisionOptions o;
    o.feature_layer = c.vision_feature_layer;
    o.feature_layers = c.vision_feature_layers;
    o.drop_cls = c.drop_cls;
    return o;
  }
};

// LayerNorm over each row (biased variance, statistics in float64).
inline Matrix layer_norm(const Matrix& x, const Vector& weight, const Vector& bias, double eps) {
  Matrix y(x.rows(), x.cols());
  const double n = static_cast<double>(x.cols());
  for (Eigen::Index i = 0; i < x.rows(); ++i) {
    const auto row = x.row(i).cast<double>();
    const double mean = row.sum() / n;
    const double var = (row.array() - mean).square().sum() / n;
    const double inv = 1.0 / std::sqrt(var + eps);
    y.row(i) =
        (((row.array() - mean) * inv).cast<float>() * weight.transpose().array() + bias.transpose().array()).matrix();
  }
  return y;
}

// One encoder layer's weights (row-major [out, in] as in PyTorch; biases as vectors).
struct ClipLayerWeights {
  Vector ln1_w, ln1_b, ln2_w, ln2_b;
  Matrix attn_w[4];  // q, k, v, out [hidden, hidden]
  Vector attn_b[4];
  Matrix fc1_w, fc2_w;
  Vector fc1_b, fc2_b;
  const Matrix& weight(ClipLinear m) const {
    const int i = static_cast<int>(m);
    return i < 4 ? attn_w[i] : (m == ClipLinear::fc1 ? fc1_w : fc2_w);
  }
  const Vector& bias(ClipLinear m) const {
    const int i = static_cast<int>(m);
    return i < 4 ? attn_b[i] : (m == ClipLinear::fc1 ? fc1_b : fc2_b);
  }
  const Vector& norm_weight(ClipNorm n) const { return n == ClipNorm::ln1 ? ln1_w : ln2_w; }
  const Vector& norm_bias(ClipNorm n) const { return n == ClipNorm::ln1 ? ln1_b : ln2_b; }
};

class ClipVision {
 public:
  using Layer = ClipLayerWeights;

  // Loads the layers the feature layer needs; the key prefix is detected (vision_tower.vision_model.,
  // vision_tower., model.vision_tower.…, vision_model.).
  template <TensorSource S>
  ClipVision(const ClipVisionConfig& config, const S& source, ClipVisionOptions options = {})
      : config_(config), options_(std::move(options)) {
    const int layers = config_.num_hidden_layers;
    if (options_.feature_layers.empty()) options_.feature_layers = {options_.feature_layer};
    for (const int requested : options_.feature_layers) {
      const int state = requested < 0 ? layers + 1 + requested : requested;
      require(state >= 0 && state <= layers,
              "ClipVision: feature_layer {} is outside the {} hidden states of a {}-layer encoder", requested,
              layers + 1, layers);
      states_.push_back(state);
      run_layers_ = std::max(run_layers_, state);
    }
    const std::string p = find_prefix(source,
                                      {"vision_tower.vision_model.", "vision_tower.",
                                       "model.vision_tower.vision_model.", "model.vision_tower.", "vision_model.", ""},
                                      "embeddings.patch_embedding.weight", "CLIP vision tower");
    const Eigen::Index d = config_.hidden_size, c = config_.num_channels, ps = config_.patch_size;
    const std::vector<float> conv = load_tensor(source, p + "embeddings.patch_embedding.weight", {d, c, ps, ps});
    patch_w_ = Eigen::Map<const Matrix>(conv.data(), d, c * ps * ps);
    class_emb_ = load_vector(source, p + "embeddings.class_embedding", d);
    pos_emb_ = load_matrix(source, p + "embeddings.position_embedding.weight", config_.num_patches() + 1, d);
    pre_w_ = load_vector(source, p + "pre_layrnorm.weight", d);
    pre_b_ = load_vector(source, p + "pre_layrnorm.bias", d);
    const Eigen::Index inter = config_.intermediate_size;
    for (int l = 0; l < run_layers_; ++l) {
      const std::string lp = p + "encoder.layers." + std::to_string(l) + ".";
      Layer L;
      L.ln1_w = load_vector(source, lp + "layer_norm1.weight", d);
      L.ln1_b = load_vector(source, lp + "layer_norm1.bias", d);
      L.ln2_w = load_vector(source, lp + "layer_norm2.weight", d);
      L.ln2_b = load_vector(source, lp + "layer_norm2.bias", d);
      const char* names[4] = {"q_proj", "k_proj", "v_proj", "out_proj"};
      for (int k = 0; k < 4; ++k) {
        L.attn_w[k] = load_matrix(source, lp + "self_attn." + names[k] + ".weight", d, d);
        L.attn_b[k] = load_vector(source, lp + "self_attn." + names[k] + ".bias", d);
      }
      L.fc1_w = load_matrix(source, lp + "mlp.fc1.weight", inter, d);
      L.fc1_b = load_vector(source, lp + "mlp.fc1.bias", inter);
      L.fc2_w = load_matrix(source, lp + "mlp.fc2.weight", d, inter);
      L.fc2_b = load_vector(source, lp + "mlp.fc2.bias", d);
      layers_.push_back(std::move(L));
    }
  }

  const ClipVisionConfig& config() const { return config_; }
  const ClipVisionOptions& options() const { return options_; }
  // Tokens per frame in the output (576 for ViT-L/14-336 with the CLS dropped).
  Eigen::Index tokens_per_frame() const { return config_.num_patches() + (options_.drop_cls ? 0 : 1); }
  // Features per token: hidden size times the number of feature layers.
  Eigen::Index feature_width() const {
    return static_cast<Eigen::Index>(config_.hidden_size) * static_cast<Eigen::Index>(states_.size());
  }

  // Bytes of the weights held (float32; only the layers up to the deepest feature layer are loaded).
  std::size_t weight_bytes() const {
    Eigen::Index n = patch_w_.size() + class_emb_.size() + pos_emb_.size() + pre_w_.size() + pre_b_.size();
    for (const auto& L : layers_) {
      n += L.ln1_w.size() + L.ln1_b.size() + L.ln2_w.size() + L.ln2_b.size() + L.fc1_w.size() + L.fc2_w.size() +
           L.fc1_b.size() + L.fc2_b.size();
      for (int k = 0; k < 4; ++k) n += L.attn_w[k].size() + L.attn_b[k].size();
    }
    return static_cast<std::size_t>(n) * sizeof(float);
  }

  // The weights as loaded (what model::cuda::ClipVisionCuda uploads): the patch embedding [hidden,
  // channels·patch²], the class embedding, the position embeddings [patches + 1, hidden], pre_layrnorm, and the
  // layers up to the deepest feature layer.
  const Matrix& patch_weight() const { return patch_w_; }
  const Vector& class_embedding() const { return class_emb_; }
  const Matrix& position_embedding() const { return pos_emb_; }
  const Vector& pre_norm_weight() const { return pre_w_; }
  const Vector& pre_norm_bias() const { return pre_b_; }
  const std::vector<Layer>& layers() const { return layers_; }
  // The hidden_states indices (>= 0) of the feature layers, in output order.
  const std::vector<int>& feature_states() const { return states_; }

  // The values of one frame's patches: row = patch (row-major over the grid), column = (channel, ky, kx), the
  // layout of the patch embedding's flattened kernel. img: [channels, image_size, image_size].
  void patches_of(const float* img, Eigen::Ref<Matrix> patches) const {
    const Eigen::Index c = config_.num_channels, s = config_.image_size, ps = config_.patch_size, g = config_.grid();
    for (Eigen::Index py = 0; py < g; ++py)
      for (Eigen::Index px = 0; px < g; ++px)
        for (Eigen::Index ch = 0; ch < c; ++ch)
          for (Eigen::Index ky = 0; ky < ps; ++ky)
            for (Eigen::Index kx = 0; kx < ps; ++kx)
              patches(py * g + px, (ch * ps + ky) * ps + kx) = img[(ch * s + py * ps + ky) * s + px * ps + kx];
  }

  // Checks `pixels` against `frames` frames of [channels, image_size, image_size] (`who` names the caller).
  void check_pixels(std::span<const float> pixels, Eigen::Index frames, const char* who) const {
    const Eigen::Index c = config_.num_channels, s = config_.image_size;
    require(frames > 0 && static_cast<Eigen::Index>(pixels.size()) == frames * c * s * s,
            "{}: {} values for {} frames of [{}, {}, {}]", who, pixels.size(), frames, c, s, s);
  }

  // pixels: frames × [channels, image_size, image_size], channel-first (CLIP-normalised, as pixel_values).
  // Returns [frames · tokens_per_frame(), feature_width()].
  Matrix features(std::span<const float> pixels, Eigen::Index frames) const {
    check_pixels(pixels, frames, "ClipVision::features");
    const Eigen::Index c = config_.num_channels, s = config_.image_size, ps = config_.patch_size;
    const Eigen::Index per_frame = c * s * s;
    const Eigen::Index tpf = tokens_per_frame(), np = config_.num_patches();
    const Eigen::Index d = config_.hidden_size;
    Matrix out(frames * tpf, feature_width());
    for (Eigen::Index f = 0; f < frames; ++f) {
      Matrix patches(np, c * ps * ps);
      patches_of(pixels.data() + f * per_frame, patches);
      Matrix x(np + 1, config_.hidden_size);
      x.row(0) = class_emb_.transpose();
      x.bottomRows(np).noalias() = patches * patch_w_.transpose();
      x += pos_emb_;
      x = layer_norm(x, pre_w_, pre_b_, config_.layer_norm_eps);
      const auto take = [&](int state) {  // hidden_states[state] into every column block that asks for it
        for (std::size_t k = 0; k < states_.size(); ++k)
          if (states_[k] == state)
            out.block(f * tpf, static_cast<Eigen::Index>(k) * d, tpf, d) = options_.drop_cls ? x.bottomRows(np) : x;
      };
      take(0);
      for (int l = 0; l < run_layers_; ++l) {
        x = layer_forward(layers_[static_cast<std::size_t>(l)], x);
        take(l + 1);
      }
    }
    return out;
  }

 private:
  // The CPU executor of clip_layer_forward_steps for one frame.
  struct CpuExecutor {
    using tensor_type = Matrix;
    const Layer& L;
    const ClipVisionConfig& config;
    Matrix layer_norm(const Matrix& x, ClipNorm n) const {
      return model::layer_norm(x, L.norm_weight(n), L.norm_bias(n), config.layer_norm_eps);
    }
    Matrix linear(ClipLinear m, const Matrix& x) const {
      Matrix y = x * L.weight(m).transpose();
      y.rowwise() += L.bias(m).transpose();
      return y;
    }
    Matrix attention(const Matrix& q, const Matrix& k, const Matrix& v) const {
      const AttentionShape shape{config.num_attention_heads, config.num_attention_heads, config.head_dim()};
      // Bidirectional: every query sees every key (q_offset past the last key disables the causal cut).
      return attention_forward<float>(q, k, v, shape, q.rows(), {});
    }
    void quick_gelu(Matrix& m) const {
      for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = model::quick_gelu(m.data()[i]);
    }
    Matrix add(const Matrix& a, const Matrix& b) const { return a + b; }
  };

  Matrix layer_forward(const Layer& L, const Matrix& x) const {
    CpuExecutor exec{L, config_};
    return clip_layer_forward_steps(exec, x);
  }

  ClipVisionConfig config_;
  ClipVisionOptions options_;
  std::vector<int> states_;  // hidden_states indices (>= 0) of the feature layers, in output order
  int run_layers_ = 0;       // encoder layers that run: the deepest feature layer
  Matrix patch_w_;           // [hidden, channels·patch²]
  Vector class_emb_;
  Matrix pos_emb_;  // [patches + 1, hidden]
  Vector pre_w_, pre_b_;
  std::vector<Layer> layers_;
};

}  // namespace vidlora::model
