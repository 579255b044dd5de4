#pragma once
// Projectors from vision features [tokens, vision_hidden] to decoder embeddings [tokens, hidden],
// trained in both stages: Linear (y = x·Wᵀ + b, or x·Wᵀ without a bias) and Mlp2xGelu (LLaVA's
// multi_modal_projector: linear_1 → GELU (exact erf) → linear_2; bias-free when config.json has
// multimodal_projector_bias: false). Gradients accumulate (+=) like PyTorch's .grad.

#include <cmath>
#include <concepts>
#include <cstdint>
#include <string>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/rng.hpp>
#include <vidlora/model/config.hpp>
#include <vidlora/model/elementwise.hpp>
#include <vidlora/model/tensor_source.hpp>

namespace vidlora::model {

// What the trainer needs from a projector.
template <class P>
concept Projector = requires(P& p, const Matrix& m) {
  { p.forward(m) } -> std::same_as<Matrix>;   // [tokens, in] -> [tokens, out]; caches for backward
  { p.backward(m) } -> std::same_as<Matrix>;  // d out -> d in; parameter grads accumulate
  p.zero_grad();
  { p.in_features() } -> std::convertible_to<Eigen::Index>;
  { p.out_features() } -> std::convertible_to<Eigen::Index>;
};

// A trainable y = x·Wᵀ + b (or x·Wᵀ: a bias-free Linear has an empty bias()).
class Linear {
 public:
  // PyTorch's nn.Linear initialisation: W and b ~ U(-1/√in, 1/√in).
  Linear(Eigen::Index in, Eigen::Index out, std::uint64_t seed, std::uint64_t stream = 0, bool bias = true)
      : has_bias_(bias) {
    require(in > 0 && out > 0, "Linear projector: in {} and out {} must be > 0", in, out);
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    CounterRng rng(seed, stream);
    w_.resize(out, in);
    b_.resize(bias ? out : 0);
    for (Eigen::Index i = 0; i < w_.size(); ++i) w_.data()[i] = static_cast<float>(rng.uniform(-bound, bound));
    for (Eigen::Index i = 0; i < b_.size(); ++i) b_(i) = static_cast<float>(rng.uniform(-bound, bound));
    zero_grad();
  }
  Linear(Matrix weight, Vector bias) : w_(std::move(weight)), b_(std::move(bias)), has_bias_(true) {
    require(w_.size() > 0 && b_.size() == w_.rows(), "Linear projector: weight {} and bias [{}] disagree",
            shape_string(w_), b_.size());
    zero_grad();
  }
  explicit Linear(Matrix weight) : w_(std::move(weight)), has_bias_(false) {
    require(w_.size() > 0, "Linear projector: empty weight {}", shape_string(w_));
    zero_grad();
  }
  // Reads <prefix>weight [out, in] and <prefix>bias [out]; bias = false: no <prefix>bias may exist.
  template <TensorSource S>
  static Linear load(const S& source, const std::string& prefix, Eigen::Index in, Eigen::Index out, bool bias = true) {
    if (!bias) {
      require(!source.contains(prefix + "bias"),
              "Linear projector: the checkpoint has \"{}bias\" but the config says the projector has no bias "
              "(multimodal_projector_bias: false)",
              prefix);
      return Linear(load_matrix(source, prefix + "weight", out, in));
    }
    return Linear(load_matrix(source, prefix + "weight", out, in), load_vector(source, prefix + "bias", out));
  }

  Eigen::Index in_features() const { return w_.cols(); }
  Eigen::Index out_features() const { return w_.rows(); }
  bool has_bias() const { return has_bias_; }
  Matrix& weight() { return w_; }  // [out, in]
  Vector& bias() { return b_; }    // [out], or empty without a bias
  const Matrix& weight() const { return w_; }
  const Vector& bias() const { return b_; }
  Matrix& grad_weight() { return gw_; }
  Vector& grad_bias() { return gb_; }
  const Matrix& grad_weight() const { return gw_; }
  const Vector& grad_bias() const { return gb_; }
  void zero_grad() {
    gw_ = Matrix::Zero(w_.rows(), w_.cols());
    gb_ = Vector::Zero(b_.size());
  }

  Matrix apply(const Matrix& x) const {
    require(x.cols() == in_features(), "Linear projector: input {} does not match weight {}", shape_string(x),
            shape_string(w_));
    Matrix y = x * w_.transpose();
    if (has_bias_) y.rowwise() += b_.transpose();
    return y;
  }
  Matrix forward(const Matrix& x) {
    x_ = x;
    return apply(x);
  }
  Matrix backward(const Matrix& dy) {
    require(dy.rows() == x_.rows() && dy.cols() == out_features(),
            "Linear projector: gradient {} does not match the last forward [{}, {}]", shape_string(dy), x_.rows(),
            out_features());
    gw_.noalias() += dy.transpose() * x_;
    if (has_bias_) gb_ += dy.colwise().sum().transpose();
    return dy * w_;
  }

 private:
  Matrix w_, gw_;
  Vector b_, gb_;
  bool has_bias_ = true;
  Matrix x_;  // last forward input
};

// LLaVA's multi_modal_projector: linear_2(gelu(linear_1(x))).
class Mlp2xGelu {
 public:
  // vision_hidden: the projector's input width (vision hidden size × number of feature layers).
  Mlp2xGelu(Eigen::Index vision_hidden, Eigen::Index hidden, std::uint64_t seed, bool bias = true)
      : l1_(vision_hidden, hidden, seed, 1, bias), l2_(hidden, hidden, seed, 2, bias) {}
  Mlp2xGelu(Linear linear_1, Linear linear_2) : l1_(std::move(linear_1)), l2_(std::move(linear_2)) {
    require(l1_.out_features() == l2_.in_features(), "Mlp2xGelu: linear_1 {} does not feed linear_2 {}",
            shape_string(l1_.weight()), shape_string(l2_.weight()));
  }
  // From <prefix>linear_1.{weight,bias} and <prefix>linear_2.*; the prefix is detected
  // (multi_modal_projector. or model.multi_modal_projector.) when empty.
  template <TensorSource S>
  static Mlp2xGelu load(const S& source, Eigen::Index vision_hidden, Eigen::Index hidden, std::string prefix = {},
                        bool bias = true) {
    if (prefix.empty())
      prefix = find_prefix(source, {"multi_modal_projector.", "model.multi_modal_projector."}, "linear_1.weight",
                           "LLaVA projector (multi_modal_projector.linear_1.weight)");
    return Mlp2xGelu(Linear::load(source, prefix + "linear_1.", vision_hidden, hidden, bias),
                     Linear::load(source, prefix + "linear_2.", hidden, hidden, bias));
  }
  // As a LLaVA config.json describes it: input width (feature layers), bias.
  template <TensorSource S>
  static Mlp2xGelu load(const S& source, const LlavaConfig& config) {
    return load(source, config.projector_in_features(), config.text.hidden_size, {}, config.projector_bias);
  }

  Eigen::Index in_features() const { return l1_.in_features(); }
  Eigen::Index out_features() const { return l2_.out_features(); }
  Linear& linear_1() { return l1_; }
  Linear& linear_2() { return l2_; }
  const Linear& linear_1() const { return l1_; }
  const Linear& linear_2() const { return l2_; }
  void zero_grad() {
    l1_.zero_grad();
    l2_.zero_grad();
  }

  Matrix apply(const Matrix& x) const {
    Matrix z = l1_.apply(x);
    for (Eigen::Index i = 0; i < z.size(); ++i) z.data()[i] = gelu_erf(z.data()[i]);
    return l2_.apply(z);
  }
  Matrix forward(const Matrix& x) {
    z_ = l1_.forward(x);
    Matrix a(z_.rows(), z_.cols());
    for (Eigen::Index i = 0; i < a.size(); ++i) a.data()[i] = gelu_erf(z_.data()[i]);
    return l2_.forward(a);
  }
  Matrix backward(const Matrix& dy) {
    Matrix da = l2_.backward(dy);
    for (Eigen::Index i = 0; i < da.size(); ++i) da.data()[i] *= gelu_erf_grad(z_.data()[i]);
    return l1_.backward(da);
  }

 private:
  Linear l1_, l2_;
  Matrix z_;  // linear_1 output of the last forward
};

static_assert(Projector<Linear> && Projector<Mlp2xGelu>);

// Average pooling of each frame's square token grid by `stride` (LLaVA-NeXT-Video: 24×24 → 12×12
// with stride 2). tokens: [frames·grid², D] -> [frames·(grid/stride)², D], row-major over the grid.
inline Matrix spatial_average_pool(const Matrix& tokens, Eigen::Index grid, Eigen::Index stride = 2) {
  require(grid > 0 && stride > 0 && grid % stride == 0, "spatial_average_pool: grid {} is not a multiple of stride {}",
          grid, stride);
  const Eigen::Index per_frame = grid * grid;
  require(tokens.rows() % per_frame == 0, "spatial_average_pool: {} tokens are not whole {}x{} frames", tokens.rows(),
          grid, grid);
  const Eigen::Index frames = tokens.rows() / per_frame, out_grid = grid / stride;
  Matrix out = Matrix::Zero(frames * out_grid * out_grid, tokens.cols());
  const float inv = 1.0f / static_cast<float>(stride * stride);
  for (Eigen::Index f = 0; f < frames; ++f)
    for (Eigen::Index r = 0; r < out_grid; ++r)
      for (Eigen::Index c = 0; c < out_grid; ++c) {
        auto dst = out.row(f * out_grid * out_grid + r * out_grid + c);
        for (Eigen::Index dr = 0; dr < stride; ++dr)
          for (Eigen::Index dc = 0; dc < stride; ++dc)
            dst += tokens.row(f * per_frame + (r * stride + dr) * grid + (c * stride + dc));
        dst *= inv;
      }
  return out;
}

}  // namespace vidlora::model
