// Properties of Quantizer<Format, Blocksize> over many random tensors (sizes that straddle blocks, scales
// over six decades, zero blocks): quantize∘dequantize∘quantize is quantize (the codes of a dequantized
// tensor are its codes again), and the round-trip error stays within half the widest gap of the code book
// times each block's absmax.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include <vidlora/core/rng.hpp>
#include <vidlora/quant.hpp>

using namespace vidlora;

namespace {

std::vector<float> random_tensor(std::uint64_t seed) {
  CounterRng rng(seed, 23);
  const auto n = static_cast<std::size_t>(1 + rng.uniform(0.0, 5000.0));
  const double scale = std::pow(10.0, rng.uniform(-4.0, 2.0));
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.uniform(-scale, scale) * std::pow(rng.uniform(0.0, 1.0), 3.0));
  // Now and then a whole block of zeros (absmax 0) or one outlier that dominates its block.
  if (seed % 3 == 0) std::fill(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(n, 64)), 0.0f);
  if (seed % 5 == 0) v[n / 2] = static_cast<float>(50.0 * scale);
  return v;
}

template <class Format, int Blocksize>
void check_idempotent(std::uint64_t seed, bool double_quant) {
  using Q = Quantizer<Format, Blocksize>;
  const std::vector<float> x = random_tensor(seed);
  const quant::QuantizedBlocks q1 = Q::quantize(std::span<const float>(x), double_quant);
  const std::vector<float> y = Q::dequantize(q1);
  const quant::QuantizedBlocks q2 = Q::quantize(std::span<const float>(y), double_quant);
  INFO(Format::name << " blocksize " << Blocksize << " seed " << seed << " n " << x.size() << " double "
                    << double_quant);
  // Every dequantized value is a code times its block's scale, and the code ±1 marks the block's absmax,
  // so quantizing again finds the same codes. (FP4 has two codes for zero, bit patterns 0 and 8, which
  // both decode to +0: there the values are the fixed point, not the bits.)
  if constexpr (std::is_same_v<Format, NF4>) CHECK(q2.packed == q1.packed);
  if (!double_quant) {
    CHECK(q2.absmax == q1.absmax);  // max |code · absmax| = absmax, exactly
    CHECK(Q::dequantize(q2) == y);  // the fixed point is reached after one round
  } else {
    // The 8-bit block scales are re-encoded around a new mean, so only the scale may move: each value is
    // its (unchanged) code times the new scale.
    const std::vector<float> z = Q::dequantize(q2);
    for (std::size_t b = 0; b < q1.num_blocks(); ++b) {
      const double a1 = quant::block_absmax(q1, b), a2 = quant::block_absmax(q2, b);
      const std::size_t lo = b * Blocksize, hi = std::min(x.size(), lo + Blocksize);
      for (std::size_t i = lo; i < hi; ++i) {
        const double code = a1 > 0 ? y[i] / a1 : 0.0;
        REQUIRE(std::abs(z[i] - code * a2) <= 1e-6 * std::abs(a2));
      }
    }
  }
  // Round-trip error: at most half the widest gap between neighbouring codes times the block's absmax, plus
  // (double quantization) the error of the block's 8-bit scale, since every |code| <= 1.
  std::vector<double> sorted(Format::code.begin(), Format::code.end());
  std::sort(sorted.begin(), sorted.end());
  double widest = 0.0;
  for (std::size_t c = 1; c < sorted.size(); ++c) widest = std::max(widest, sorted[c] - sorted[c - 1]);
  for (std::size_t b = 0; b < q1.num_blocks(); ++b) {
    const std::size_t lo = b * Blocksize, hi = std::min(x.size(), lo + Blocksize);
    double absmax = 0.0;
    for (std::size_t i = lo; i < hi; ++i) absmax = std::max(absmax, static_cast<double>(std::abs(x[i])));
    const double scale_error = std::abs(quant::block_absmax(q1, b) - absmax);
    for (std::size_t i = lo; i < hi; ++i)
      REQUIRE(std::abs(y[i] - x[i]) <= widest / 2 * absmax + scale_error + 1e-6 * absmax);
  }
}

}  // namespace

TEST_CASE("quantize of a dequantized tensor gives the same codes, for NF4 and FP4, any size and scale",
          "[quant][property]") {
  for (std::uint64_t seed = 1; seed <= 30; ++seed) {
    check_idempotent<NF4, 64>(seed, false);
    check_idempotent<NF4, 64>(seed, true);
    check_idempotent<NF4, 256>(seed + 100, true);
    check_idempotent<FP4, 64>(seed + 200, false);
    check_idempotent<FP4, 128>(seed + 300, false);
  }
}
