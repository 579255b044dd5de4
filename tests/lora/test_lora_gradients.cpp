// Finite-difference checks of LoraLinear::backward in float64.
#include <cstdint>

#include <catch2/catch.hpp>

#include <vidlora/lora.hpp>

#include "fixtures.hpp"

using namespace vidlora;

namespace {

using Layer = LoraLinear<4, 8, lora::DenseWeight64>;

MatrixD random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
  CounterRng rng(seed, 7);
  MatrixD m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = rng.uniform(-1.0, 1.0);
  return m;
}

// loss = Σ dy ⊙ forward(x), with the dropout mask pinned to `step`.
double loss(Layer& layer, const MatrixD& x, const MatrixD& dy, std::uint64_t step) {
  layer.set_step(step);
  return (layer.forward(x, true).array() * dy.array()).sum();
}

// Central differences of `loss` over every element of `param`, which `layer` reads.
MatrixD numeric_gradient(Layer& layer, MatrixD& param, const MatrixD& x, const MatrixD& dy, std::uint64_t step) {
  const double h = 1e-6;
  MatrixD g(param.rows(), param.cols());
  for (Eigen::Index i = 0; i < param.size(); ++i) {
    const double saved = param.data()[i];
    param.data()[i] = saved + h;
    const double up = loss(layer, x, dy, step);
    param.data()[i] = saved - h;
    const double down = loss(layer, x, dy, step);
    param.data()[i] = saved;
    g.data()[i] = (up - down) / (2 * h);
  }
  return g;
}

void check_gradients(double dropout, bool use_rslora) {
  const Eigen::Index in = 7, out = 6, tokens = 5;
  const MatrixD w = random_matrix(out, in, 1);
  const VectorOf<double> bias = random_matrix(out, 1, 2);
  Layer layer(w, bias, LoraOptions{.dropout = dropout, .seed = 9, .use_rslora = use_rslora});
  layer.lora_B() = random_matrix(out, 4, 3);  // nonzero B so every gradient is exercised
  MatrixD x = random_matrix(tokens, in, 4);
  const MatrixD dy = random_matrix(tokens, out, 5);
  const std::uint64_t step = 3;

  layer.set_step(step);
  layer.forward(x, true);
  const MatrixD dx = layer.backward(dy);
  const MatrixD grad_a = layer.grad_A(), grad_b = layer.grad_B();

  const MatrixD num_a = numeric_gradient(layer, layer.lora_A(), x, dy, step);
  const MatrixD num_b = numeric_gradient(layer, layer.lora_B(), x, dy, step);
  const MatrixD num_x = numeric_gradient(layer, x, x, dy, step);
  CHECK(vidlora::test::normwise_error(grad_a, num_a) < 1e-7);
  CHECK(vidlora::test::normwise_error(grad_b, num_b) < 1e-7);
  CHECK(vidlora::test::normwise_error(dx, num_x) < 1e-7);
  CHECK(grad_a.cwiseAbs().maxCoeff() > 1e-3);  // the check is not vacuous
  CHECK(grad_b.cwiseAbs().maxCoeff() > 1e-3);
}

}  // namespace

TEST_CASE("lora gradients match finite differences in float64 without dropout", "[lora][grad]") {
  check_gradients(0.0, false);
  check_gradients(0.0, true);
}

TEST_CASE("lora gradients match finite differences in float64 with a fixed dropout mask", "[lora][grad][dropout]") {
  check_gradients(0.3, false);
}

TEST_CASE("lora backward accumulates gradients until zero_grad", "[lora][grad]") {
  Layer layer(random_matrix(6, 7, 1));
  layer.lora_B() = random_matrix(6, 4, 3);
  const MatrixD x = random_matrix(5, 7, 4), dy = random_matrix(5, 6, 5);
  layer.forward(x, false);
  layer.backward(dy);
  const MatrixD once_a = layer.grad_A(), once_b = layer.grad_B();
  layer.forward(x, false);
  layer.backward(dy);
  CHECK(vidlora::test::normwise_error(layer.grad_A(), MatrixD(2 * once_a)) < 1e-14);
  CHECK(vidlora::test::normwise_error(layer.grad_B(), MatrixD(2 * once_b)) < 1e-14);
  layer.zero_grad();
  CHECK(layer.grad_A().isZero(0));
  CHECK(layer.grad_B().isZero(0));
}

TEST_CASE("lora with zero B gets a zero grad_A and a nonzero grad_B as PEFT starts", "[lora][grad]") {
  Layer layer(random_matrix(6, 7, 1));
  layer.forward(random_matrix(5, 7, 4), false);
  const MatrixD dx = layer.backward(random_matrix(5, 6, 5));
  CHECK(layer.grad_A().isZero(0));
  CHECK(layer.grad_B().cwiseAbs().maxCoeff() > 1e-3);
  CHECK(vidlora::test::normwise_error(dx, MatrixD(random_matrix(5, 6, 5) * random_matrix(6, 7, 1))) < 1e-14);
}
