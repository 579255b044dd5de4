// The model's hand-written backward passes against central finite differences (float64).

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include <vidlora/loss.hpp>
#include <vidlora/model.hpp>

using namespace vidlora;

namespace {

MatrixD random_d(Eigen::Index r, Eigen::Index c, std::uint64_t seed) {
  return model::random_normal(r, c, 1.0, seed, 0).cast<double>();
}

}  // namespace

TEST_CASE("silu and gelu derivatives equal finite differences", "[model][math]") {
  for (double x : {-6.0, -2.5, -1.0, -0.3, 0.0, 0.4, 1.7, 5.0}) {
    const double h = 1e-6;
    CHECK(model::silu_grad(x) == Approx((model::silu(x + h) - model::silu(x - h)) / (2 * h)).margin(1e-8));
    CHECK(model::gelu_erf_grad(x) == Approx((model::gelu_erf(x + h) - model::gelu_erf(x - h)) / (2 * h)).margin(1e-8));
  }
  CHECK(model::gelu_erf(1.0) == Approx(0.8413447460685429));  // x·Φ(x)
  CHECK(model::quick_gelu(1.0) == Approx(1.0 / (1.0 + std::exp(-1.702))));
}

TEST_CASE("rms_norm backward equals finite differences", "[model][math]") {
  const MatrixD x = random_d(3, 8, 1), dy = random_d(3, 8, 2);
  const VectorOf<double> w = random_d(8, 1, 3).col(0);
  VectorOf<double> inv;
  model::rms_norm<double>(x, w, 1e-6, &inv);
  const MatrixD dx = model::rms_norm_backward<double>(x, w, inv, dy);
  const double h = 1e-6;
  for (Eigen::Index i = 0; i < x.rows(); ++i)
    for (Eigen::Index j = 0; j < x.cols(); ++j) {
      MatrixD xp = x, xm = x;
      xp(i, j) += h;
      xm(i, j) -= h;
      const double num =
          ((model::rms_norm<double>(xp, w, 1e-6) - model::rms_norm<double>(xm, w, 1e-6)).cwiseProduct(dy).sum()) /
          (2 * h);
      CHECK(dx(i, j) == Approx(num).margin(1e-7));
    }
}

TEST_CASE("grouped query attention backward equals finite differences", "[model][math]") {
  const model::AttentionShape s{4, 2, 3};
  const MatrixD q = random_d(5, 12, 4), k = random_d(5, 6, 5), v = random_d(5, 6, 6), dout = random_d(5, 12, 7);
  const std::vector<int> mask{1, 1, 1, 0, 1};
  auto objective = [&](const MatrixD& qq, const MatrixD& kk, const MatrixD& vv) {
    return model::attention_forward<double>(qq, kk, vv, s, 0, mask).cwiseProduct(dout).sum();
  };
  MatrixD probs;
  model::attention_forward<double>(q, k, v, s, 0, mask, &probs);
  MatrixD dq = MatrixD::Zero(5, 12), dk = MatrixD::Zero(5, 6), dv = MatrixD::Zero(5, 6);
  model::attention_backward<double>(q, k, v, s, probs, dout, dq, dk, dv);
  const double h = 1e-6;
  auto check = [&](const MatrixD& x, const MatrixD& dx, int which) {
    for (Eigen::Index i = 0; i < x.rows(); ++i)
      for (Eigen::Index j = 0; j < x.cols(); ++j) {
        MatrixD xp = x, xm = x;
        xp(i, j) += h;
        xm(i, j) -= h;
        const double fp = which == 0 ? objective(xp, k, v) : which == 1 ? objective(q, xp, v) : objective(q, k, xp);
        const double fm = which == 0 ? objective(xm, k, v) : which == 1 ? objective(q, xm, v) : objective(q, k, xm);
        CHECK(dx(i, j) == Approx((fp - fm) / (2 * h)).margin(1e-7));
      }
  };
  check(q, dq, 0);
  check(k, dk, 1);
  check(v, dv, 2);
  CHECK(dk.row(3).norm() == 0.0);  // a padded key gets no gradient
}

TEST_CASE("decoder gradient of the input embeddings equals finite differences in float64", "[model][math]") {
  model::DecoderConfig config = model::llama_config(16, 24, 2, 4, 2, 32);
  config.architecture = model::Architecture::Qwen3;  // exercises q_norm / k_norm too
  const model::TensorTable weights = model::random_decoder_weights(config, 8);
  model::DecoderOptions options;
  options.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  model::Decoder<2, 4, lora::DenseWeight64> decoder(config, weights, options);
  std::uint64_t stream = 0;
  decoder.for_each_lora([&](const std::string&, auto& lin) {
    lin.lora_B() =
        model::random_normal(lin.lora_B().rows(), lin.lora_B().cols(), 0.3, 4, stream++).template cast<double>();
  });
  model::SequenceBatch batch;
  batch.batch = 2;
  batch.seq_len = 5;
  batch.attention_mask = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
  const std::vector<int> ids{3, 9, 27, 1, 14, 5, 30, 2, 0, 0};
  const std::vector<int> labels{-100, 9, 27, 1, 14, -100, 30, 2, -100, -100};
  CrossEntropyOptions ce;
  ce.label_smoothing = 0.1;
  const MatrixD embeds = decoder.embed(ids);
  const auto result = decoder.loss_and_backward(embeds, batch, labels, ce);
  const double h = 1e-6;
  auto loss_at = [&](const MatrixD& e) {
    const MatrixD hidden = decoder.forward(e, batch, false);
    return loss::cross_entropy(decoder.logits(hidden), model::next_token_targets(labels, batch), ce).loss;
  };
  for (Eigen::Index r : {0, 3, 6, 8})
    for (Eigen::Index c : {0, 7, 15}) {
      MatrixD ep = embeds, em = embeds;
      ep(r, c) += h;
      em(r, c) -= h;
      CAPTURE(r, c);
      CHECK(result.grad_embeds(r, c) == Approx((loss_at(ep) - loss_at(em)) / (2 * h)).margin(1e-8));
    }
}

TEST_CASE("projector gradients equal finite differences", "[model][math][projector]") {
  model::Mlp2xGelu projector(6, 4, 11);
  const Matrix x = model::random_normal(3, 6, 1.0, 12, 0), dy = model::random_normal(3, 4, 1.0, 13, 0);
  projector.forward(x);
  const Matrix dx = projector.backward(dy);
  auto objective = [&](const model::Mlp2xGelu& p, const Matrix& xx) {
    return p.apply(xx).cast<double>().cwiseProduct(dy.cast<double>()).sum();
  };
  const float h = 1e-2f;
  for (Eigen::Index j = 0; j < 6; ++j) {
    Matrix xp = x, xm = x;
    xp(1, j) += h;
    xm(1, j) -= h;
    CHECK(dx(1, j) ==
          Approx((objective(projector, xp) - objective(projector, xm)) / (2 * h)).epsilon(2e-3).margin(1e-3));
  }
  for (Eigen::Index j = 0; j < 4; ++j) {
    model::Mlp2xGelu pp = projector, pm = projector;
    pp.linear_1().weight()(j, 2) += h;
    pm.linear_1().weight()(j, 2) -= h;
    CHECK(projector.linear_1().grad_weight()(j, 2) ==
          Approx((objective(pp, x) - objective(pm, x)) / (2 * h)).epsilon(2e-3).margin(1e-3));
    model::Mlp2xGelu bp = projector, bm = projector;
    bp.linear_2().bias()(j) += h;
    bm.linear_2().bias()(j) -= h;
    CHECK(projector.linear_2().grad_bias()(j) ==
          Approx((objective(bp, x) - objective(bm, x)) / (2 * h)).epsilon(2e-3).margin(1e-3));
  }
  // Linear: dx = dy·W, dW = dyᵀ·x, db = Σ dy.
  model::Linear lin(6, 4, 5);
  lin.forward(x);
  const Matrix ldx = lin.backward(dy);
  CHECK((ldx - dy * lin.weight()).cwiseAbs().maxCoeff() < 1e-6);
  CHECK((lin.grad_weight() - dy.transpose() * x).cwiseAbs().maxCoeff() < 1e-6);
  CHECK((lin.grad_bias() - dy.colwise().sum().transpose()).cwiseAbs().maxCoeff() < 1e-6);
}
