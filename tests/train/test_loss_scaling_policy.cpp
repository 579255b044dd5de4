// train::LossScaling: the Trainer's step policy over optim::GradScaler (the runs themselves: tests/trainer/
// test_loss_scaling.cpp).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <vidlora/core/matrix.hpp>
#include <vidlora/optim/parameter.hpp>
#include <vidlora/train/loss_scaling.hpp>

using namespace vidlora;

namespace {
struct OneParameter {
  Matrix value = Matrix::Zero(1, 3), grad = Matrix::Zero(1, 3);
  std::vector<optim::Parameter> params() { return {{"w", &value, &grad}}; }
};
}  // namespace

TEST_CASE("a disabled LossScaling changes nothing and keeps no state", "[train][loss_scaling]") {
  train::LossScaling off;
  CHECK_FALSE(off.enabled());
  CHECK(off.grad_factor() == 1.0);
  OneParameter p;
  p.grad << 1.0f, std::numeric_limits<float>::infinity(), 3.0f;
  CHECK_FALSE(off.unscale_overflowed(p.params()));  // no check, no unscale: the Trainer's own NaN check decides
  CHECK(p.grad(0, 0) == 1.0f);
  CHECK(off.skip(false).skipped);
  CHECK_FALSE(off.stepped().has_value());
  CHECK(off.state() == nlohmann::json::object());
  CHECK(off.restore(nlohmann::json::object()).empty());
  CHECK(off.restore({{"scale", 512.0},
                     {"growth_factor", 2.0},
                     {"backoff_factor", 0.5},
                     {"growth_interval", 2000},
                     {"_growth_tracker", 3}}) ==
        "the checkpoint's loss scale (512) is not used: this run does not "
        "scale its loss");
}

TEST_CASE("an enabled LossScaling unscales, skips with a backoff, steps with a growth, and restores",
          "[train][loss_scaling]") {
  train::LossScaling on({.init_scale = 1024.0, .growth_interval = 2, .enabled = true});
  CHECK(on.grad_factor() == 1024.0);
  OneParameter p;
  p.grad << 2048.0f, -512.0f, 0.0f;
  CHECK_FALSE(on.unscale_overflowed(p.params()));
  CHECK(p.grad(0, 0) == 2.0f);  // × 1/1024, exactly
  CHECK(p.grad(0, 1) == -0.5f);
  CHECK(on.stepped() == 1024.0);  // tracker 1 of 2
  p.grad << 1.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f;
  CHECK(on.unscale_overflowed(p.params()));
  const auto u = on.skip(/*unscaled=*/true);
  CHECK(u.skipped);
  CHECK(u.scale_before == 1024.0f);
  CHECK(u.scale_after == 512.0f);
  CHECK(on.skip(/*unscaled=*/false).scale_after == 256.0f);  // a NaN loss: no unscale, the same backoff
  p.grad << 1.0f, 1.0f, 1.0f;
  CHECK_FALSE(on.unscale_overflowed(p.params()));
  CHECK(on.stepped() == 256.0);  // tracker 1
  CHECK_FALSE(on.unscale_overflowed(p.params()));
  CHECK(on.stepped() == 512.0);  // tracker 2 = growth_interval: ×2
  const nlohmann::json saved = on.state();
  CHECK(saved.at("scale").get<double>() == 512.0);
  CHECK(saved.at("_growth_tracker").get<long>() == 0);

  train::LossScaling again({.enabled = true});
  CHECK(again.restore(saved).empty());
  CHECK(again.grad_factor() == 512.0);
  CHECK(again.state() == saved);
  train::LossScaling fresh({.enabled = true});
  CHECK(fresh.restore(nlohmann::json::object()) ==
        "the checkpoint holds no loss-scaler state (a run without loss scaling): starting at scale 65536");
  CHECK(fresh.grad_factor() == 65536.0);
}
