#include <catch2/catch.hpp>

#include <fixtures.hpp>
#include <vidlora/core.hpp>
#include <vidlora/loss.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

using namespace vidlora;
using Catch::Matchers::Contains;

namespace {

// Float64 reference of the same formula, written directly from its definition (log p_j summed).
struct Reference {
  double loss;
  MatrixD grad;
};
Reference reference_cross_entropy(const MatrixD& z, const std::vector<int>& targets, double eps, int ignore) {
  const Eigen::Index rows = z.rows(), vocab = z.cols();
  MatrixD grad = MatrixD::Zero(rows, vocab);
  double total = 0;
  long n = 0;
  for (Eigen::Index i = 0; i < rows; ++i) n += targets[static_cast<std::size_t>(i)] != ignore;
  for (Eigen::Index i = 0; i < rows; ++i) {
    const int t = targets[static_cast<std::size_t>(i)];
    if (t == ignore) continue;
    double denom = 0;
    for (Eigen::Index j = 0; j < vocab; ++j) denom += std::exp(z(i, j));
    double mean_neg_logp = 0;
    for (Eigen::Index j = 0; j < vocab; ++j) {
      const double logp = z(i, j) - std::log(denom);
      mean_neg_logp -= logp / static_cast<double>(vocab);
      grad(i, j) =
          (std::exp(logp) - eps / static_cast<double>(vocab) - (j == t ? 1 - eps : 0)) / static_cast<double>(n);
    }
    total += (1 - eps) * -(z(i, t) - std::log(denom)) + eps * mean_neg_logp;
  }
  return {total / static_cast<double>(n), grad};
}

MatrixD random_logits(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, double spread = 4.0) {
  CounterRng rng(seed);
  MatrixD m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = rng.uniform(-spread, spread);
  return m;
}

void check_against_torch_fixture(const std::string& file) {
  const auto fixture = test::load_fixture(file);
  for (const auto& c : fixture["cases"]) {
    INFO(c["name"].get<std::string>() << " from " << file);
    const Matrix logits = test::json_matrix<float>(c["logits"]);
    const auto targets = test::json_vector<int>(c["targets"]);
    CrossEntropyOptions options;
    options.label_smoothing = c["label_smoothing"].get<double>();
    options.ignore_index = c["ignore_index"].get<int>();
    const loss::CrossEntropyResult r = loss::cross_entropy(logits, targets, options);
    const double torch_loss = c["loss"].get<double>();
    CHECK(std::abs(r.loss - torch_loss) <= 1e-6 * std::abs(torch_loss));
    CHECK(std::abs(r.loss_sum - c["loss_sum"].get<double>()) <= 1e-6 * std::abs(c["loss_sum"].get<double>()));
    CHECK(r.valid_tokens == c["valid_tokens"].get<long>());
    const Matrix torch_grad = test::json_matrix<float>(c["grad"]);
    REQUIRE(r.grad.rows() == torch_grad.rows());
    REQUIRE(r.grad.cols() == torch_grad.cols());
    CHECK((r.grad - torch_grad).cwiseAbs().maxCoeff() <= 1e-6);
  }
}

}  // namespace

TEST_CASE("cross entropy matches torch with ignored tokens and label smoothing for a tiny vocabulary",
          "[loss][cross_entropy][fixture]") {
  check_against_torch_fixture("loss/ce_tiny.json");
}

TEST_CASE("cross entropy matches torch for a 1000 word vocabulary without label smoothing",
          "[loss][cross_entropy][fixture]") {
  check_against_torch_fixture("loss/ce_v1000_eps0.json");
}

TEST_CASE("cross entropy matches torch for a 1000 word vocabulary with label smoothing 0.1",
          "[loss][cross_entropy][fixture]") {
  check_against_torch_fixture("loss/ce_v1000_eps0.1.json");
}

TEST_CASE("cross entropy in double matches the log-softmax definition to 1e-12", "[loss][cross_entropy]") {
  const MatrixD z = random_logits(9, 13, 3);
  const std::vector<int> targets{0, 12, -100, 5, 5, -100, 7, 1, 11};
  for (const double eps : {0.0, 0.1, 1.0}) {
    INFO("label_smoothing " << eps);
    CrossEntropyOptions options;
    options.label_smoothing = eps;
    const auto r = loss::cross_entropy(z, targets, options);
    const Reference ref = reference_cross_entropy(z, targets, eps, -100);
    CHECK(r.loss == Approx(ref.loss).epsilon(1e-12));
    CHECK((r.grad - ref.grad).cwiseAbs().maxCoeff() < 1e-12);
  }
}

TEST_CASE("ignored rows get an exactly zero gradient and do not count as tokens", "[loss][cross_entropy]") {
  const Matrix z = random_logits(4, 6, 5).cast<float>();
  const std::vector<int> targets{2, -100, 3, -100};
  const loss::CrossEntropyResult r = loss::cross_entropy(z, targets, CrossEntropyOptions{.label_smoothing = 0.1});
  CHECK(r.valid_tokens == 2);
  CHECK(r.grad.row(1).cwiseAbs().maxCoeff() == 0.0f);
  CHECK(r.grad.row(3).cwiseAbs().maxCoeff() == 0.0f);
  // Each valid row's gradient sums to zero (Σ_j p_j = 1 = (1-ε) + V·ε/V), divided by 2 tokens.
  CHECK(std::abs(r.grad.row(0).sum()) < 1e-6);
  CHECK(r.grad(0, 2) < 0.0f);
  // Changing an ignored row's logits changes nothing.
  Matrix z2 = z;
  z2.row(1).setConstant(100.0f);
  const loss::CrossEntropyResult r2 = loss::cross_entropy(z2, targets, CrossEntropyOptions{.label_smoothing = 0.1});
  CHECK(r2.loss == r.loss);
}

TEST_CASE("a custom ignore index is honoured and -100 then counts as out of range", "[loss][cross_entropy]") {
  const Matrix z = random_logits(3, 4, 6).cast<float>();
  CrossEntropyOptions options;
  options.ignore_index = 3;
  const auto r = loss::cross_entropy(z, std::vector<int>{3, 1, 3}, options);
  CHECK(r.valid_tokens == 1);
  const double expected = -std::log(std::exp(double(z(1, 1))) / z.row(1).cast<double>().array().exp().sum());
  CHECK(r.loss == Approx(expected).epsilon(1e-6));
  CHECK_THROWS_WITH(loss::cross_entropy(z, std::vector<int>{-100, 1, 3}, options),
                    Contains("-100") && Contains("position 0"));
}

TEST_CASE("when every target is ignored the loss is zero with zero gradient instead of torch NaN",
          "[loss][cross_entropy]") {
  const auto fixture = test::load_fixture("loss/ce_tiny.json");
  CHECK(fixture["all_ignored_torch_mean_is_nan"].get<bool>());  // the behaviour we deliberately differ from
  const Matrix z = random_logits(3, 4, 7).cast<float>();
  const loss::CrossEntropyResult r = loss::cross_entropy(z, std::vector<int>{-100, -100, -100});
  CHECK(r.loss == 0.0);
  CHECK(r.loss_sum == 0.0);
  CHECK(r.valid_tokens == 0);
  CHECK(r.grad.rows() == 3);
  CHECK(r.grad.cols() == 4);
  CHECK(r.grad.cwiseAbs().maxCoeff() == 0.0f);
}

TEST_CASE("sum reduction is the mean times the valid token count with an unscaled gradient", "[loss][cross_entropy]") {
  const Matrix z = random_logits(5, 7, 8).cast<float>();
  const std::vector<int> targets{1, -100, 6, 0, 2};
  const auto mean = loss::cross_entropy(z, targets, CrossEntropyOptions{.label_smoothing = 0.2});
  const auto sum =
      loss::cross_entropy(z, targets, CrossEntropyOptions{.label_smoothing = 0.2, .reduction = loss::Reduction::Sum});
  CHECK(sum.loss == Approx(mean.loss * 4).epsilon(1e-12));
  CHECK(sum.normalizer == 1.0);
  CHECK(mean.normalizer == 4.0);
  CHECK(test::normwise_error(sum.grad, (mean.grad * 4.0f).eval()) < 1e-6);
}

TEST_CASE("huge logits do not overflow thanks to max subtraction", "[loss][cross_entropy]") {
  Matrix z(2, 3);
  z << 1000.0f, 999.0f, 998.0f, -1000.0f, -1001.0f, -1002.0f;
  const auto r = loss::cross_entropy(z, std::vector<int>{0, 0});
  // both rows are the softmax of (0, -1, -2): -log(1 / (1 + e^-1 + e^-2))
  const double expected = std::log(1 + std::exp(-1.0) + std::exp(-2.0));
  CHECK(r.loss == Approx(expected).epsilon(1e-6));
  CHECK(r.grad.allFinite());
}

TEST_CASE("the host-device element helpers reproduce the gradient and loss", "[loss][cross_entropy]") {
  const MatrixD z = random_logits(2, 5, 9);
  const std::vector<int> targets{3, 0};
  const double eps = 0.1;
  const auto r = loss::cross_entropy(z, targets, CrossEntropyOptions{.label_smoothing = eps});
  double loss_sum = 0;
  for (Eigen::Index i = 0; i < 2; ++i) {
    loss::OnlineLogSumExp lse;
    for (Eigen::Index j = 4; j >= 0; --j) lse.add(z(i, j));  // order must not matter
    const double direct = std::log(z.row(i).array().exp().sum());
    CHECK(lse.value() == Approx(direct).epsilon(1e-14));
    loss_sum += loss::cross_entropy_token_loss(lse.value(), z(i, targets[std::size_t(i)]), z.row(i).sum(), 5, eps);
    for (Eigen::Index j = 0; j < 5; ++j)
      CHECK(r.grad(i, j) == Approx(loss::cross_entropy_logit_grad(std::exp(z(i, j) - lse.value()),
                                                                  j == targets[std::size_t(i)], eps, 0.2) /
                                   2)
                                .epsilon(1e-12));
  }
  CHECK(r.loss == Approx(loss_sum / 2).epsilon(1e-12));
  loss::OnlineLogSumExp a, b, both;
  for (double x : {1.0, 5.0, -3.0}) a.add(x), both.add(x);
  for (double x : {7.0, 2.0}) b.add(x), both.add(x);
  a.merge(b);
  CHECK(a.value() == Approx(both.value()).epsilon(1e-14));
  CHECK(a.max == 7.0);
}

TEST_CASE("a NaN in the online log-sum-exp survives every merge, on either side of a reduction tree",
          "[loss][cross_entropy][errors]") {
  // The CUDA loss kernels reduce a row as 256 strided lanes (OnlineLogSumExp::add) and a fixed tree of merges. A lane
  // whose only values are NaN must still make the row NaN when it is merged in as the tree's right-hand side: one NaN
  // logit at every position of rows of 50 and 300 (shorter than the lanes) and of one lane's stride.
  constexpr int kLanes = 256;
  for (const int count : {50, 300, 2 * kLanes + 7})
    for (int bad = 0; bad < count; ++bad) {
      INFO("count " << count << ", NaN at " << bad);
      std::vector<loss::OnlineLogSumExp> lane(kLanes);
      for (int j = 0; j < count; ++j)
        lane[static_cast<std::size_t>(j % kLanes)].add(j == bad ? std::nan("") : 0.01 * j);
      for (int w = kLanes / 2; w > 0; w /= 2)
        for (int i = 0; i < w; ++i) lane[static_cast<std::size_t>(i)].merge(lane[static_cast<std::size_t>(i + w)]);
      CHECK(std::isnan(lane[0].value()));
    }
  loss::OnlineLogSumExp a, nan_only, empty;
  a.add(1.0);
  nan_only.add(std::nan(""));
  a.merge(nan_only);
  CHECK(std::isnan(a.value()));
  nan_only.add(3.0);  // later values do not undo it
  nan_only.merge(empty);
  CHECK(std::isnan(nan_only.value()));
  // -inf values and empty blocks still add nothing
  loss::OnlineLogSumExp b;
  b.add(2.0);
  b.add(-INFINITY);
  b.merge(empty);
  b.merge(-INFINITY, std::nan(""));  // a block of -inf logits: Σ exp(-inf - (-inf)) is NaN, and it is left out
  CHECK(b.value() == 2.0);
}

TEST_CASE("cross entropy accepts an Eigen expression for the logits", "[loss][cross_entropy]") {
  const Matrix a = random_logits(3, 4, 10).cast<float>();
  const auto from_expr = loss::cross_entropy(a * 2.0f, std::vector<int>{0, 1, 2});
  const Matrix doubled = a * 2.0f;
  const auto from_matrix = loss::cross_entropy(doubled, std::vector<int>{0, 1, 2});
  CHECK(from_expr.loss == from_matrix.loss);
}

TEST_CASE("out of range targets are reported with their position and value", "[loss][cross_entropy][errors]") {
  const Matrix z = random_logits(3, 4, 11).cast<float>();
  CHECK_THROWS_AS(loss::cross_entropy(z, std::vector<int>{0, 4, 1}), Error);
  CHECK_THROWS_WITH(loss::cross_entropy(z, std::vector<int>{0, 4, 1}),
                    Contains("target 4 at position 1") && Contains("[0, 4)"));
  CHECK_THROWS_WITH(loss::cross_entropy(z, std::vector<int>{0, 1, -1}), Contains("target -1 at position 2"));
}

TEST_CASE("a target count that differs from the logit rows names both shapes", "[loss][cross_entropy][errors]") {
  const Matrix z = random_logits(3, 4, 12).cast<float>();
  CHECK_THROWS_AS(loss::cross_entropy(z, std::vector<int>{0, 1}), Error);
  CHECK_THROWS_WITH(loss::cross_entropy(z, std::vector<int>{0, 1}), Contains("[3, 4]") && Contains("[2]"));
}

TEST_CASE("label smoothing outside 0 to 1 and an empty vocabulary are rejected", "[loss][cross_entropy][errors]") {
  const Matrix z = random_logits(2, 4, 13).cast<float>();
  const std::vector<int> t{0, 1};
  CHECK_THROWS_WITH(loss::cross_entropy(z, t, CrossEntropyOptions{.label_smoothing = 1.5}), Contains("1.5"));
  CHECK_THROWS_WITH(loss::cross_entropy(z, t, CrossEntropyOptions{.label_smoothing = -0.1}), Contains("-0.1"));
  CHECK_THROWS_WITH(loss::cross_entropy(Matrix(2, 0), t), Contains("vocabulary is empty"));
  CHECK_THROWS_WITH(
      loss::cross_entropy(z, t, CrossEntropyOptions{.reduction = loss::Reduction::Sum, .total_valid_tokens = 5}),
      Contains("Reduction::Mean"));
}

TEST_CASE("nan or infinite logits are reported with the row", "[loss][cross_entropy][errors]") {
  Matrix z = random_logits(3, 4, 14).cast<float>();
  z(2, 1) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(loss::cross_entropy(z, std::vector<int>{0, 1, 2}), Contains("row 2") && Contains("nan"));
  z(2, 1) = std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH(loss::cross_entropy(z, std::vector<int>{0, 1, 2}), Contains("row 2"));
  // an ignored row may hold anything
  CHECK_NOTHROW(loss::cross_entropy(z, std::vector<int>{0, 1, -100}));
}
