// Quantizer<NF4 / FP4>: codes, packing, absmax and double quantization against bitsandbytes
// (fixtures from tools/reference/quant.py), plus the rules that make them what they are.

#include <catch2/catch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <fixtures.hpp>
#include <vidlora/quant.hpp>

using namespace vidlora;
using vidlora::test::load_fixture;

namespace {

float from_bits(std::int64_t b) { return std::bit_cast<float>(static_cast<std::uint32_t>(b)); }
std::uint32_t to_bits(float f) { return std::bit_cast<std::uint32_t>(f); }

std::vector<float> floats_from_bits(const nlohmann::json& j) {
  std::vector<float> v;
  for (const auto& b : j) v.push_back(from_bits(b.get<std::int64_t>()));
  return v;
}

std::vector<std::uint32_t> bits_of(const std::vector<float>& v) {
  std::vector<std::uint32_t> out;
  for (float f : v) out.push_back(to_bits(f));
  return out;
}

std::vector<std::uint32_t> bits_of_json(const nlohmann::json& j) {
  std::vector<std::uint32_t> out;
  for (const auto& b : j) out.push_back(static_cast<std::uint32_t>(b.get<std::int64_t>()));
  return out;
}

// The generator tools/reference/quant.py uses (hashed_input): splitmix64, three 16-bit uniforms.
std::uint64_t mix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::vector<float> hashed_input(std::size_t n, std::uint64_t seed, std::size_t blocksize) {
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint64_t h = mix64(seed * 0x100000001B3ull + i);
    const long sum =
        static_cast<long>(h & 0xFFFF) + static_cast<long>((h >> 16) & 0xFFFF) + static_cast<long>((h >> 32) & 0xFFFF);
    const float v = static_cast<float>(sum - 98304) / 32768.0f;
    const float scale = 0.0078125f * static_cast<float>(1 + mix64(seed + 7919 * (i / blocksize)) % 61);
    x[i] = v * scale;
  }
  return x;
}

quant::QuantizedBlocks quantize_case(const nlohmann::json& c, std::span<const float> x) {
  const std::string format = c["format"];
  const int bs = c["blocksize"];
  const bool dq = c["double_quant"];
  return format == "nf4" ? quant::quantize_4bit<NF4>(x, bs, dq) : quant::quantize_4bit<FP4>(x, bs, dq);
}

std::vector<float> dequantize_case(const nlohmann::json& c, const quant::QuantizedBlocks& q) {
  return c["format"] == "nf4" ? quant::dequantize_4bit<NF4>(q) : quant::dequantize_4bit<FP4>(q);
}

void check_against_bitsandbytes(const nlohmann::json& c, const quant::QuantizedBlocks& q) {
  INFO(c["name"].get<std::string>());
  CHECK(q.numel == c["numel"].get<std::size_t>());
  CHECK(q.packed == c["packed"].get<std::vector<std::uint8_t>>());
  if (c["double_quant"]) {
    CHECK(q.absmax.empty());
    CHECK(q.qabsmax == c["qabsmax"].get<std::vector<std::uint8_t>>());
    CHECK(to_bits(q.absmax_offset) == c["absmax_offset_bits"].get<std::uint32_t>());
    CHECK(bits_of(q.nested_absmax) == bits_of_json(c["nested_absmax_bits"]));
    std::vector<float> absmax;
    for (std::size_t b = 0; b < q.num_blocks(); ++b) absmax.push_back(quant::block_absmax(q, b));
    CHECK(bits_of(absmax) == bits_of_json(c["dequantized_absmax_bits"]));
  } else {
    CHECK(bits_of(q.absmax) == bits_of_json(c["absmax_bits"]));
  }
}

}  // namespace

TEST_CASE("nf4 and fp4 code books and the dynamic map equal bitsandbytes bit for bit", "[quant]") {
  const auto f = load_fixture("quant/codes.json");
  CHECK(bits_of({NF4::code.begin(), NF4::code.end()}) == bits_of_json(f["nf4"]["code_bits"]));
  CHECK(bits_of({FP4::code.begin(), FP4::code.end()}) == bits_of_json(f["fp4"]["code_bits"]));
  const auto nf4_order = quant::CodeBook<NF4>::sorted_order, fp4_order = quant::CodeBook<FP4>::sorted_order;
  CHECK(std::vector<int>(nf4_order.begin(), nf4_order.end()) == f["nf4"]["sorted_order"].get<std::vector<int>>());
  CHECK(std::vector<int>(fp4_order.begin(), fp4_order.end()) == f["fp4"]["sorted_order"].get<std::vector<int>>());
  const auto nf4_mid = quant::CodeBook<NF4>::midpoints, fp4_mid = quant::CodeBook<FP4>::midpoints;
  CHECK(bits_of({nf4_mid.begin(), nf4_mid.end()}) == bits_of_json(f["nf4"]["midpoint_bits"]));
  CHECK(bits_of({fp4_mid.begin(), fp4_mid.end()}) == bits_of_json(f["fp4"]["midpoint_bits"]));
  const auto& map = quant::kSignedDynamicMap;
  CHECK(bits_of({map.begin(), map.end()}) == bits_of_json(f["dynamic_signed_bits"]));
}

TEST_CASE("quantize_4bit matches bitsandbytes on ties, signed zeros, odd sizes and zero blocks", "[quant]") {
  const auto f = load_fixture("quant/blocks_small.json");
  REQUIRE(f["cases"].size() == 6);
  for (const auto& c : f["cases"]) {
    const std::vector<float> x = floats_from_bits(c["input_bits"]);
    const quant::QuantizedBlocks q = quantize_case(c, x);
    check_against_bitsandbytes(c, q);
    INFO(c["name"].get<std::string>());
    CHECK(bits_of(dequantize_case(c, q)) == bits_of_json(c["dequantized_bits"]));
  }
}

TEST_CASE("quantize_4bit matches bitsandbytes on large inputs with and without double quantization", "[quant]") {
  const auto f = load_fixture("quant/blocks_hashed.json");
  REQUIRE(f["cases"].size() == 7);
  for (const auto& c : f["cases"]) {
    INFO(c["name"].get<std::string>());
    const std::vector<float> x = hashed_input(c["numel"], c["seed"], c["blocksize"]);
    double sum = 0;
    for (float v : x) sum += v;
    REQUIRE(to_bits(static_cast<float>(sum)) == c["input_checksum_bits"].get<std::uint32_t>());
    const quant::QuantizedBlocks q = quantize_case(c, x);
    check_against_bitsandbytes(c, q);
    const std::vector<float> y = dequantize_case(c, q);
    const std::size_t stride = c["dequantized_sample_stride"];
    std::vector<float> sample;
    for (std::size_t i = 0; i < y.size(); i += stride) sample.push_back(y[i]);
    CHECK(bits_of(sample) == bits_of_json(c["dequantized_sample_bits"]));
  }
}

TEST_CASE("nf4 packs the even element in the high nibble and pads an odd count with the zero code", "[quant]") {
  const std::vector<float> x = {2.0f, -2.0f, 0.0f};  // codes 15, 0, 7 (absmax 2)
  const auto q = Quantizer<NF4, 32>::quantize(x);
  REQUIRE(q.packed.size() == 2);
  CHECK(q.packed[0] == 0xF0);
  CHECK(q.packed[1] == 0x77);  // element 2 -> code 7 (zero) in the high nibble, pad -> 7
  CHECK(q.absmax == std::vector<float>{2.0f});
  CHECK(Quantizer<NF4, 32>::dequantize(q) == std::vector<float>{2.0f, -2.0f, 0.0f});
}

TEST_CASE("a value exactly on the midpoint between two nf4 codes rounds to the lower code", "[quant]") {
  const float mid = (NF4::code[7] + NF4::code[8]) / 2.0f;  // between 0 and 0.0796
  CHECK(quant::encode_4bit<NF4>(mid) == 7);
  CHECK(quant::encode_4bit<NF4>(std::nextafter(mid, 1.0f)) == 8);
  const float neg = (NF4::code[0] + NF4::code[1]) / 2.0f;
  CHECK(quant::encode_4bit<NF4>(neg) == 0);
  CHECK(quant::encode_4bit<NF4>(std::nextafter(neg, 1.0f)) == 1);
  // FP4: 0 -> +0 (code 0); a tiny positive value lands above the ±0 midpoint -> -0 (code 8), as in bitsandbytes
  CHECK(quant::encode_4bit<FP4>(0.0f) == 0);
  CHECK(quant::encode_4bit<FP4>(1e-6f) == 8);
  CHECK(quant::encode_4bit<FP4>(1.0f) == 3);
  CHECK(quant::encode_4bit<FP4>(-1.0f) == 11);
}

TEST_CASE("the 8-bit dynamic map rounds a distance tie to the lower code", "[quant]") {
  const auto& map = quant::kSignedDynamicMap;
  CHECK(map[0] == Approx(-0.99296875f));
  CHECK(map[255] == 1.0f);
  for (int k : {3, 100, 127, 128, 200}) {
    CHECK(quant::encode_dynamic(map[k]) == k);
    // a representable value whose float distances to both neighbours are equal, if one exists
    const float lo = map[k], hi = map[k + 1];
    const float mid = lo + (hi - lo) / 2.0f;
    if (std::fabs(mid - lo) == std::fabs(hi - mid)) CHECK(quant::encode_dynamic(mid) == k);
  }
  CHECK(quant::encode_dynamic(-1.0f) == 0);
}

TEST_CASE("a partial last block is scaled by its own absmax", "[quant]") {
  std::vector<float> x(64 + 10, 100.0f);
  for (int i = 64; i < 74; ++i) x[i] = 0.5f * static_cast<float>(i - 63) / 10.0f;  // max 0.5
  const auto q = Quantizer<NF4, 64>::quantize(x);
  REQUIRE(q.absmax.size() == 2);
  CHECK(q.absmax[0] == 100.0f);
  CHECK(q.absmax[1] == 0.5f);
  CHECK(Quantizer<NF4, 64>::dequantize(q)[73] == 0.5f);  // the block maximum decodes exactly
}

TEST_CASE("an all-zero block keeps absmax 0 and decodes to zeros", "[quant]") {
  std::vector<float> x(128, 0.0f);
  x[3] = 1.0f;
  const auto q = Quantizer<FP4, 64>::quantize(x);
  CHECK(q.absmax[1] == 0.0f);
  const auto y = Quantizer<FP4, 64>::dequantize(q);
  for (int i = 64; i < 128; ++i) REQUIRE(y[i] == 0.0f);
}

TEST_CASE("nf4 round-trip error is at most half the widest code gap times absmax", "[quant]") {
  const auto x = hashed_input(4096, 11, 64);
  for (bool dq : {false, true}) {
    const auto q = Quantizer<NF4, 64>::quantize(x, dq);
    const auto y = Quantizer<NF4, 64>::dequantize(q);
    double worst = 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      float amax = 0.0f;
      for (std::size_t j = (i / 64) * 64; j < (i / 64 + 1) * 64; ++j) amax = std::max(amax, std::fabs(x[j]));
      worst = std::max(worst, static_cast<double>(std::fabs(x[i] - y[i]) / amax));
    }
    // widest NF4 gap: -1 to -0.6961928 -> half is 0.1519036; the 8-bit absmax adds under 2%
    CHECK(worst <= (dq ? 0.1519036 + 0.02 : 0.1519036));
    CHECK(worst > 0.05);  // not trivially exact
  }
}

TEST_CASE("double quantization stores one byte per block instead of four", "[quant]") {
  const auto x = hashed_input(64 * 1024, 12, 64);
  const auto plain = Quantizer<NF4, 64>::quantize(x, false);
  const auto dq = Quantizer<NF4, 64>::quantize(x, true);
  CHECK(plain.storage_bytes() == 32 * 1024 + 1024 * 4);
  CHECK(dq.storage_bytes() == 32 * 1024 + 1024 + 4 * 4 + 4);
  CHECK(dq.qabsmax.size() == 1024);
  CHECK(dq.nested_absmax.size() == 4);
}

TEST_CASE("quantize rejects blocksizes that are not powers of two in 32 to 4096 and names them", "[quant][errors]") {
  const std::vector<float> x(256, 1.0f);
  for (int bs : {0, 16, 48, 100, 8192}) {
    INFO(bs);
    CHECK_THROWS_WITH(quant::quantize_4bit<NF4>(x, bs, false),
                      Catch::Contains("blocksize " + std::to_string(bs)) && Catch::Contains("32..4096"));
  }
  for (int bs : {32, 64, 128, 256, 512, 1024, 2048, 4096}) CHECK_NOTHROW(quant::quantize_4bit<FP4>(x, bs, false));
}

TEST_CASE("quantize rejects NaN and Inf and names the element", "[quant][errors]") {
  std::vector<float> x(100, 0.5f);
  x[42] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(Quantizer<NF4>::quantize(x), Catch::Contains("element 42") && Catch::Contains("nan"));
  x[42] = 0.5f;
  x[7] = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(Quantizer<FP4>::quantize(x, true), Catch::Contains("element 7") && Catch::Contains("-inf"));
  CHECK_THROWS_AS(Quantizer<NF4>::quantize(std::span<const float>{}), Error);
}

TEST_CASE("dequantize rejects blocks that do not fit together", "[quant][errors]") {
  const std::vector<float> x(200, 0.25f);
  using Q64 = Quantizer<NF4, 64>;
  using Q128 = Quantizer<NF4, 128>;
  auto q = Q64::quantize(x);
  CHECK_THROWS_WITH(Q128::dequantize(q), Catch::Contains("blocksize 64"));
  auto short_absmax = q;
  short_absmax.absmax.pop_back();
  CHECK_THROWS_WITH(Q64::dequantize(short_absmax), Catch::Contains("3 absmax values for 4 blocks"));
  auto short_packed = q;
  short_packed.packed.pop_back();
  CHECK_THROWS_WITH(Q64::dequantize(short_packed), Catch::Contains("99 packed bytes"));
  auto dq = Q64::quantize(x, true);
  dq.nested_absmax.clear();
  CHECK_THROWS_WITH(Q64::dequantize(dq), Catch::Contains("0 nested absmax"));
}
