#include <catch2/catch.hpp>

#include <vidlora/core.hpp>

#include <cmath>
#include <cstdint>
#include <set>

using namespace vidlora;

TEST_CASE("philox4x32-10 matches the Random123 known-answer vectors", "[core][rng]") {
  auto zero = philox4x32_10(0, 0, 0, 0, 0, 0);
  CHECK(zero.v[0] == 0x6627e8d5u);
  CHECK(zero.v[1] == 0xe169c58du);
  CHECK(zero.v[2] == 0xbc57ac4cu);
  CHECK(zero.v[3] == 0x9b00dbd8u);
  auto ones = philox4x32_10(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu);
  CHECK(ones.v[0] == 0x408f276du);
  CHECK(ones.v[1] == 0x41c83b0eu);
  CHECK(ones.v[2] == 0xa20bc7c6u);
  CHECK(ones.v[3] == 0x6d5451fdu);
  auto pi = philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  CHECK(pi.v[0] == 0xd16cfe09u);
  CHECK(pi.v[1] == 0x94fdccebu);
  CHECK(pi.v[2] == 0x5001e420u);
  CHECK(pi.v[3] == 0x24126ea1u);
}

TEST_CASE("random words are a pure function of seed, stream and offset", "[core][rng]") {
  CHECK(random_u32(7, 3, 1000) == random_u32(7, 3, 1000));
  CHECK(random_u32(7, 3, 1000) != random_u32(8, 3, 1000));
  CHECK(random_u32(7, 3, 1000) != random_u32(7, 4, 1000));
  CounterRng rng(7, 3);
  for (int i = 0; i < 10; ++i) CHECK(rng.next_u32() == random_u32(7, 3, static_cast<std::uint64_t>(i)));
}

TEST_CASE("uniform draws cover 0 to 1 with the right mean and variance", "[core][rng]") {
  const int n = 200000;
  double sum = 0, sum2 = 0;
  for (int i = 0; i < n; ++i) {
    const double u = random_uniform(42, 0, static_cast<std::uint64_t>(i));
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    sum += u;
    sum2 += u * u;
  }
  const double mean = sum / n, var = sum2 / n - mean * mean;
  CHECK(mean == Approx(0.5).margin(0.005));
  CHECK(var == Approx(1.0 / 12).margin(0.002));
  CounterRng rng(1);
  std::set<double> seen;
  for (int i = 0; i < 1000; ++i) seen.insert(rng.uniform(-2, 3));
  CHECK(seen.size() == 1000);
  CHECK(*seen.begin() >= -2.0);
  CHECK(*seen.rbegin() < 3.0);
}

TEST_CASE("errors are vidlora::Error with the formatted message", "[core][error]") {
  try {
    fail("bad shape {} for {}", "[3, 4]", "q_proj");
    FAIL("fail() returned");
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == "bad shape [3, 4] for q_proj");
  }
  CHECK_NOTHROW(require(true, "never {}", 1));
  CHECK_THROWS_AS(require(false, "always {}", 1), std::runtime_error);
}
