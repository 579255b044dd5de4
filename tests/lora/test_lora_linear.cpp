#include <catch2/catch.hpp>

#include <vidlora/lora.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "fixtures.hpp"

using namespace vidlora;
using vidlora::test::normwise_error;

namespace {

template <class Scalar>
MatrixOf<Scalar> random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, double scale = 1.0) {
  CounterRng rng(seed, 99);
  MatrixOf<Scalar> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(rng.uniform(-scale, scale));
  return m;
}

// y = x·Wᵀ + b + s·(x⊙mask)·Aᵀ·Bᵀ written out in float64 loops, independent of Eigen products.
MatrixD reference_forward(const MatrixD& x, const MatrixD& w, const VectorOf<double>* bias, const MatrixD& a,
                          const MatrixD& b, double s, const MatrixD& mask) {
  MatrixD y(x.rows(), w.rows());
  for (Eigen::Index t = 0; t < x.rows(); ++t)
    for (Eigen::Index o = 0; o < w.rows(); ++o) {
      double acc = bias ? (*bias)(o) : 0.0;
      for (Eigen::Index i = 0; i < x.cols(); ++i) acc += x(t, i) * w(o, i);
      for (Eigen::Index r = 0; r < a.rows(); ++r) {
        double h = 0;
        for (Eigen::Index i = 0; i < x.cols(); ++i) h += x(t, i) * mask(t, i) * a(r, i);
        acc += s * h * b(o, r);
      }
      y(t, o) = acc;
    }
  return y;
}

}  // namespace

TEST_CASE("lora layer exposes rank alpha and PEFT scaling", "[lora]") {
  using Layer = LoraLinear<16, 32>;
  STATIC_REQUIRE(Layer::rank == 16);
  STATIC_REQUIRE(Layer::alpha == 32);
  STATIC_REQUIRE(std::is_same_v<Layer::base_type, DenseWeight>);
  STATIC_REQUIRE(std::is_same_v<Layer::scalar_type, float>);
  STATIC_REQUIRE(std::is_same_v<LoraLinear<4, 8, lora::DenseWeight64>::scalar_type, double>);
  STATIC_REQUIRE(Layer::scaling_for(false) == 2.0);
  CHECK(Layer::scaling_for(true) == Approx(8.0).epsilon(1e-15));
  Layer plain(random_matrix<float>(20, 24, 1));
  CHECK(plain.scaling() == 2.0f);
  Layer rs(random_matrix<float>(20, 24, 1), LoraOptions{.dropout = 0.0, .seed = 0, .use_rslora = true});
  CHECK(rs.scaling() == Approx(32.0 / 4.0));
  CHECK(plain.trainable_parameters() == 16 * (20 + 24));
}

TEST_CASE("lora A starts uniform within one over root in and B starts at zero", "[lora][init]") {
  const auto peft = vidlora::test::load_fixture("lora/peft_init.json");
  for (const auto& c : peft["cases"]) {
    const int in = c["in"].get<int>();
    // PEFT's bound for this fan-in (kaiming_uniform_ with a = √5: gain √(1/3) · √(3 / fan_in)).
    const double bound = c["bound"].get<double>();
    LoraLinear<16, 32> layer(Matrix::Zero(32, in).eval(), LoraOptions{.seed = 5});
    const Matrix& a = layer.lora_A();
    REQUIRE(a.rows() == 16);
    REQUIRE(a.cols() == in);
    const double max_abs = a.cwiseAbs().maxCoeff();
    const double mean = a.cast<double>().mean();
    const double std = std::sqrt((a.cast<double>().array() - mean).square().mean());
    CHECK(max_abs <= bound);
    CHECK(max_abs >= 0.95 * bound);  // the spread reaches the bound
    CHECK(std::abs(mean) <= 0.1 * bound);
    CHECK(std == Approx(bound / std::sqrt(3.0)).epsilon(0.1));  // U(-b, b) has std b/√3
    // The spread of PEFT's own draw of the same shape (another RNG, so equal only statistically).
    CHECK(max_abs == Approx(c["max_abs"].get<double>()).epsilon(0.05));
    CHECK(std == Approx(c["std"].get<double>()).epsilon(0.15));
    CHECK(layer.lora_B().cwiseAbs().maxCoeff() == c["b_max_abs"].get<double>());
    CHECK(layer.lora_B().cwiseAbs().maxCoeff() == 0.0f);
  }
}

TEST_CASE("lora init is reproducible from the seed and differs across seeds and layers", "[lora][init]") {
  const Matrix w = random_matrix<float>(12, 10, 3);
  LoraLinear<4, 8> a(w, LoraOptions{.seed = 11}), b(w, LoraOptions{.seed = 11}), c(w, LoraOptions{.seed = 12}),
      d(w, LoraOptions{.seed = 11, .layer = 1});
  CHECK(a.lora_A() == b.lora_A());
  CHECK(a.lora_A() != c.lora_A());
  CHECK(a.lora_A() != d.lora_A());
}

TEST_CASE("fresh lora layer with zero B equals the frozen linear layer", "[lora]") {
  const Matrix w = random_matrix<float>(12, 10, 3), x = random_matrix<float>(7, 10, 4);
  const Vector bias = random_matrix<float>(12, 1, 5);
  LoraLinear<4, 8> layer(w, bias, LoraOptions{});
  const Matrix y = layer.forward(x, true);
  const Matrix expected = (x * w.transpose()).rowwise() + bias.transpose();
  CHECK(normwise_error(y, expected) < 1e-6);
}

TEST_CASE("lora forward matches a float64 loop reference with and without bias", "[lora]") {
  const MatrixD w = random_matrix<double>(9, 11, 6), x = random_matrix<double>(5, 11, 7);
  const VectorOf<double> bias = random_matrix<double>(9, 1, 8);
  LoraLinear<3, 5, lora::DenseWeight64> with_bias(w, bias), without_bias(w);
  with_bias.lora_B() = random_matrix<double>(9, 3, 9);
  without_bias.lora_B() = with_bias.lora_B();
  without_bias.lora_A() = with_bias.lora_A();
  const MatrixD ones = MatrixD::Ones(5, 11);
  CHECK(normwise_error(with_bias.forward(x, false), reference_forward(x, w, &bias, with_bias.lora_A(),
                                                                      with_bias.lora_B(), 5.0 / 3.0, ones)) < 1e-12);
  CHECK(normwise_error(without_bias.forward(x, false), reference_forward(x, w, nullptr, with_bias.lora_A(),
                                                                         with_bias.lora_B(), 5.0 / 3.0, ones)) < 1e-12);
}

TEST_CASE("lora dropout masks the lora branch only with inverted scaling from the counter rng", "[lora][dropout]") {
  const double p = 0.25;
  const MatrixD w = random_matrix<double>(6, 40, 10), x = random_matrix<double>(50, 40, 11);
  LoraLinear<4, 8, lora::DenseWeight64> layer(w, LoraOptions{.dropout = p, .seed = 77, .layer = 3});
  layer.lora_B() = random_matrix<double>(6, 4, 12);
  layer.set_step(5);
  const MatrixD y = layer.forward(x, true);
  CHECK(layer.step() == 6);
  // The mask: element (t, i) of x is kept iff uniform(seed, stream(layer 3, step 5), t·in + i) >= p.
  MatrixD mask(50, 40);
  long dropped = 0;
  for (Eigen::Index t = 0; t < 50; ++t)
    for (Eigen::Index i = 0; i < 40; ++i) {
      const double u = random_uniform(77, (std::uint64_t{3} << 32) + 1 + 5, static_cast<std::uint64_t>(t * 40 + i));
      mask(t, i) = u < p ? 0.0 : 1.0 / (1.0 - p);
      dropped += u < p;
    }
  CHECK(static_cast<double>(dropped) / 2000.0 == Approx(p).margin(0.03));
  CHECK(normwise_error(y, reference_forward(x, w, nullptr, layer.lora_A(), layer.lora_B(), 2.0, mask)) < 1e-6);
  // The frozen path never sees dropout: with B = 0 the output is exactly x·Wᵀ.
  LoraLinear<4, 8, lora::DenseWeight64> frozen_only(w, LoraOptions{.dropout = 0.9, .seed = 1});
  CHECK(normwise_error(frozen_only.forward(x, true), MatrixD(x * w.transpose())) < 1e-12);
}

TEST_CASE("lora dropout is reproducible per seed and step and off in evaluation", "[lora][dropout]") {
  const Matrix w = random_matrix<float>(8, 30, 20), x = random_matrix<float>(16, 30, 21);
  auto make = [&](std::uint64_t seed) {
    LoraLinear<4, 8> layer(w, LoraOptions{.dropout = 0.5, .seed = seed});
    layer.lora_B() = random_matrix<float>(8, 4, 22);
    return layer;
  };
  auto a = make(1), b = make(1), c = make(2);
  const Matrix ya0 = a.forward(x, true), yb0 = b.forward(x, true);
  CHECK(ya0 == yb0);                 // same seed, same step: same mask
  CHECK(a.forward(x, true) != ya0);  // next step: another mask
  c.lora_A() = a.lora_A();
  c.set_step(0);
  CHECK(c.forward(x, true) != ya0);  // another seed: another mask
  a.set_step(0);
  CHECK(a.forward(x, true) == ya0);         // rewinding the step replays the mask
  const Matrix eval = a.forward(x, false);  // evaluation: no dropout, step untouched
  CHECK(a.step() == 1);
  const Matrix expected = x * w.transpose() + 2.0f * (x * a.lora_A().transpose()) * a.lora_B().transpose();
  CHECK(normwise_error(eval, expected) < 1e-5);
}

TEST_CASE("dropout scale is zero or one over one minus p with mean one", "[lora][dropout]") {
  const float p = 0.1f;
  double sum = 0;
  long zeros = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const float s = lora::dropout_scale(3, 4, static_cast<std::uint64_t>(i), p);
    REQUIRE((s == 0.0f || s == 1.0f / (1.0f - p)));
    sum += s;
    zeros += s == 0.0f;
  }
  CHECK(sum / n == Approx(1.0).margin(0.01));
  CHECK(static_cast<double>(zeros) / n == Approx(0.1).margin(0.005));
  CHECK(lora::dropout_scale(3, 4, 17, 0.0f) == 1.0f);
}

TEST_CASE("dropout keep bits of one Philox block give the four dropout_scale factors", "[lora][dropout]") {
  for (const float p : {0.0f, 0.05f, 0.5f, 0.999f})
    for (std::uint64_t block :
         {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{12345}, (std::uint64_t{1} << 33) + 7}) {
      const std::uint8_t bits = vidlora::lora::dropout_keep_bits4(11, vidlora::lora::dropout_stream(3, 9), block, p);
      for (std::uint64_t k = 0; k < 4; ++k)
        CHECK(vidlora::lora::dropout_factor(bits, static_cast<int>(k), p) ==
              lora::dropout_scale(11, vidlora::lora::dropout_stream(3, 9), 4 * block + k, p));
    }
}

TEST_CASE("merged forward equals unmerged forward and unmerge restores the frozen weight", "[lora][merge]") {
  const Matrix w = random_matrix<float>(48, 64, 30), x = random_matrix<float>(10, 64, 31);
  const Vector bias = random_matrix<float>(48, 1, 32);
  LoraLinear<8, 16> layer(w, bias);
  layer.lora_B() = random_matrix<float>(48, 8, 33, 0.5);
  const Matrix unmerged = layer.forward(x, false);
  layer.merge();
  CHECK(layer.merged());
  const Matrix merged = layer.forward(x, false);
  CHECK(normwise_error(merged, unmerged) < 1e-5);
  const Matrix merged_w = w + 2.0f * layer.lora_B() * layer.lora_A();
  CHECK(normwise_error(layer.base().dense(), merged_w) < 1e-6);
  layer.unmerge();
  CHECK_FALSE(layer.merged());
  CHECK(normwise_error(layer.base().dense(), w) < 1e-6);
  CHECK(normwise_error(layer.forward(x, false), unmerged) < 1e-6);
}

TEST_CASE("lora bad input is a clear error naming the value", "[lora][errors]") {
  using Catch::Contains;
  // rank > min(in, out)
  CHECK_THROWS_WITH((LoraLinear<8, 16>(Matrix::Ones(4, 10))), Contains("rank 8") && Contains("[4, 10]"));
  CHECK_THROWS_WITH((LoraLinear<8, 16>(Matrix::Ones(10, 4))), Contains("rank 8") && Contains("[10, 4]"));
  CHECK_NOTHROW(LoraLinear<4, 8>(Matrix::Ones(4, 10)));
  // NaN / Inf in the weight or bias
  Matrix nan_w = Matrix::Ones(8, 8);
  nan_w(2, 3) = std::nanf("");
  CHECK_THROWS_AS((LoraLinear<4, 8>(nan_w)), Error);
  CHECK_THROWS_WITH((LoraLinear<4, 8>(nan_w)), Contains("NaN"));
  Vector inf_bias = Vector::Zero(8);
  inf_bias(1) = INFINITY;
  CHECK_THROWS_WITH((LoraLinear<4, 8>(Matrix::Ones(8, 8), inf_bias)), Contains("NaN or Inf"));
  CHECK_THROWS_WITH((LoraLinear<4, 8>(Matrix::Ones(8, 8), Vector::Zero(7).eval())), Contains("7"));
  CHECK_THROWS_WITH((LoraLinear<4, 8>(Matrix(0, 8))), Contains("empty"));
  // dropout outside [0, 1)
  CHECK_THROWS_WITH((LoraLinear<4, 8>(Matrix::Ones(8, 8), LoraOptions{.dropout = 1.0})), Contains("dropout 1"));
  CHECK_THROWS_WITH((LoraLinear<4, 8>(Matrix::Ones(8, 8), LoraOptions{.dropout = -0.5})), Contains("-0.5"));
  // shapes at run time
  LoraLinear<4, 8> layer(Matrix::Ones(6, 10));
  CHECK_THROWS_WITH(layer.backward(Matrix::Ones(3, 6)), Contains("forward"));
  CHECK_THROWS_WITH(layer.forward(Matrix::Ones(3, 9), true), Contains("[3, 9]") && Contains("[6, 10]"));
  layer.forward(Matrix::Ones(3, 10), true);
  CHECK_THROWS_WITH(layer.backward(Matrix::Ones(3, 5)), Contains("[3, 5]") && Contains("[3, 6]"));
  CHECK_THROWS_WITH(layer.unmerge(), Contains("not merged"));
  layer.merge();
  CHECK_THROWS_WITH(layer.merge(), Contains("already merged"));
  layer.forward(Matrix::Ones(3, 10), true);
  CHECK_THROWS_WITH(layer.backward(Matrix::Ones(3, 6)), Contains("merged"));
}

TEST_CASE("lora over many tokens matches closed-form gradients with dropout", "[lora][dropout][grad]") {
  // Large enough (tokens·in ≥ 2^16) that OpenMP builds split the work into per-thread shares.
  const Eigen::Index tokens = 96, in = 768, out = 64;
  const double p = 0.2, s = 2.0;
  const MatrixD w = random_matrix<double>(out, in, 40, 0.05), x = random_matrix<double>(tokens, in, 41);
  const MatrixD dy = random_matrix<double>(tokens, out, 42);
  LoraLinear<8, 16, lora::DenseWeight64> layer(w, LoraOptions{.dropout = p, .seed = 5, .layer = 2});
  layer.lora_B() = random_matrix<double>(out, 8, 43);
  layer.set_step(9);
  const MatrixD y = layer.forward(x, true);
  const MatrixD dx = layer.backward(dy);
  MatrixD mask(tokens, in);
  for (Eigen::Index t = 0; t < tokens; ++t)
    for (Eigen::Index i = 0; i < in; ++i)
      mask(t, i) = random_uniform(5, (std::uint64_t{2} << 32) + 1 + 9, static_cast<std::uint64_t>(t * in + i)) < p
                       ? 0.0
                       : 1.0 / (1.0 - p);
  const MatrixD& a = layer.lora_A();
  const MatrixD& b = layer.lora_B();
  const MatrixD xd = x.cwiseProduct(mask);
  const MatrixD g = s * dy * b;
  CHECK(normwise_error(y, MatrixD(x * w.transpose() + s * xd * a.transpose() * b.transpose())) < 1e-9);
  CHECK(normwise_error(dx, MatrixD(dy * w + (g * a).cwiseProduct(mask))) < 1e-9);
  CHECK(normwise_error(layer.grad_A(), MatrixD(g.transpose() * xd)) < 1e-9);
  CHECK(normwise_error(layer.grad_B(), MatrixD(s * dy.transpose() * (xd * a.transpose()))) < 1e-9);
}

TEST_CASE("release_cache frees the activations kept for backward and backward then asks for a forward", "[lora]") {
  vidlora::Matrix w = vidlora::Matrix::Random(12, 20);
  vidlora::LoraLinear<4, 8> layer(w, vidlora::LoraOptions{.dropout = 0.2, .seed = 5});
  const vidlora::Matrix x = vidlora::Matrix::Random(7, 20);
  layer.forward(x, true);
  CHECK(layer.cached_elements() == 7 * 20 + 7 * 4);
  layer.release_cache();
  CHECK(layer.cached_elements() == 0);
  CHECK_THROWS_WITH(layer.backward(vidlora::Matrix::Ones(7, 12)), Catch::Contains("needs a forward()"));
}

TEST_CASE("dropout keep bits of a range of blocks equal dropout_keep_bits4 block by block", "[lora][dropout]") {
  const std::uint64_t stream = vidlora::lora::dropout_stream(7, 123);
  for (const float p : {0.0f, 0.05f, 0.3f, 0.999f})
    for (const std::uint64_t first : {std::uint64_t{0}, std::uint64_t{5}, (std::uint64_t{1} << 32) - 3}) {
      std::vector<std::uint8_t> bits(1000, 0xFF);
      vidlora::lora::dropout_keep_bits4_blocks(42, stream, first, 999, p, bits.data());
      for (std::uint64_t q = 0; q < 999; ++q)
        REQUIRE(bits[q] == vidlora::lora::dropout_keep_bits4(42, stream, first + q, p));
      CHECK(bits[999] == 0xFF);  // nothing written past count
    }
}

TEST_CASE("dropout keep bits are pinned: the bits the CUDA kernel and the CPU layer both use", "[lora][dropout]") {
  // Regression pin (Philox4x32-10 itself is checked against Random123's known answers in tests/core) of the keep bits (bit k of byte q: offset 4q + k kept) for seed 1, layer 0,
  // step 0, p = 0.5; any change here changes every mask on both backends.
  const std::uint64_t stream = vidlora::lora::dropout_stream(0, 0);
  std::vector<std::uint8_t> bits(8);
  vidlora::lora::dropout_keep_bits4_blocks(1, stream, 0, bits.size(), 0.5f, bits.data());
  CHECK(bits == std::vector<std::uint8_t>{0x00, 0x06, 0x02, 0x0E, 0x0E, 0x06, 0x01, 0x02});
}

TEST_CASE("lora dropout drops exactly the elements dropout_scale drops, in forward and backward", "[lora][dropout]") {
  // in = 37 (not a multiple of 4) and tokens·in ≥ 2^16, so per-thread shares start inside groups of four.
  const Eigen::Index tokens = 1800, in = 37, out = 5;
  const float p = 0.3f;
  LoraLinear<4, 8> layer(Matrix::Zero(out, in), LoraOptions{.dropout = p, .seed = 9, .layer = 4});
  layer.lora_B() = random_matrix<float>(out, 4, 50);
  layer.set_step(2);
  const Matrix x = random_matrix<float>(tokens, in, 51).array() + 2.0f;  // no zeros in x
  const Matrix dy = random_matrix<float>(tokens, out, 52);
  layer.forward(x, true);
  const Matrix dx = layer.backward(dy);  // W = 0: dx = mask ⊙ (g·A)
  const Matrix ga = (2.0f * (dy * layer.lora_B())) * layer.lora_A();
  const std::uint64_t stream = vidlora::lora::dropout_stream(4, 2);
  long mismatches = 0, dropped = 0;
  for (Eigen::Index t = 0; t < tokens; ++t)
    for (Eigen::Index i = 0; i < in; ++i) {
      const float scale = lora::dropout_scale(9, stream, static_cast<std::uint64_t>(t * in + i), p);
      dropped += scale == 0.0f;
      if (scale == 0.0f) {
        mismatches += dx(t, i) != 0.0f;
      } else {
        mismatches += std::abs(dx(t, i) - ga(t, i) * scale) > 1e-5f * (1.0f + std::abs(ga(t, i)));
      }
    }
  CHECK(mismatches == 0);
  CHECK(static_cast<double>(dropped) / static_cast<double>(tokens * in) == Approx(p).margin(0.01));
  // grad_A = gᵀ·dropout(x): with g's columns known, dropout(x) is reproduced exactly where the mask says.
  const Matrix g = 2.0f * (dy * layer.lora_B());
  Matrix xd(tokens, in);
  for (Eigen::Index t = 0; t < tokens; ++t)
    for (Eigen::Index i = 0; i < in; ++i)
      xd(t, i) = x(t, i) * lora::dropout_scale(9, stream, static_cast<std::uint64_t>(t * in + i), p);
  CHECK(normwise_error(layer.grad_A(), Matrix(g.transpose() * xd)) < 1e-5);
}
