// optim::GradScaler against torch.amp.GradScaler("cpu") (tests/fixtures/optim/grad_scaler.json, made by
// tools/reference/grad_scaler.py): scale, skipped steps, growth tracker, unscaled gradients bit for bit,
// clipping after unscale, AdamW on the clean steps, and the state_dict record across a save / load.
#include <catch2/catch.hpp>

#include <fixtures.hpp>
#include <vidlora/optim.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

using namespace vidlora;
using optim::GradScaler;
using optim::GradScalerOptions;
using vidlora::test::load_fixture;

namespace {

GradScalerOptions options_from(const nlohmann::json& o) {
  GradScalerOptions g;
  if (o.contains("init_scale")) g.init_scale = o["init_scale"].get<double>();
  if (o.contains("growth_factor")) g.growth_factor = o["growth_factor"].get<double>();
  if (o.contains("backoff_factor")) g.backoff_factor = o["backoff_factor"].get<double>();
  if (o.contains("growth_interval")) g.growth_interval = o["growth_interval"].get<long>();
  return g;
}

std::vector<std::uint32_t> bits_of(const Matrix& m) {
  std::vector<std::uint32_t> out;
  for (Eigen::Index i = 0; i < m.size(); ++i) out.push_back(std::bit_cast<std::uint32_t>(m.data()[i]));
  return out;
}

void set_from_bits(Matrix& m, const nlohmann::json& bits) {
  REQUIRE(static_cast<Eigen::Index>(bits.size()) == m.size());
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = std::bit_cast<float>(bits[i].get<std::uint32_t>());
}

const nlohmann::json& scenario(const nlohmann::json& f, const std::string& name) {
  for (const auto& s : f["scenarios"])
    if (s["name"] == name) return s;
  throw Error("grad_scaler.json has no scenario " + name);
}

// Replays one recorded scenario step by step; returns the number of steps the optimizer took.
int replay(const nlohmann::json& s) {
  const bool tensors = s["tensors"].get<bool>(), use_optimizer = s["optimizer"].get<bool>();
  const double clip = s["clip"].get<double>(), lr = s["lr"].get<double>();
  std::vector<Matrix> values, grads;
  for (std::size_t t = 0; t < s["shapes"].size(); ++t) {
    const auto rows = s["shapes"][t][0].get<Eigen::Index>(), cols = s["shapes"][t][1].get<Eigen::Index>();
    Matrix v(rows, cols);
    for (Eigen::Index i = 0; i < v.size(); ++i) v.data()[i] = s["initial"][t][static_cast<std::size_t>(i)].get<float>();
    values.push_back(v);
    grads.push_back(Matrix::Zero(rows, cols));
  }
  std::vector<optim::Parameter> params;
  for (std::size_t t = 0; t < values.size(); ++t)
    params.push_back({std::string("p").append(std::to_string(t)), &values[t], &grads[t]});
  optim::AdamW adamw(params, optim::AdamWOptions{.weight_decay = s["weight_decay"].get<double>()});

  GradScaler scaler(options_from(s["options"]));
  int stepped = 0;
  for (std::size_t k = 0; k < s["steps"].size(); ++k) {
    const auto& r = s["steps"][k];
    INFO(s["name"].get<std::string>() << " step " << k + 1);
    if (!tensors) {  // [scale_after, growth_tracker, skipped, found_inf]
      scaler.record_unscaled(r[3].get<double>() != 0.0);
      CHECK(scaler.should_step() == (r[2].get<int>() == 0));
      const auto u = scaler.update();
      REQUIRE(u.scale_after == r[0].get<float>());
      REQUIRE(u.growth_tracker == r[1].get<long>());
      REQUIRE(u.skipped == (r[2].get<int>() == 1));
      stepped += !u.skipped;
      continue;
    }
    REQUIRE(scaler.scale() == r["scale_before"].get<float>());
    CHECK(scaler.scale_loss(1.5f) == r["scaled_loss"].get<float>());
    for (std::size_t t = 0; t < grads.size(); ++t) set_from_bits(grads[t], r["grads_in"][t]);
    const bool found = scaler.unscale(std::span<const optim::Parameter>(params));
    CHECK(found == (r["found_inf"].get<double>() != 0.0));
    for (std::size_t t = 0; t < grads.size(); ++t)
      CHECK(bits_of(grads[t]) == r["grads_unscaled"][t].get<std::vector<std::uint32_t>>());
    CHECK(scaler.should_step() == !r["skipped"].get<bool>());
    if (scaler.should_step() && use_optimizer) {
      if (clip > 0) {  // clip after unscale: the norm of the true gradients
        const double norm = optim::clip_grad_norm(std::span<const optim::Parameter>(params), clip);
        CHECK(norm == Approx(r["grad_norm"].get<double>()).epsilon(1e-6));
      }
      adamw.step(lr);
      ++stepped;
      for (std::size_t t = 0; t < values.size(); ++t)
        for (Eigen::Index i = 0; i < values[t].size(); ++i)
          CHECK(values[t].data()[i] == Approx(r["params"][t][static_cast<std::size_t>(i)].get<double>()).epsilon(1e-6));
    } else if (use_optimizer) {  // a skipped step: no AdamW call, the parameters stay (torch's too)
      for (std::size_t t = 0; t < values.size(); ++t)
        for (Eigen::Index i = 0; i < values[t].size(); ++i) {
          CHECK(values[t].data()[i] == Approx(r["params"][t][static_cast<std::size_t>(i)].get<double>()).epsilon(1e-6));
          if (k > 0)
            CHECK(r["params"][t][static_cast<std::size_t>(i)] ==
                  s["steps"][k - 1]["params"][t][static_cast<std::size_t>(i)]);
        }
    } else {
      stepped += scaler.should_step();
    }
    const auto u = scaler.update();
    CHECK(u.skipped == r["skipped"].get<bool>());
    CHECK(u.scale_before == r["scale_before"].get<float>());
    REQUIRE(u.scale_after == r["scale_after"].get<float>());
    REQUIRE(u.growth_tracker == r["growth_tracker"].get<long>());
    REQUIRE(scaler.growth_tracker() == r["growth_tracker"].get<long>());
    if (s.contains("save_at") && s["save_at"].get<std::size_t>() == k + 1) {
      CHECK(scaler.state_dict() == s["saved_state_dict"]);
      // Resume into a scaler built with other options: the record (torch's own dict here) carries them.
      GradScaler resumed(options_from(s["resume_options"]));
      resumed.load_state_dict(s["saved_state_dict"]);
      CHECK(resumed.state_dict() == scaler.state_dict());
      scaler = resumed;
    }
  }
  CHECK(scaler.state_dict() == s["final_state_dict"]);
  return stepped;
}

}  // namespace

TEST_CASE("grad scaler follows torch's default schedule: x2 after 2000 clean steps, x0.5 on inf",
          "[optim][reference]") {
  const auto f = load_fixture("optim/grad_scaler.json");
  const auto& s = scenario(f, "default_options_growth");
  CHECK(GradScalerOptions{}.init_scale == 65536.0);
  CHECK(GradScalerOptions{}.growth_interval == 2000);
  CHECK(replay(s) == 2002);                              // 2003 steps, one skipped
  CHECK(s["steps"][1998][0].get<double>() == 65536.0);   // step 1999: not yet
  CHECK(s["steps"][1999][0].get<double>() == 131072.0);  // step 2000: grown
  CHECK(s["steps"][2001][0].get<double>() == 65536.0);   // step 2002: inf, backed off
}

TEST_CASE("grad scaler replays torch with consecutive infs, NaN, -inf, clipping and AdamW", "[optim][reference]") {
  const auto f = load_fixture("optim/grad_scaler.json");
  CHECK(replay(scenario(f, "small_interval")) == 12);
}

TEST_CASE("grad scaler resumes from torch's state_dict and keeps the saved factors", "[optim][reference]") {
  const auto f = load_fixture("optim/grad_scaler.json");
  const auto& s = scenario(f, "small_interval");
  REQUIRE(s["save_at"].get<int>() == 9);
  // The resumed scaler was built with growth 4 / backoff 0.25 / interval 99: torch's final dict still says 2 / 0.5 / 3.
  CHECK(s["final_state_dict"]["growth_interval"].get<long>() == 3);
  CHECK(s["resume_options"]["growth_interval"].get<long>() == 99);
  replay(s);
}

TEST_CASE("grad scaler rounds float scale times double factor as torch does", "[optim][reference]") {
  const auto f = load_fixture("optim/grad_scaler.json");
  const auto& s = scenario(f, "odd_factors");
  replay(s);
  // The fixture discriminates: a float x float product would differ from torch on some steps.
  int differs = 0;
  for (const auto& r : s["steps"]) {
    const float before = r["scale_before"].get<float>();
    const double factor = r["skipped"].get<bool>() ? 0.3 : 1.7;
    if (r["scale_after"].get<float>() != before)
      differs += before * static_cast<float>(factor) != r["scale_after"].get<float>();
  }
  CHECK(differs >= 2);
}

TEST_CASE("grad scaler does not grow past float32: the scale stays and the tracker resets", "[optim][reference]") {
  const auto f = load_fixture("optim/grad_scaler.json");
  const auto& s = scenario(f, "growth_to_overflow");
  replay(s);
  CHECK(s["steps"][1]["scale_after"].get<double>() == std::ldexp(1.0, 127));
}

TEST_CASE("grad scaler checks the gradients before unscaling them (scale below one)", "[optim][reference]") {
  const auto f = load_fixture("optim/grad_scaler.json");
  const auto& s = scenario(f, "scale_below_one");
  replay(s);
  // 3e38 x 2 overflows to inf after the unscale, yet the step is not skipped.
  CHECK(std::bit_cast<float>(s["steps"][1]["grads_unscaled"][1][1].get<std::uint32_t>()) ==
        std::numeric_limits<float>::infinity());
  CHECK_FALSE(s["steps"][1]["skipped"].get<bool>());
}

TEST_CASE("grad scaler enforces torch's order: one unscale per step, update after a check", "[optim][errors]") {
  Matrix w = Matrix::Ones(1, 2), g = Matrix::Constant(1, 2, 4.0f);
  const std::vector<optim::Parameter> params{{"w", &w, &g}};
  GradScaler s(GradScalerOptions{.init_scale = 4.0});
  CHECK_THROWS_WITH(s.update(), Catch::Contains("update() without an inf/NaN check"));
  CHECK_THROWS_WITH(s.should_step(), Catch::Contains("before unscale()"));
  CHECK_FALSE(s.unscale(std::span<const optim::Parameter>(params)));
  CHECK(g(0, 0) == 1.0f);
  CHECK_THROWS_WITH(s.unscale(std::span<const optim::Parameter>(params)), Catch::Contains("already unscaled"));
  CHECK_THROWS_WITH(s.record_unscaled(false), Catch::Contains("already unscaled"));
  CHECK_THROWS_WITH(s.record(), Catch::Contains("middle of a step"));
  CHECK(g(0, 0) == 1.0f);  // the refused second unscale changed nothing
  const auto u = s.update();
  CHECK_FALSE(u.skipped);
  CHECK(u.growth_tracker == 1);
  CHECK(s.record().growth_tracker == 1);
  // Parameter groups (AdamW::groups()) unscale every parameter of every group.
  Matrix w2 = Matrix::Ones(2, 1), g2 = Matrix::Constant(2, 1, 8.0f);
  const std::vector<optim::ParamGroup> groups{{{{"w", &w, &g}}, 0.0, 1.0, "a"}, {{{"w2", &w2, &g2}}, 0.0, 1.0, "b"}};
  g(0, 1) = std::numeric_limits<float>::quiet_NaN();
  CHECK(s.unscale(groups));
  CHECK(g(0, 0) == 0.25f);
  CHECK(g2(1, 0) == 2.0f);
  CHECK_FALSE(s.should_step());
  CHECK(s.update().skipped);
  CHECK(s.scale() == 2.0f);
}

TEST_CASE("grad scaler refuses bad options and bad records by name", "[optim][errors]") {
  CHECK_THROWS_WITH(GradScaler(GradScalerOptions{.growth_factor = 1.0}), Catch::Contains("growth_factor"));
  CHECK_THROWS_WITH(GradScaler(GradScalerOptions{.backoff_factor = 1.0}), Catch::Contains("backoff_factor"));
  CHECK_THROWS_WITH(GradScaler(GradScalerOptions{.backoff_factor = 0.0}), Catch::Contains("backoff_factor"));
  CHECK_THROWS_WITH(GradScaler(GradScalerOptions{.growth_interval = 0}), Catch::Contains("growth_interval"));
  CHECK_THROWS_WITH(GradScaler(GradScalerOptions{.init_scale = 1e39}), Catch::Contains("overflows float32"));
  CHECK_THROWS_WITH(GradScaler(GradScalerOptions{.init_scale = -1}), Catch::Contains("init_scale"));
  GradScaler s;
  CHECK_THROWS_WITH(s.load_state_dict(nlohmann::json::object()), Catch::Contains("empty"));
  auto j = s.state_dict();
  j.erase("_growth_tracker");
  CHECK_THROWS_WITH(s.load_state_dict(j), Catch::Contains("'_growth_tracker'"));
  j = s.state_dict();
  j["_growth_tracker"] = 2000;
  CHECK_THROWS_WITH(s.load_state_dict(j), Catch::Contains("_growth_tracker 2000") && Catch::Contains("[0, 2000)"));
  j = s.state_dict();
  j["growth_interval"] = 2.5;
  CHECK_THROWS_WITH(s.load_state_dict(j), Catch::Contains("integers"));
  CHECK(s.state_dict()["scale"].get<double>() == 65536.0);  // unchanged by the refused loads
  CHECK_THROWS_WITH(GradScaler::options_for_precision("fp8"), Catch::Contains("'fp8'"));
}

TEST_CASE("a disabled grad scaler (bf16 / fp32) scales by one and never skips", "[optim]") {
  CHECK(GradScaler::options_for_precision("fp16").enabled);
  CHECK_FALSE(GradScaler::options_for_precision("bf16").enabled);
  CHECK_FALSE(GradScaler::options_for_precision("fp32").enabled);
  GradScaler s(GradScaler::options_for_precision("bf16"));
  Matrix w = Matrix::Ones(1, 2), g = Matrix::Constant(1, 2, std::numeric_limits<float>::infinity());
  const std::vector<optim::Parameter> params{{"w", &w, &g}};
  CHECK(s.scale() == 1.0f);
  CHECK(s.scale_loss(2.5f) == 2.5f);
  CHECK_FALSE(s.unscale(std::span<const optim::Parameter>(params)));  // torch: a disabled unscale_ does nothing
  CHECK(std::isinf(g(0, 0)));
  CHECK(s.should_step());
  CHECK_FALSE(s.update().skipped);
  CHECK(s.state_dict() == nlohmann::json::object());
  s.load_state_dict(nlohmann::json::object());  // as torch: loading into a disabled scaler is a no-op
}

TEST_CASE("unscale_element checks before it multiplies and leaves values alone at inv_scale 1", "[optim]") {
  float g = -0.0f;
  CHECK_FALSE(optim::unscale_element(g, 1.0f));
  CHECK(std::signbit(g));
  const float nan = std::bit_cast<float>(0x7fc01234u);
  g = nan;
  CHECK(optim::unscale_element(g, 1.0f));
  CHECK(std::bit_cast<std::uint32_t>(g) == 0x7fc01234u);  // untouched: same payload
  g = 3e38f;
  CHECK_FALSE(optim::unscale_element(g, 2.0f));  // finite before the multiply
  CHECK(std::isinf(g));
  g = -std::numeric_limits<float>::infinity();
  CHECK(optim::unscale_element(g, 0.5f));
  CHECK(optim::reciprocal_scale(3.0f) == static_cast<float>(1.0 / 3.0));
  CHECK(optim::is_nonfinite(std::numeric_limits<float>::quiet_NaN()));
  CHECK_FALSE(optim::is_nonfinite(std::numeric_limits<float>::max()));
  CHECK_FALSE(optim::is_nonfinite(std::numeric_limits<float>::denorm_min()));
}
