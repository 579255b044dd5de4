// Properties of LoraLinear that hold for every shape, rank, seed and scale (checked over many random
// draws rather than one more fixture): merge then unmerge is the identity up to the two roundings of
// one add and one subtract, merged and unmerged forwards agree, and in float64 the identity is exact to
// the float64 rounding of the same two operations.

#include <catch2/catch.hpp>

#include <vidlora/lora.hpp>

#include <cmath>
#include <cstdint>
#include <limits>

using namespace vidlora;

namespace {

template <class Scalar>
MatrixOf<Scalar> draw(Eigen::Index rows, Eigen::Index cols, CounterRng& rng, double scale) {
  MatrixOf<Scalar> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(rng.uniform(-scale, scale));
  return m;
}

// One random layer of rank R: W [out, in] and B scaled by 10^k for k in [-3, 1], then merge/unmerge.
// Element-wise, (w + d) - d differs from w by at most one rounding of each operation:
// |w' - w| <= eps · (|w + d| + |w' + d|) <= 2 · eps · (|w| + 2|d|) (eps: unit roundoff of Scalar).
template <int R, class Scalar>
void check_merge_round_trip(std::uint64_t seed) {
  using Base = lora::DenseWeightOf<Scalar>;
  CounterRng rng(seed, 17);
  const auto in = static_cast<Eigen::Index>(R + 1 + rng.uniform(0.0, 40.0));
  const auto out = static_cast<Eigen::Index>(R + 1 + rng.uniform(0.0, 40.0));
  const double w_scale = std::pow(10.0, rng.uniform(-2.0, 1.0));
  const double b_scale = std::pow(10.0, rng.uniform(-3.0, 1.0));
  const MatrixOf<Scalar> w = draw<Scalar>(out, in, rng, w_scale);
  LoraLinear<R, 2 * R, Base> layer(w, LoraOptions{.seed = seed});
  layer.lora_B() = draw<Scalar>(out, R, rng, b_scale);
  const MatrixOf<Scalar> x = draw<Scalar>(3, in, rng, 1.0);
  const MatrixOf<Scalar> unmerged = layer.forward(x, false);
  const MatrixOf<Scalar> delta = layer.delta_weight();

  layer.merge();
  const MatrixOf<Scalar> merged = layer.forward(x, false);
  layer.unmerge();
  const MatrixOf<Scalar>& back = layer.base().dense();

  const double eps = std::numeric_limits<Scalar>::epsilon() / 2;
  const auto bound =
      (2.0 * eps * (w.template cast<double>().cwiseAbs() + 2.0 * delta.template cast<double>().cwiseAbs()).array())
          .eval();
  const auto err = (back.template cast<double>() - w.template cast<double>()).cwiseAbs().array().eval();
  INFO("seed " << seed << " rank " << R << " [" << out << ", " << in << "] w scale " << w_scale << " B scale "
               << b_scale);
  CHECK((err <= bound).all());
  // Merged and unmerged forwards compute x·(W + s·B·A)ᵀ in two association orders: they agree to the
  // accumulated rounding of dot products of length in + R over |x|·(|W| + s·|B|·|A|)ᵀ.
  const auto abs_ba =
      (layer.lora_B().template cast<double>().cwiseAbs() * layer.lora_A().template cast<double>().cwiseAbs() *
       std::abs(static_cast<double>(layer.scaling())))
          .eval();
  const auto magnitude =
      (x.template cast<double>().cwiseAbs() * (w.template cast<double>().cwiseAbs() + abs_ba).transpose()).eval();
  const double gamma = 4.0 * static_cast<double>(in + R) * eps;
  CHECK(((merged - unmerged).template cast<double>().cwiseAbs().array() <= gamma * magnitude.array()).all());
}

}  // namespace

TEST_CASE("merge then unmerge restores W within one rounding of each operation for any shape rank and scale",
          "[lora][merge][property]") {
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    check_merge_round_trip<4, float>(seed);
    check_merge_round_trip<8, float>(seed + 1000);
    check_merge_round_trip<16, double>(seed + 2000);
  }
}

TEST_CASE("a layer whose B is zero merges to exactly its frozen weight", "[lora][merge][property]") {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    CounterRng rng(seed, 5);
    const Matrix w = draw<float>(9, 13, rng, 3.0);
    LoraLinear<4, 8> layer(w, LoraOptions{.seed = seed});
    layer.merge();
    CHECK(layer.base().dense() == w);  // W + 0 is exact
    layer.unmerge();
    CHECK(layer.base().dense() == w);
  }
}
