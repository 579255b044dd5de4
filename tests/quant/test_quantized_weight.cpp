// NF4Weight / FP4Weight: the 4-bit frozen base of LoraLinear, decoded panel by panel.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>

#include <fixtures.hpp>
#include <vidlora/lora/lora_linear.hpp>
#include <vidlora/quant.hpp>

using namespace vidlora;
using vidlora::test::normwise_error;

namespace {

Matrix random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, float scale = 1.0f) {
  CounterRng rng(seed);
  Matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(rng.uniform(-scale, scale));
  return m;
}

// W as Quantizer<NF4, 64> with double quantization decodes it, reshaped to [out, in].
Matrix reference_dequantized(const Matrix& w) {
  const auto values = Quantizer<NF4, 64>::dequantize(Quantizer<NF4, 64>::quantize(as_span(w), true));
  return Eigen::Map<const Matrix>(values.data(), w.rows(), w.cols());
}

}  // namespace

static_assert(FrozenWeight<NF4Weight> && FrozenWeight<FP4Weight>);
static_assert(NF4Weight::double_quant && NF4Weight::blocksize == 64 && !NF4Weight::exact_merge);

TEST_CASE("nf4 weight to_dense equals the flat quantizer round trip even when blocks straddle rows", "[quant]") {
  const Matrix w = random_matrix(37, 100, 1);  // 100 columns: blocks of 64 cross row boundaries
  const NF4Weight q(w);
  CHECK(q.out_features() == 37);
  CHECK(q.in_features() == 100);
  CHECK(q.to_dense() == reference_dequantized(w));
  CHECK((q.to_dense() - w).cwiseAbs().maxCoeff() > 0.0f);  // it really is quantized
}

TEST_CASE("nf4 weight apply equals x times the dequantized weight transposed across several panels", "[quant]") {
  // 2^20 / 8192 = 128 rows per panel -> 300 rows take three panels, the last partial
  const Matrix w = random_matrix(300, 8192, 2, 0.05f);
  const NF4Weight q(w);
  const Matrix wd = reference_dequantized(w);
  const Matrix x = random_matrix(5, 8192, 3);
  const MatrixD expected = x.cast<double>() * wd.cast<double>().transpose();
  CHECK(normwise_error(q.apply(x), expected) < 1e-5);
  const Matrix dy = random_matrix(5, 300, 4);
  const MatrixD expected_dx = dy.cast<double>() * wd.cast<double>();
  CHECK(normwise_error(q.apply_transposed(dy), expected_dx) < 1e-5);
}

TEST_CASE("nf4 weight stores about 4.13 bits per weight", "[quant]") {
  const Matrix w = random_matrix(256, 1024, 5);
  const NF4Weight q(w);
  const double bits = 8.0 * static_cast<double>(q.blocks().storage_bytes()) / static_cast<double>(w.size());
  CHECK(bits == Approx(4.0 + 8.0 / 64 + 32.0 / (64 * 256)).epsilon(1e-3));
}

TEST_CASE("adding to an nf4 weight re-quantizes the sum", "[quant]") {
  const Matrix w = random_matrix(16, 128, 6);
  const Matrix delta = random_matrix(16, 128, 7, 0.1f);
  NF4Weight q(w);
  const Matrix sum = q.to_dense() + delta;
  q.add_dense(delta);
  CHECK(q.to_dense() == reference_dequantized(sum));
}

TEST_CASE("qlora forward and backward equal a dense LoraLinear over the dequantized weight", "[quant][lora]") {
  const Matrix w = random_matrix(96, 128, 8, 0.1f);
  LoraLinear<16, 32, NF4Weight> qlora(w);
  LoraLinear<16, 32, DenseWeight> dense(reference_dequantized(w));
  qlora.lora_A() = random_matrix(16, 128, 9, 0.1f);
  qlora.lora_B() = random_matrix(96, 16, 10, 0.1f);
  dense.lora_A() = qlora.lora_A();
  dense.lora_B() = qlora.lora_B();
  const Matrix x = random_matrix(7, 128, 11);
  const Matrix y = qlora.forward(x, false);
  CHECK(normwise_error(y, dense.forward(x, false)) < 1e-5);
  const Matrix dy = random_matrix(7, 96, 12);
  CHECK(normwise_error(qlora.backward(dy), dense.backward(dy)) < 1e-5);
  CHECK(normwise_error(qlora.grad_A(), dense.grad_A()) < 1e-5);
  CHECK(normwise_error(qlora.grad_B(), dense.grad_B()) < 1e-5);
}

TEST_CASE("nf4 weight rejects NaN weights and mismatched inputs naming the shapes", "[quant][errors]") {
  Matrix w = random_matrix(8, 64, 13);
  const NF4Weight q(w);
  CHECK_THROWS_WITH(q.apply(Matrix::Zero(2, 63)), Catch::Contains("[2, 63]") && Catch::Contains("[8, 64]"));
  CHECK_THROWS_WITH(q.apply_transposed(Matrix::Zero(2, 9)), Catch::Contains("[2, 9]"));
  CHECK_THROWS_AS(NF4Weight(q).add_dense(Matrix::Zero(8, 65)), Error);
  w(3, 5) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(NF4Weight(w), Catch::Contains("NaN"));
  CHECK_THROWS_WITH(FP4Weight(Matrix(0, 4)), Catch::Contains("empty"));
}
