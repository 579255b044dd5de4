#include <catch2/catch.hpp>

#include <fixtures.hpp>
#include <vidlora/schedule.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

using namespace vidlora;
using vidlora::test::load_fixture;

namespace {

// |a - b| <= 1e-12·|b| (plus 1e-20 absolute, for the exact zeros at the end of a schedule).
bool close_rel(double a, double b) { return std::abs(a - b) <= 1e-12 * std::abs(b) + 1e-20; }

ScheduleOptions options_from(const nlohmann::json& c) {
  ScheduleOptions o{};
  o.base_lr = c["base_lr"].get<double>();
  o.total_steps = c["total_steps"].get<long>();
  o.warmup_steps = c["warmup_steps"].get<long>();
  if (c.contains("num_cycles") && !c["num_cycles"].is_null()) o.num_cycles = c["num_cycles"].get<double>();
  if (c.contains("t0")) o.t0 = c["t0"].get<long>();
  if (c.contains("t_mult")) o.t_mult = c["t_mult"].get<long>();
  if (c.contains("eta_min")) o.eta_min = c["eta_min"].get<double>();
  return o;
}

template <class Policy>
int count_mismatches(const nlohmann::json& c, double& worst) {
  const Scheduler<Policy> s(options_from(c));
  int bad = 0;
  for (const auto& row : c["lr"]) {
    const long step = row[0].get<long>();
    const double want = row[1].get<double>();
    const double got = s.lr(step);
    if (want != 0.0) worst = std::max(worst, std::abs(got - want) / std::abs(want));
    if (!close_rel(got, want)) {
      ++bad;
      UNSCOPED_INFO(c["policy"].get<std::string>() << " total " << c["total_steps"] << " warmup " << c["warmup_steps"]
                                                   << " step " << step << ": got " << got << " want " << want);
    }
  }
  return bad;
}

int check_case(const nlohmann::json& c, double& worst) {
  const auto policy = c["policy"].get<std::string>();
  if (policy == "Constant") return count_mismatches<Constant>(c, worst);
  if (policy == "Linear") return count_mismatches<Linear>(c, worst);
  if (policy == "Cosine") return count_mismatches<Cosine>(c, worst);
  if (policy == "CosineRestarts") return count_mismatches<CosineRestarts>(c, worst);
  if (policy == "WarmRestarts") return count_mismatches<WarmRestarts>(c, worst);
  FAIL("unknown policy in fixture: " << policy);
  return 1;
}

}  // namespace

TEST_CASE("every transformers schedule matches LambdaLR at every recorded step to 1e-12 relative",
          "[schedule][reference]") {
  const auto fixture = load_fixture("schedule/transformers_schedules.json");
  REQUIRE(fixture["cases"].size() >= 40);
  double worst = 0;
  int bad = 0;
  std::size_t steps = 0;
  for (const auto& c : fixture["cases"]) {
    bad += check_case(c, worst);
    steps += c["lr"].size();
  }
  INFO("worst relative error " << worst << " over " << steps << " steps");
  CHECK(bad == 0);
  CHECK(steps > 2000);
}

TEST_CASE("warm restarts match PyTorch CosineAnnealingWarmRestarts closed form after the warmup",
          "[schedule][reference]") {
  const auto fixture = load_fixture("schedule/warm_restarts.json");
  REQUIRE(fixture["cases"].size() >= 6);
  double worst = 0;
  int bad = 0;
  for (const auto& c : fixture["cases"]) bad += check_case(c, worst);
  INFO("worst relative error " << worst);
  CHECK(bad == 0);
}

TEST_CASE("warm restarts reproduce PyTorch's log rounding at epoch 121 of t0 1 t_mult 3", "[schedule][reference]") {
  // log(243)/log(3) = 4.999999999999999 in double: PyTorch's closed form puts epoch 121 at the END of
  // cycle 4 (T_cur = T_i = 81, lr = eta_min) where stepping one by one restarts at base_lr.
  const auto fixture = load_fixture("schedule/warm_restarts.json");
  bool seen = false;
  for (const auto& c : fixture["cases"]) {
    if (c["t0"] != 1 || c["t_mult"] != 3) continue;
    seen = true;
    CHECK(c["sequential_disagrees_at"] == nlohmann::json::array({121}));
    const Scheduler<WarmRestarts> s(options_from(c));
    CHECK(s.lr(121) == Approx(0.0).margin(1e-18));
    CHECK(s.lr(122) == Approx(1e-4 * 0.5 * (1 + std::cos(M_PI * 1.0 / 243.0))).epsilon(1e-12));
    CHECK(s.lr(40) == Approx(1e-4).epsilon(1e-12));  // 40 = 1 + 3 + 9 + 27: a clean restart
  }
  CHECK(seen);
}

TEST_CASE("warmup_steps_for is ceil of total times ratio as transformers get_warmup_steps", "[schedule][reference]") {
  const auto fixture = load_fixture("schedule/warmup_steps.json");
  REQUIRE(fixture["values"].size() >= 40);
  for (const auto& v : fixture["values"]) {
    const double ratio = v[0].get<double>();
    const long total = v[1].get<long>();
    INFO("ratio " << ratio << " total " << total);
    CHECK(schedule::warmup_steps_for(ratio, total) == v[2].get<long>());
  }
  CHECK(schedule::warmup_steps_for(0.07, 100) == 8);  // 100 · 0.07 = 7.000000000000001 in double, as in Python
  CHECK(schedule::warmup_steps_for(0.05, 1000) == 50);
}

TEST_CASE("warmup rises linearly from zero and every policy reaches base lr at the warmup boundary", "[schedule]") {
  ScheduleOptions o{};
  o.base_lr = 2e-4;
  o.warmup_steps = 10;
  o.total_steps = 100;
  o.t0 = 20;
  auto check = [&](auto policy) {
    const Scheduler<decltype(policy)> s(o);
    CHECK(s.lr(0) == 0.0);
    CHECK(s.lr(5) == Approx(1e-4).epsilon(1e-15));
    CHECK(s.lr(10) == Approx(2e-4).epsilon(1e-15));
  };
  check(Constant{});
  check(Linear{});
  check(Cosine{});
  check(CosineRestarts{});
  check(WarmRestarts{});
}

TEST_CASE("cosine restarts is a cosine with hard restarts and zero from the end of training", "[schedule]") {
  STATIC_REQUIRE(std::is_base_of_v<Cosine, CosineRestarts>);
  STATIC_REQUIRE(std::is_same_v<Scheduler<CosineRestarts>::policy_type, CosineRestarts>);
  STATIC_REQUIRE(Cosine::default_num_cycles == 0.5);
  STATIC_REQUIRE(CosineRestarts::default_num_cycles == 1.0);
  ScheduleOptions o{};
  o.base_lr = 1.0;
  o.total_steps = 90;
  o.num_cycles = 3;
  const Scheduler<CosineRestarts> s(o);
  CHECK(s.lr(0) == 1.0);
  CHECK(s.lr(30) == 1.0);  // restart after a third of training
  CHECK(s.lr(60) == 1.0);
  CHECK(s.lr(15) == Approx(0.5).epsilon(1e-15));
  CHECK(s.lr(90) == 0.0);
  CHECK(s.lr(1000) == 0.0);
}

TEST_CASE("the linear scaling rule scales with batch times accumulation over 16", "[schedule]") {
  STATIC_REQUIRE(schedule::adjusted_lr(2e-4, 8, 2) == 2e-4);  // constexpr: presets can fold it
  CHECK(schedule::adjusted_lr(1e-4, 1, 16) == 1e-4);
  CHECK(schedule::adjusted_lr(1e-4, 2, 8) == 1e-4);
  CHECK(schedule::adjusted_lr(1e-4, 4, 2) == Approx(5e-5).epsilon(1e-15));
  CHECK(schedule::adjusted_lr(1e-4, 32, 2) == Approx(4e-4).epsilon(1e-15));
}

TEST_CASE("scheduler names map to their policies", "[schedule]") {
  auto name_of = [](auto policy) { return std::string(decltype(policy)::name); };
  CHECK(schedule::visit_lr_policy("cosine", name_of) == "cosine");
  CHECK(schedule::visit_lr_policy("cosine_with_restarts", name_of) == "cosine_with_restarts");
  CHECK(schedule::visit_lr_policy("linear", name_of) == "linear");
  CHECK(schedule::visit_lr_policy("constant", name_of) == "constant_with_warmup");
  CHECK(schedule::visit_lr_policy("cosine_warm_restarts", name_of) == "cosine_warm_restarts");
  CHECK_THROWS_WITH(schedule::visit_lr_policy("polynomial", name_of), Catch::Contains("'polynomial'"));
}

TEST_CASE("bad schedule options are errors naming the value", "[schedule][errors]") {
  ScheduleOptions o{};
  o.total_steps = 100;
  o.warmup_steps = 120;
  CHECK_THROWS_WITH(Scheduler<Cosine>(o), Catch::Contains("warmup_steps 120") && Catch::Contains("total_steps 100"));
  o.warmup_steps = -1;
  CHECK_THROWS_WITH(Scheduler<Linear>(o), Catch::Contains("warmup_steps") && Catch::Contains("-1"));
  o = ScheduleOptions{};
  CHECK_THROWS_WITH(Scheduler<Linear>(o), Catch::Contains("total_steps") && Catch::Contains("got 0"));
  o.total_steps = -5;
  CHECK_THROWS_WITH(Scheduler<Linear>(o), Catch::Contains("got -5"));
  o.total_steps = 100;
  o.base_lr = -1e-4;
  CHECK_THROWS_WITH(Scheduler<Constant>(o), Catch::Contains("base_lr") && Catch::Contains("-0.0001"));
  o.base_lr = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(Scheduler<Constant>(o), Catch::Contains("base_lr") && Catch::Contains("nan"));
  o.base_lr = 1e-4;
  o.num_cycles = 0.0;
  CHECK_THROWS_WITH(Scheduler<Cosine>(o), Catch::Contains("num_cycles") && Catch::Contains("got 0"));
  o.num_cycles = -2.0;
  CHECK_THROWS_WITH(Scheduler<CosineRestarts>(o), Catch::Contains("num_cycles") && Catch::Contains("-2"));
  o.num_cycles = std::numeric_limits<double>::infinity();
  CHECK_THROWS_WITH(Scheduler<Cosine>(o), Catch::Contains("num_cycles") && Catch::Contains("inf"));
  o.num_cycles.reset();
  o.t0 = 0;
  CHECK_THROWS_WITH(Scheduler<WarmRestarts>(o), Catch::Contains("t0") && Catch::Contains("got 0"));
  o.t0 = 5;
  o.t_mult = 0;
  CHECK_THROWS_WITH(Scheduler<WarmRestarts>(o), Catch::Contains("t_mult") && Catch::Contains("got 0"));
  o.t_mult = 2;
  o.eta_min = -1.0;
  CHECK_THROWS_WITH(Scheduler<WarmRestarts>(o), Catch::Contains("eta_min") && Catch::Contains("-1"));
  o.eta_min = 0.0;
  const Scheduler<WarmRestarts> ok(o);
  CHECK_THROWS_WITH(ok.lr(-3), Catch::Contains("step") && Catch::Contains("-3"));
  CHECK_THROWS_AS(Scheduler<Cosine>(ScheduleOptions{.warmup_steps = 11, .total_steps = 10}), Error);
}

TEST_CASE("bad warmup ratios and batch sizes are errors naming the value", "[schedule][errors]") {
  CHECK_THROWS_WITH(schedule::warmup_steps_for(1.5, 100), Catch::Contains("1.5"));
  CHECK_THROWS_WITH(schedule::warmup_steps_for(1.0, 100), Catch::Contains("[0, 1)"));
  CHECK_THROWS_WITH(schedule::warmup_steps_for(-0.1, 100), Catch::Contains("-0.1"));
  CHECK_THROWS_WITH(schedule::warmup_steps_for(0.1, -7), Catch::Contains("-7"));
  CHECK_THROWS_WITH(schedule::adjusted_lr(1e-4, 0, 4), Catch::Contains("batch_size") && Catch::Contains("got 0"));
  CHECK_THROWS_WITH(schedule::adjusted_lr(1e-4, 4, -2),
                    Catch::Contains("gradient_accumulation") && Catch::Contains("-2"));
  CHECK_THROWS_WITH(schedule::adjusted_lr(-1.0, 4, 2), Catch::Contains("base_lr") && Catch::Contains("-1"));
}
