#include <catch2/catch.hpp>

#include <fixtures.hpp>
#include <vidlora/optim.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <string>

using namespace vidlora;
using vidlora::test::json_matrix;
using vidlora::test::load_fixture;
using vidlora::test::normwise_error;

namespace {
// The fixture writes NaN/Inf as the strings "nan", "inf", "-inf" (JSON has no such numbers).
double number(const nlohmann::json& v) {
  if (!v.is_string()) return v.get<double>();
  const auto s = v.get<std::string>();
  if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
  return s == "inf" ? std::numeric_limits<double>::infinity() : -std::numeric_limits<double>::infinity();
}
Matrix matrix(const nlohmann::json& rows) {
  Matrix m(static_cast<Eigen::Index>(rows.size()), static_cast<Eigen::Index>(rows[0].size()));
  for (Eigen::Index i = 0; i < m.rows(); ++i)
    for (Eigen::Index j = 0; j < m.cols(); ++j) m(i, j) = static_cast<float>(number(rows[i][j]));
  return m;
}
}  // namespace

TEST_CASE("clip_grad_norm matches torch clip_grad_norm_ above and below max_norm", "[optim][reference]") {
  const auto f = load_fixture("optim/clip.json");
  int finite_cases = 0;
  for (const auto& c : f["cases"]) {
    const double want = number(c["norm"]);
    if (!std::isfinite(want)) continue;
    ++finite_cases;
    std::map<std::string, Matrix> values, grads;
    std::vector<optim::Parameter> params;
    for (const auto& [name, rows] : c["grads"].items()) {
      grads[name] = matrix(rows);
      values[name] = Matrix::Zero(grads[name].rows(), grads[name].cols());
    }
    for (auto& [name, g] : grads) params.push_back({name, &values[name], &g});
    const double norm = clip_grad_norm(params, c["max_norm"].get<double>());
    INFO(c["label"].get<std::string>());
    CHECK(norm == Approx(want).epsilon(1e-6));  // torch reduces in float32, vidlora in double
    for (const auto& [name, rows] : c["clipped"].items()) CHECK(normwise_error(grads[name], json_matrix(rows)) < 1e-6);
  }
  CHECK(finite_cases == 3);
}

TEST_CASE("clip_grad_norm returns the norm before clipping and scales to max_norm", "[optim]") {
  Matrix v = Matrix::Zero(1, 2), g1 = Matrix::Zero(1, 2), w = Matrix::Zero(1, 1), g2 = Matrix::Zero(1, 1);
  g1 << 3.0f, 0.0f;
  g2 << 4.0f;
  std::vector<optim::Parameter> params{{"a", &v, &g1}, {"b", &w, &g2}};
  CHECK(clip_grad_norm(params, 1.0) == 5.0);  // global: sqrt(3² + 4²), across tensors
  CHECK(g1(0, 0) == Approx(3.0 / (5.0 + 1e-6)).epsilon(1e-7));
  CHECK(g2(0, 0) == Approx(4.0 / (5.0 + 1e-6)).epsilon(1e-7));
  CHECK(clip_grad_norm(params, 10.0) == Approx(1.0).epsilon(1e-6));
  CHECK(g2(0, 0) == Approx(4.0 / (5.0 + 1e-6)).epsilon(1e-7));  // below max_norm: untouched
}

TEST_CASE("clip_grad_norm reports a NaN or Inf norm and leaves the gradients for adamw to refuse", "[optim][errors]") {
  const auto f = load_fixture("optim/clip.json");
  for (const auto& c : f["cases"]) {
    const double want = number(c["norm"]);
    if (std::isfinite(want)) continue;
    std::map<std::string, Matrix> values, grads;
    for (const auto& [name, rows] : c["grads"].items()) {
      grads[name] = matrix(rows);
      values[name] = Matrix::Zero(grads[name].rows(), grads[name].cols());
    }
    std::vector<optim::Parameter> params;
    for (auto& [name, g] : grads) params.push_back({name, &values[name], &g});
    const Matrix a_before = grads["a"];
    const double norm = clip_grad_norm(params, 1.0);
    INFO(c["label"].get<std::string>());
    CHECK(std::isnan(norm) == std::isnan(want));  // torch: nan for a NaN, inf for an Inf
    CHECK(std::isinf(norm) == std::isinf(want));
    CHECK(grads["a"] == a_before);
    CHECK_THROWS_WITH(clip_grad_norm(params, 1.0, ClipOptions{.error_if_nonfinite = true}),
                      Catch::Contains("'b'") && Catch::Contains("at (0, 4)"));
    AdamW opt(params);
    CHECK_THROWS_WITH(opt.step(1e-3), Catch::Contains("'b'"));
  }
  Matrix v = Matrix::Zero(1, 1), g = Matrix::Ones(1, 1);
  std::vector<optim::Parameter> params{{"x", &v, &g}};
  CHECK_THROWS_WITH(clip_grad_norm(params, 0.0), Catch::Contains("max_norm") && Catch::Contains("got 0"));
  CHECK_THROWS_WITH(clip_grad_norm(params, -1.0), Catch::Contains("-1"));
}

TEST_CASE("the transformers grouping decays what Trainer get_decay_parameter_names decays", "[optim][reference]") {
  const auto f = load_fixture("optim/decay_names.json");
  REQUIRE(f["names"].size() >= 15);
  for (const auto& row : f["names"]) {
    INFO(row[0].get<std::string>());
    CHECK(optim::decays_in_transformers(row[0].get<std::string>()) == row[1].get<bool>());
  }
}

TEST_CASE("group builders split decay from no decay keeping order", "[optim]") {
  Matrix m[5], g[5];
  const char* names[5] = {"q_proj.lora_A.weight", "q_proj.lora_B.weight", "q_proj.bias", "model.norm.weight",
                          "projector.linear_1.weight"};
  std::vector<optim::Parameter> params;
  for (int i = 0; i < 5; ++i) {
    m[i] = g[i] = Matrix::Zero(1, 1);
    params.push_back({names[i], &m[i], &g[i]});
  }
  const auto tf = optim::transformers_groups(params, 0.01);
  REQUIRE(tf.size() == 2);
  CHECK(tf[0].weight_decay == 0.01);
  CHECK(tf[1].weight_decay == 0.0);
  REQUIRE(tf[0].params.size() == 3);
  CHECK(tf[0].params[0].name == "q_proj.lora_A.weight");
  CHECK(tf[0].params[1].name == "q_proj.lora_B.weight");
  CHECK(tf[0].params[2].name == "projector.linear_1.weight");
  REQUIRE(tf[1].params.size() == 2);
  CHECK(tf[1].params[0].name == "q_proj.bias");

  const auto lb = optim::lora_b_only_groups(params, 0.01);
  REQUIRE(lb[0].params.size() == 1);
  CHECK(lb[0].params[0].name == "q_proj.lora_B.weight");
  CHECK(lb[0].params[0].value == &m[1]);  // references, not copies
  CHECK(lb[1].params.size() == 4);
  CHECK(lb[1].weight_decay == 0.0);

  // Weight decay acts only on the decayed group: with zero gradients Adam's step is 0, so only
  // p·(1 - lr·wd) moves a parameter.
  for (int i = 0; i < 5; ++i) m[i].setConstant(1.0f);
  AdamW opt(lb);
  opt.step(0.1);
  CHECK(m[1](0, 0) == Approx(1.0 - 0.1 * 0.01).epsilon(1e-7));
  CHECK(m[0](0, 0) == 1.0f);
  CHECK(m[4](0, 0) == 1.0f);
}

TEST_CASE("clip_grad_norm over many chunks equals a plain double sum of squares", "[optim]") {
  // 3 tensors, one spanning several 64Ki-element chunks and a partial chunk.
  Matrix g1(300, 701), g2(1, 5), g3(17, 1), v1 = Matrix::Zero(300, 701), v2 = Matrix::Zero(1, 5),
                                            v3 = Matrix::Zero(17, 1);
  double sum = 0;
  float x = 0.25f;
  for (Matrix* g : {&g1, &g2, &g3})
    for (Eigen::Index i = 0; i < g->size(); ++i) {
      x = std::fmod(x * 3.7f + 0.13f, 2.0f) - 1.0f;
      g->data()[i] = x;
      sum += static_cast<double>(x) * static_cast<double>(x);
    }
  std::vector<optim::Parameter> params{{"g1", &v1, &g1}, {"g2", &v2, &g2}, {"g3", &v3, &g3}};
  const Matrix before = g1;
  const double norm = clip_grad_norm(params, 1.0);
  CHECK(norm == Approx(std::sqrt(sum)).epsilon(1e-12));
  CHECK(normwise_error(g1, (before.cast<double>() * (1.0 / (std::sqrt(sum) + 1e-6))).cast<float>().eval()) < 1e-6);
}
