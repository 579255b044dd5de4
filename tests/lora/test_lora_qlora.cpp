// QLoRA = LoraLinear<16, 32, quant::NF4Weight>: the same layer over a 4-bit frozen base.
#include <catch2/catch.hpp>

#include <vidlora/lora.hpp>
#include <vidlora/quant.hpp>

#include <cstdint>
#include <vector>

#include "fixtures.hpp"

using namespace vidlora;
using vidlora::test::normwise_error;

namespace {

Matrix random_float_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, double scale = 1.0) {
  CounterRng rng(seed, 5);
  Matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(rng.uniform(-scale, scale));
  return m;
}

// W as NF4 stores it: blockwise double-quantized and decoded again through the Quantizer API.
Matrix nf4_dequantized(const Matrix& w) {
  const std::vector<float> values = Quantizer<NF4, 64>::dequantize(Quantizer<NF4, 64>::quantize(as_span(w), true));
  return Eigen::Map<const Matrix>(values.data(), w.rows(), w.cols());
}

}  // namespace

TEST_CASE("qlora forward with dropout equals dense lora on the nf4 dequantized weight", "[lora][qlora]") {
  using QLora = LoraLinear<16, 32, NF4Weight>;
  STATIC_REQUIRE(std::is_same_v<QLora::base_type, NF4Weight>);
  STATIC_REQUIRE(std::is_same_v<QLoraLinear<16, 32>, QLora>);
  STATIC_REQUIRE(std::is_same_v<QLora::scalar_type, float>);
  const Matrix w = random_float_matrix(80, 192, 1, 0.05);
  const LoraOptions options{.dropout = 0.1, .seed = 42};
  QLora qlora(w, options);
  LoraLinear<16, 32, DenseWeight> dense(nf4_dequantized(w), options);
  CHECK(qlora.lora_A() == dense.lora_A());  // same seed, same init, whatever the base
  qlora.lora_B() = random_float_matrix(80, 16, 2, 0.1);
  dense.lora_B() = qlora.lora_B();
  const Matrix x = random_float_matrix(9, 192, 3);
  CHECK(normwise_error(qlora.forward(x, true), dense.forward(x, true)) < 1e-5);  // same dropout mask
  CHECK(normwise_error(qlora.forward(x, false), dense.forward(x, false)) < 1e-5);
  // NF4 really rounds: the dense layer over the original W differs by far more than the tolerance.
  LoraLinear<16, 32, DenseWeight> exact(w, options);
  exact.lora_B() = qlora.lora_B();
  CHECK(normwise_error(qlora.forward(x, false), exact.forward(x, false)) > 1e-3);
}

TEST_CASE("qlora merge folds the adapter into the 4-bit base up to nf4 rounding", "[lora][qlora][merge]") {
  const Matrix w = random_float_matrix(64, 128, 4, 0.05);
  LoraLinear<16, 32, NF4Weight> qlora(w);
  STATIC_REQUIRE_FALSE(NF4Weight::exact_merge);
  qlora.lora_B() = random_float_matrix(64, 16, 5, 0.05);
  const Matrix x = random_float_matrix(6, 128, 6);
  const Matrix unmerged = qlora.forward(x, false);
  const Matrix before = qlora.base().to_dense();
  qlora.merge();
  CHECK(normwise_error(qlora.base().to_dense(), nf4_dequantized(before + qlora.delta_weight())) < 1e-6);
  // Re-quantizing after the merge moves each weight by at most about half an NF4 step of its block.
  const double step = 0.05 * 2 * 0.16;  // absmax ≈ 0.05 + |ΔW|; widest NF4 code gap ≈ 0.16 of absmax
  CHECK((qlora.base().to_dense() - (before + qlora.delta_weight())).cwiseAbs().maxCoeff() <= step);
  // Merged forward is the merged 4-bit base alone (the branch is not added twice) ...
  CHECK(normwise_error(qlora.forward(x, false), Matrix(x * qlora.base().to_dense().transpose())) < 1e-5);
  // ... and differs from the unmerged output by exactly the re-rounding of W carried through x:
  // x · (W_merged - (W + ΔW))ᵀ, up to the float rounding of the products (not a loose tolerance).
  const Matrix rounding = qlora.base().to_dense() - (before + qlora.delta_weight());
  const Matrix expected_shift = x * rounding.transpose();
  CHECK(expected_shift.cwiseAbs().maxCoeff() > 1e-3);  // the re-rounding is visible at this scale
  CHECK(((qlora.forward(x, false) - unmerged) - expected_shift).cwiseAbs().maxCoeff() < 1e-5);
  qlora.unmerge();
  CHECK((qlora.base().to_dense() - before).cwiseAbs().maxCoeff() <= 2 * step);
}
