// LoraLinear against PEFT's lora.Linear (tests/fixtures/lora/*.json, tools/reference/lora.py).
#include <catch2/catch.hpp>

#include <vidlora/lora.hpp>

#include <string>

#include "fixtures.hpp"

using namespace vidlora;
using vidlora::test::json_matrix;
using vidlora::test::json_vector;
using vidlora::test::normwise_error;

namespace {

template <bool RsLora>
void check_against_peft(const std::string& fixture) {
  const auto f = vidlora::test::load_fixture(fixture);
  REQUIRE(f["config"]["r"].get<int>() == 4);
  REQUIRE(f["config"]["lora_alpha"].get<int>() == 8);
  REQUIRE(f["config"]["use_rslora"].get<bool>() == RsLora);
  const auto bias_values = json_vector<float>(f["bias"]);
  const Vector bias = Eigen::Map<const Vector>(bias_values.data(), static_cast<Eigen::Index>(bias_values.size()));
  LoraLinear<4, 8> layer(json_matrix(f["W"]), bias, LoraOptions{.use_rslora = RsLora});
  CHECK(layer.scaling() == Approx(f["scaling"].get<double>()).epsilon(1e-7));
  layer.lora_A() = json_matrix(f["A"]);
  layer.lora_B() = json_matrix(f["B"]);

  const Matrix y = layer.forward(json_matrix(f["x"]), true);
  CHECK(normwise_error(y, json_matrix(f["y"])) < 1e-5);
  const Matrix dx = layer.backward(json_matrix(f["dy"]));
  CHECK(normwise_error(dx, json_matrix(f["grad_x"])) < 1e-5);
  CHECK(normwise_error(layer.grad_A(), json_matrix(f["grad_A"])) < 1e-5);
  CHECK(normwise_error(layer.grad_B(), json_matrix(f["grad_B"])) < 1e-5);

  layer.merge();
  CHECK(normwise_error(layer.base().dense(), json_matrix(f["merged_W"])) < 1e-5);
  CHECK(normwise_error(layer.forward(json_matrix(f["x"]), false), json_matrix(f["y"])) < 1e-5);
}

}  // namespace

TEST_CASE("lora forward backward and merge match PEFT with scaling alpha over r", "[lora][peft]") {
  check_against_peft<false>("lora/peft_linear.json");
}

TEST_CASE("lora forward backward and merge match PEFT with rslora scaling", "[lora][peft]") {
  check_against_peft<true>("lora/peft_linear_rslora.json");
}
