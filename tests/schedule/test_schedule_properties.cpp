// Properties every learning-rate policy keeps over many random configurations (warmup, length, peak,
// cycles, SGDR periods): the warmup is the line base_lr · step / warmup, the schedule is continuous at the
// end of warmup (the step into the peak is one warmup increment, the step out of it at most the policy's
// own largest slope), and no step leaves [floor, base_lr].

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>

#include <vidlora/core/rng.hpp>
#include <vidlora/schedule.hpp>

using namespace vidlora;

namespace {

ScheduleOptions random_options(std::uint64_t seed) {
  CounterRng rng(seed, 41);
  ScheduleOptions o;
  o.base_lr = std::pow(10.0, rng.uniform(-6.0, -2.0));
  o.warmup_steps = static_cast<long>(1 + rng.uniform(0.0, 200.0));
  o.total_steps = o.warmup_steps + static_cast<long>(2 + rng.uniform(0.0, 5000.0));
  if (seed % 2 == 0) o.num_cycles = 0.5 + std::floor(rng.uniform(0.0, 4.0));
  o.t0 = static_cast<long>(1 + rng.uniform(0.0, 300.0));
  o.t_mult = static_cast<long>(1 + rng.uniform(0.0, 3.0));
  o.eta_min = seed % 3 == 0 ? o.base_lr * rng.uniform(0.0, 0.5) : 0.0;
  return o;
}

// The largest |lr(s + 1) - lr(s)| after warmup, from the derivative of each formula.
template <class P>
double max_slope(const ScheduleOptions& o) {
  const double span = static_cast<double>(std::max(1L, o.total_steps - o.warmup_steps));
  if constexpr (std::is_same_v<P, schedule::Constant>) return 0.0;
  if constexpr (std::is_same_v<P, schedule::Linear>) return o.base_lr / span;
  // d/dp ½(1 + cos(2π·c·p)) = -π·c·sin(·): at most π·c per unit of progress.
  if constexpr (std::is_same_v<P, schedule::Cosine>)
    return o.base_lr * std::numbers::pi * o.num_cycles.value_or(0.5) / span;
  // ½(1 + cos(π·frac(c·p))): at most π/2 · c per unit of progress, between restarts.
  if constexpr (std::is_same_v<P, schedule::CosineRestarts>)
    return o.base_lr * std::numbers::pi / 2 * o.num_cycles.value_or(1.0) / span;
  // SGDR: (base - eta_min) · π/2 / T_0 in the first cycle, which starts at the end of warmup.
  if constexpr (std::is_same_v<P, schedule::WarmRestarts>)
    return (o.base_lr - o.eta_min) * std::numbers::pi / 2 / static_cast<double>(o.t0);
  return 0.0;
}

template <class P>
void check_policy(std::uint64_t seed) {
  const ScheduleOptions o = random_options(seed);
  const Scheduler<P> s(o);
  const long w = o.warmup_steps;
  const double tol = 4e-16 * o.base_lr;  // a few roundings of base_lr
  INFO(P::name << " seed " << seed << " base " << o.base_lr << " warmup " << w << " total " << o.total_steps);
  for (long k = 0; k < w; ++k)
    REQUIRE(std::abs(s.lr(k) - o.base_lr * static_cast<double>(k) / static_cast<double>(w)) <= tol);
  CHECK(std::abs(s.lr(w) - o.base_lr) <= tol);                                           // the peak
  CHECK(std::abs((s.lr(w) - s.lr(w - 1)) - o.base_lr / static_cast<double>(w)) <= tol);  // one increment in
  CHECK(std::abs(s.lr(w + 1) - s.lr(w)) <= max_slope<P>(o) * (1 + 1e-9) + tol);          // at most one slope out
  const double floor = std::is_same_v<P, schedule::WarmRestarts> ? o.eta_min : 0.0;
  for (long k = w; k <= o.total_steps; ++k) {
    const double lr = s.lr(k);
    REQUIRE(lr >= floor - tol);
    REQUIRE(lr <= o.base_lr + tol);
  }
}

}  // namespace

TEST_CASE("every policy rises linearly in warmup, is continuous at its end and stays in range",
          "[schedule][property]") {
  for (std::uint64_t seed = 1; seed <= 60; ++seed) {
    check_policy<schedule::Constant>(seed);
    check_policy<schedule::Linear>(seed);
    check_policy<schedule::Cosine>(seed);
    check_policy<schedule::CosineRestarts>(seed);
    check_policy<schedule::WarmRestarts>(seed);
  }
}
