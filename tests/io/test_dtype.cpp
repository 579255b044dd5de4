// bf16 / fp16 <-> float against torch's CPU casts (tests/fixtures/io/dtype_conversion.json,
// tools/reference/safetensors_files.py).
#include <catch2/catch.hpp>

#include <vidlora/io.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "fixtures.hpp"

using namespace vidlora;

namespace {

// FNV-1a over 64-bit-widened words, as the fixture script computes it.
struct Fnv1a {
  std::uint64_t h = 0xCBF29CE484222325ull;
  void add(std::uint64_t word) { h = (h ^ word) * 0x100000001B3ull; }
};

// The fixture's float32 patterns: a stride over all 2^32, every bf16 tie, every fp16 midpoint.
std::vector<std::uint32_t> float_patterns() {
  std::vector<std::uint32_t> out;
  for (std::uint64_t p = 0; p < (std::uint64_t{1} << 32); p += 4099) out.push_back(static_cast<std::uint32_t>(p));
  for (std::uint32_t k = 0; k < (1u << 16); ++k) out.push_back((k << 16) | 0x8000u);
  std::vector<std::uint32_t> mids;
  for (std::uint32_t h = 0; h + 1 < 0x7C00u; ++h) {
    const double a = io::fp16_bits_to_float(static_cast<std::uint16_t>(h));
    const double b = io::fp16_bits_to_float(static_cast<std::uint16_t>(h + 1));
    mids.push_back(std::bit_cast<std::uint32_t>(static_cast<float>((a + b) / 2)));
  }
  out.insert(out.end(), mids.begin(), mids.end());
  for (std::uint32_t m : mids) out.push_back(m | 0x80000000u);
  return out;
}

}  // namespace

TEST_CASE("float to bf16 and fp16 rounding matches torch on tricky values", "[io][dtype]") {
  const auto f = test::load_fixture("io/dtype_conversion.json");
  REQUIRE(f["tricky"].size() > 30);
  for (const auto& row : f["tricky"]) {
    const auto value = std::bit_cast<float>(row["float_bits"].get<std::uint32_t>());
    INFO("value " << row["value"].get<std::string>());
    CHECK(io::float_to_bf16_bits(value) == row["bf16_bits"].get<std::uint16_t>());
    CHECK(io::float_to_fp16_bits(value) == row["fp16_bits"].get<std::uint16_t>());
  }
}

TEST_CASE("float to bf16 and fp16 match torch bit for bit over a million patterns including every tie", "[io][dtype]") {
  const auto f = test::load_fixture("io/dtype_conversion.json");
  const auto patterns = float_patterns();
  REQUIRE(patterns.size() == f["patterns"]["count"].get<std::size_t>());
  Fnv1a bf16, fp16;
  for (std::uint32_t p : patterns) {
    const float value = std::bit_cast<float>(p);
    bf16.add(io::float_to_bf16_bits(value));
    fp16.add(io::float_to_fp16_bits(value));
  }
  CHECK(bf16.h == f["hash_float_to_bf16"].get<std::uint64_t>());
  CHECK(fp16.h == f["hash_float_to_fp16"].get<std::uint64_t>());
}

TEST_CASE("every bf16 and fp16 pattern widens to the float torch gives", "[io][dtype]") {
  const auto f = test::load_fixture("io/dtype_conversion.json");
  Fnv1a bf16, fp16;
  for (std::uint32_t h = 0; h < (1u << 16); ++h) {
    bf16.add(std::bit_cast<std::uint32_t>(io::bf16_bits_to_float(static_cast<std::uint16_t>(h))));
    fp16.add(std::bit_cast<std::uint32_t>(io::fp16_bits_to_float(static_cast<std::uint16_t>(h))));
  }
  CHECK(bf16.h == f["hash_bf16_to_float"].get<std::uint64_t>());
  CHECK(fp16.h == f["hash_fp16_to_float"].get<std::uint64_t>());
}

TEST_CASE("fp16 subnormals decode to multiples of two to the minus 24", "[io][dtype]") {
  for (std::uint16_t m = 1; m < 0x400u; ++m) {
    CHECK(io::fp16_bits_to_float(m) == std::ldexp(static_cast<float>(m), -24));
    CHECK(io::fp16_bits_to_float(static_cast<std::uint16_t>(0x8000u | m)) == -std::ldexp(static_cast<float>(m), -24));
    CHECK(io::float_to_fp16_bits(std::ldexp(static_cast<float>(m), -24)) == m);
  }
}

TEST_CASE("narrow round trips are idempotent and keep infinities and NaN", "[io][dtype]") {
  for (float v : {0.1f, -3.3f, 1e-6f, 70000.0f, 1e30f}) {
    CHECK(io::round_to_bf16(io::round_to_bf16(v)) == io::round_to_bf16(v));
    CHECK(io::round_to_fp16(io::round_to_fp16(v)) == io::round_to_fp16(v));
  }
  CHECK(io::round_to_fp16(70000.0f) == std::numeric_limits<float>::infinity());
  CHECK(std::isnan(io::round_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  CHECK(std::isnan(io::round_to_fp16(std::numeric_limits<float>::quiet_NaN())));
  CHECK(io::round_to_bf16(-std::numeric_limits<float>::infinity()) == -std::numeric_limits<float>::infinity());
}
