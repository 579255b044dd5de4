#include <catch2/catch.hpp>

#include <fixtures.hpp>
#include <vidlora/core.hpp>
#include <vidlora/loss.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

using namespace vidlora;
using Catch::Matchers::Contains;

namespace {

Matrix random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, double spread) {
  CounterRng rng(seed);
  Matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(rng.uniform(-spread, spread));
  return m;
}

// Three micro-batches with 5, 2 and 7 valid tokens (of 6, 5 and 8 rows) and the one big batch they form.
struct Step {
  std::vector<Matrix> logits;
  std::vector<std::vector<int>> targets;
  Matrix all_logits;
  std::vector<int> all_targets;
};
Step make_step(Eigen::Index vocab) {
  Step s;
  s.targets = {{1, 2, -100, 3, 4, 0}, {-100, 5, -100, -100, 1}, {0, 1, 2, 3, -100, 4, 5, 6}};
  Eigen::Index rows = 0;
  for (std::size_t b = 0; b < 3; ++b) {
    const auto r = static_cast<Eigen::Index>(s.targets[b].size());
    s.logits.push_back(random_matrix(r, vocab, 100 + b, 3.0));
    rows += r;
  }
  s.all_logits.resize(rows, vocab);
  Eigen::Index at = 0;
  for (std::size_t b = 0; b < 3; ++b) {
    s.all_logits.middleRows(at, s.logits[b].rows()) = s.logits[b];
    at += s.logits[b].rows();
    s.all_targets.insert(s.all_targets.end(), s.targets[b].begin(), s.targets[b].end());
  }
  return s;
}

}  // namespace

TEST_CASE("accumulating micro batches by total valid tokens equals the big batch mean and gradient",
          "[loss][accumulation]") {
  const Step s = make_step(7);
  const CrossEntropyOptions options{.label_smoothing = 0.1};
  const loss::CrossEntropyResult big = loss::cross_entropy(s.all_logits, s.all_targets, options);
  REQUIRE(big.valid_tokens == 14);

  long total = 0;
  for (const auto& t : s.targets) total += loss::count_valid_tokens(t);
  CHECK(total == 14);
  loss::GradientAccumulationStep step(total, options);
  Matrix grad(s.all_logits.rows(), s.all_logits.cols());
  double summed_losses = 0, mean_of_means = 0;
  Eigen::Index at = 0;
  for (std::size_t b = 0; b < 3; ++b) {
    const auto r = step.cross_entropy(s.logits[b], s.targets[b]);
    grad.middleRows(at, r.grad.rows()) = r.grad;
    at += r.grad.rows();
    summed_losses += r.loss;
    mean_of_means += loss::cross_entropy(s.logits[b], s.targets[b], options).loss / 3;
  }
  CHECK(step.complete());
  CHECK(step.valid_tokens_seen() == 14);
  // float logits: rows sit at other alignments in the big matrix, so reductions round differently
  CHECK(step.loss() == Approx(big.loss).epsilon(1e-6));
  CHECK(summed_losses == Approx(big.loss).epsilon(1e-6));
  CHECK(test::normwise_error(grad, big.grad) < 1e-6);
  // the pre-2024 normalisation is measurably different on these uneven micro-batches
  CHECK(std::abs(mean_of_means - big.loss) > 0.05);
}

TEST_CASE("the total valid tokens option alone gives the same per micro batch scaling", "[loss][accumulation]") {
  const Step s = make_step(7);
  const auto one = loss::cross_entropy(s.logits[1], s.targets[1], CrossEntropyOptions{.total_valid_tokens = 14});
  const auto own = loss::cross_entropy(s.logits[1], s.targets[1]);
  CHECK(one.normalizer == 14.0);
  CHECK(own.normalizer == 2.0);
  CHECK(one.loss == Approx(own.loss * 2.0 / 14.0).epsilon(1e-12));
  CHECK(test::normwise_error(one.grad, (own.grad * (2.0f / 14.0f)).eval()) < 1e-6);
}

TEST_CASE("streamed lm head micro batches accumulate to the big batch as well", "[loss][accumulation][lm_head]") {
  const Eigen::Index dim = 6, vocab = 29;
  const std::vector<std::vector<int>> targets{{1, 2, -100, 3}, {-100, 28, -100}, {0, 7, 9, 11, -100, 13}};
  const Matrix weight = random_matrix(vocab, dim, 200, 1.0);
  std::vector<Matrix> hidden;
  Eigen::Index rows = 0;
  for (std::size_t b = 0; b < 3; ++b) {
    hidden.push_back(random_matrix(static_cast<Eigen::Index>(targets[b].size()), dim, 210 + b, 1.0));
    rows += hidden.back().rows();
  }
  Matrix all_hidden(rows, dim);
  std::vector<int> all_targets;
  Eigen::Index at = 0;
  for (std::size_t b = 0; b < 3; ++b) {
    all_hidden.middleRows(at, hidden[b].rows()) = hidden[b];
    at += hidden[b].rows();
    all_targets.insert(all_targets.end(), targets[b].begin(), targets[b].end());
  }
  const CrossEntropyOptions options{.label_smoothing = 0.1};
  const auto big = loss::lm_head_cross_entropy(all_hidden, weight, all_targets, options,
                                               loss::LmHeadOptions{.chunk_size = 8, .compute_head_grad = true});
  long total = 0;
  for (const auto& t : targets) total += loss::count_valid_tokens(t);
  loss::GradientAccumulationStep step(total, options);
  Matrix grad_w = Matrix::Zero(vocab, dim);
  Matrix grad_h(rows, dim);
  at = 0;
  for (std::size_t b = 0; b < 3; ++b) {
    const auto r = step.lm_head_cross_entropy(hidden[b], weight, targets[b],
                                              loss::LmHeadOptions{.chunk_size = 8, .compute_head_grad = true});
    grad_w += r.grad_head_weight;
    grad_h.middleRows(at, r.grad_hidden.rows()) = r.grad_hidden;
    at += r.grad_hidden.rows();
  }
  CHECK(step.loss() == Approx(big.loss).epsilon(1e-6));
  CHECK(test::normwise_error(grad_w, big.grad_head_weight) < 1e-5);
  CHECK(test::normwise_error(grad_h, big.grad_hidden) < 1e-5);
}

TEST_CASE("a micro batch with no valid token contributes nothing to the step", "[loss][accumulation]") {
  const Step s = make_step(7);
  loss::GradientAccumulationStep step(5);
  const auto empty = step.cross_entropy(s.logits[0], std::vector<int>(6, -100));
  CHECK(empty.loss == 0.0);
  CHECK(empty.grad.cwiseAbs().maxCoeff() == 0.0f);
  const auto full = step.cross_entropy(s.logits[0], s.targets[0]);
  CHECK(step.complete());
  CHECK(step.loss() == Approx(loss::cross_entropy(s.logits[0], s.targets[0]).loss).epsilon(1e-12));
  CHECK(full.loss == Approx(step.loss()).epsilon(1e-12));
}

TEST_CASE("accumulation rejects more tokens than declared and a negative total", "[loss][accumulation][errors]") {
  const Step s = make_step(7);
  loss::GradientAccumulationStep step(6);
  CHECK_NOTHROW(step.cross_entropy(s.logits[0], s.targets[0]));  // 5 of 6
  CHECK_THROWS_WITH(step.cross_entropy(s.logits[1], s.targets[1]), Contains("7") && Contains("= 6"));
  CHECK_THROWS_WITH(loss::GradientAccumulationStep(-1), Contains("-1"));
  CHECK_THROWS_WITH(loss::cross_entropy(s.logits[2], s.targets[2], CrossEntropyOptions{.total_valid_tokens = 3}),
                    Contains("7 valid tokens") && Contains("3"));
}

TEST_CASE("micro batch losses and grads match transformers fixed cross entropy with num items in batch",
          "[loss][accumulation][fixture]") {
  const auto fixture = test::load_fixture("loss/ce_accumulation.json");
  const long total = fixture["total_valid_tokens"].get<long>();
  long counted = 0;
  for (const auto& b : fixture["micro_batches"])
    counted += loss::count_valid_tokens(test::json_vector<int>(b["targets"]));
  CHECK(counted == total);
  loss::GradientAccumulationStep step(total);
  for (const auto& b : fixture["micro_batches"]) {
    const Matrix logits = test::json_matrix<float>(b["logits"]);
    const auto targets = test::json_vector<int>(b["targets"]);
    const auto r = step.cross_entropy(logits, targets);
    const double expected = b["loss"].get<double>();
    CHECK(std::abs(r.loss - expected) <= 1e-6 * std::abs(expected));
    CHECK((r.grad - test::json_matrix<float>(b["grad"])).cwiseAbs().maxCoeff() <= 1e-6);
  }
  const double big = fixture["big_batch_loss"].get<double>();
  CHECK(std::abs(step.loss() - big) <= 1e-6 * big);
  CHECK(std::abs(step.loss() - fixture["mean_of_means"].get<double>()) > 1e-3);
}
