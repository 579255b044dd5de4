// The GPU's streamed LM-head cross-entropy (loss/cuda/lm_head_cross_entropy.cuh) as a step sequence run by a
// host executor — the same GEMM problems through cuBLAS semantics (host_gemm.hpp), each row folded in the fold
// kernel's order (256 strided lanes, a pairwise tree, chunks in order) through LmHeadRowState, the gradient
// element of the kernel — against the CPU's loss::lm_head_cross_entropy. Also the vocabulary chunk plan and
// the argument checks.
#include <cstdint>
#include <limits>

#include <catch2/catch.hpp>

#include <vidlora/core/rng.hpp>
#include <vidlora/loss/cuda/lm_head_cross_entropy.cuh>
#include <vidlora/loss/lm_head_cross_entropy.hpp>

#include "host_gemm.hpp"

using namespace vidlora;
using loss::cuda::LmHeadCeOptions;
using loss::cuda::LmHeadCeShape;
using loss::cuda::VocabChunk;

namespace {

Matrix random_matrix(Eigen::Index r, Eigen::Index c, std::uint64_t seed, float range) {
  Matrix m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = range * (2.0f * random_uniform(seed, 5, static_cast<std::uint64_t>(i)) - 1.0f);
  return m;
}

// What LmHeadCeCudaExecutor does, on the host.
struct LmHeadHostExec {
  const Matrix& hidden;  // [rows, dim]
  const Matrix& head;    // [vocab, dim]
  std::vector<std::int32_t> targets;
  std::int32_t ignore_index = -100;
  double eps = 0.0;
  std::vector<float> logits;  // [rows, chunk] packed per chunk
  std::vector<loss::cuda::LmHeadRowState> state;
  std::vector<double> lse;
  int gemms = 0, folds = 0, accumulations_with_beta0 = 0;

  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  RowMajor h_rm, w_rm, g_rm;

  LmHeadHostExec(const Matrix& h, const Matrix& w, std::vector<std::int32_t> t, const LmHeadCeOptions& o)
      : hidden(h), head(w), targets(std::move(t)), ignore_index(o.ignore_index), eps(o.label_smoothing) {
    h_rm = hidden;
    w_rm = head;
    g_rm = RowMajor::Constant(hidden.rows(), hidden.cols(), std::nanf(""));  // poison: every row must be written
  }
  std::int64_t rows() const { return hidden.rows(); }
  std::int64_t dim() const { return hidden.cols(); }

  void zero_grad() { g_rm.setZero(); }
  void reset_rows() { state.assign(static_cast<std::size_t>(rows()), {}); }
  void chunk_logits(const VocabChunk& c) {
    ++gemms;
    logits.assign(static_cast<std::size_t>(rows() * c.count), std::nanf(""));
    vidlora_test::run_row_major(cuda::linear_forward(rows(), dim(), c.count, cuda::DType::F32), h_rm.data(),
                                w_rm.data() + c.begin * dim(), logits.data(), 1.0f, 0.0f, nullptr);
  }
  void fold_chunk(const VocabChunk& c) {
    ++folds;
    for (std::int64_t r = 0; r < rows(); ++r) {
      const std::int32_t t = targets[static_cast<std::size_t>(r)];
      if (t == ignore_index) continue;
      std::vector<loss::cuda::RowStats> lanes(256);
      for (std::int64_t j = 0; j < c.count; ++j)
        lanes[static_cast<std::size_t>(j % 256)].add(logits[static_cast<std::size_t>(r * c.count + j)]);
      for (std::size_t w = 128; w > 0; w /= 2)
        for (std::size_t i = 0; i < w; ++i) lanes[i].merge(lanes[i + w]);
      const bool in = t >= c.begin && t < c.begin + c.count;
      state[static_cast<std::size_t>(r)].fold(lanes[0], in,
                                              in ? logits[static_cast<std::size_t>(r * c.count + t - c.begin)] : 0.0f);
    }
  }
  void finish_rows(std::vector<double>& row_loss, std::vector<double>& row_lse) {
    row_loss.assign(static_cast<std::size_t>(rows()), 0.0);
    row_lse.assign(static_cast<std::size_t>(rows()), 0.0);
    for (std::size_t r = 0; r < row_loss.size(); ++r) {
      if (targets[r] == ignore_index) continue;
      row_lse[r] = state[r].lse.value();
      row_loss[r] = state[r].token_loss(static_cast<double>(head.rows()), eps);
    }
    lse = row_lse;
  }
  void chunk_logit_grad(const VocabChunk& c, double scale) {
    const double inv_vocab = 1.0 / static_cast<double>(head.rows());
    for (std::int64_t r = 0; r < rows(); ++r)
      for (std::int64_t j = 0; j < c.count; ++j) {
        float& z = logits[static_cast<std::size_t>(r * c.count + j)];
        const std::int32_t t = targets[static_cast<std::size_t>(r)];
        z = t == ignore_index ? 0.0f
                              : loss::cuda::ce_grad_element(z, lse[static_cast<std::size_t>(r)], c.begin + j == t, eps,
                                                            inv_vocab, scale);
      }
  }
  void accumulate_grad(const VocabChunk& c, float beta) {
    if (beta == 0.0f) ++accumulations_with_beta0;
    vidlora_test::run_row_major(cuda::linear_input_grad(rows(), dim(), c.count, cuda::DType::F32), logits.data(),
                                w_rm.data() + c.begin * dim(), g_rm.data(), 1.0f, beta, nullptr);
  }
};

double normwise(const Matrix& got, const Matrix& want) {
  return (got - want).cwiseAbs().maxCoeff() / std::max(1e-30f, want.cwiseAbs().maxCoeff());
}

struct Case {
  Eigen::Index rows = 9, dim = 24, vocab = 50;
  std::int64_t chunk = 16;
  double eps = 0.0;
  bool sum = false;
  long total = 0;
  double grad_factor = 1.0;
  std::vector<int> ignored_rows;
};

void check_against_cpu(const Case& c) {
  INFO("rows " << c.rows << " vocab " << c.vocab << " chunk " << c.chunk << " eps " << c.eps);
  const Matrix h = random_matrix(c.rows, c.dim, 1, 1.0f);
  const Matrix w = random_matrix(c.vocab, c.dim, 2, 0.5f);
  std::vector<int> targets(static_cast<std::size_t>(c.rows));
  for (Eigen::Index r = 0; r < c.rows; ++r)
    targets[static_cast<std::size_t>(r)] = static_cast<int>((r * 7 + 3) % c.vocab);
  for (int r : c.ignored_rows) targets[static_cast<std::size_t>(r)] = -100;
  loss::CrossEntropyOptions ce;
  ce.label_smoothing = c.eps;
  ce.reduction = c.sum ? loss::Reduction::Sum : loss::Reduction::Mean;
  ce.total_valid_tokens = c.total;
  const auto want = loss::lm_head_cross_entropy<float>(h, w, targets, ce, c.chunk);

  LmHeadCeOptions o;
  o.label_smoothing = c.eps;
  o.sum_reduction = c.sum;
  o.total_valid_tokens = c.total;
  o.chunk_size = c.chunk;
  o.grad_factor = c.grad_factor;
  const std::vector<std::int32_t> t32(targets.begin(), targets.end());
  LmHeadHostExec exec(h, w, t32, o);
  const LmHeadCeShape shape{c.rows, c.dim, c.vocab, c.dim, c.rows};
  const auto got = loss::cuda::lm_head_ce_steps(exec, shape, t32, o, true);
  CHECK(got.valid_tokens == want.valid_tokens);
  CHECK(got.normalizer == want.normalizer);
  CHECK(std::abs(got.loss - want.loss) <= 1e-6 * std::abs(want.loss));
  const Matrix g = exec.g_rm;
  const Matrix want_grad = want.grad_hidden * static_cast<float>(c.grad_factor);
  CHECK(normwise(g, want_grad) < 1e-5);
  for (int r : c.ignored_rows) CHECK(g.row(r).cwiseAbs().maxCoeff() == 0.0f);
  const auto chunks = static_cast<int>((c.vocab + c.chunk - 1) / c.chunk);
  CHECK(exec.gemms == 2 * chunks);  // logits once for the loss, once again for the gradient
  CHECK(exec.folds == chunks);
  CHECK(exec.accumulations_with_beta0 == 1);  // the first chunk overwrites, the rest accumulate
}

}  // namespace

TEST_CASE("vocab_chunks covers the vocabulary in order, the last chunk short", "[lm_head]") {
  const auto c = loss::cuda::vocab_chunks(50, 16);
  REQUIRE(c.size() == 4);
  CHECK((c[0].begin == 0 && c[0].count == 16));
  CHECK((c[2].begin == 32 && c[2].count == 16));
  CHECK((c[3].begin == 48 && c[3].count == 2));
  const auto one = loss::cuda::vocab_chunks(50, 8192);
  REQUIRE(one.size() == 1);
  CHECK((one[0].begin == 0 && one[0].count == 50));
  const auto exact = loss::cuda::vocab_chunks(64, 16);
  CHECK(exact.size() == 4);
  CHECK(exact.back().count == 16);
  CHECK_THROWS_WITH(loss::cuda::vocab_chunks(50, 0), Catch::Contains("chunk_size must be positive, got 0"));
  CHECK_THROWS_WITH(loss::cuda::vocab_chunks(0, 16), Catch::Contains("the vocabulary is empty"));
}

TEST_CASE("device lm-head steps match lm_head_cross_entropy: vocabulary not a multiple of the chunk", "[lm_head]") {
  check_against_cpu({});
}

TEST_CASE("device lm-head steps match lm_head_cross_entropy: label smoothing and ignored rows", "[lm_head]") {
  Case c;
  c.eps = 0.1;
  c.ignored_rows = {0, 4, 8};
  check_against_cpu(c);
  c.chunk = 7;
  check_against_cpu(c);
}

TEST_CASE("device lm-head steps match lm_head_cross_entropy: one chunk, sum reduction, loss scale", "[lm_head]") {
  Case c;
  c.chunk = 4096;
  c.sum = true;
  c.grad_factor = 1024.0;
  check_against_cpu(c);
}

TEST_CASE("device lm-head steps match lm_head_cross_entropy: total_valid_tokens of a larger step", "[lm_head]") {
  Case c;
  c.total = 40;
  c.ignored_rows = {2};
  c.vocab = 301;
  c.chunk = 64;
  check_against_cpu(c);
}

TEST_CASE("device lm-head steps: no valid target gives loss 0 and a zero gradient", "[lm_head]") {
  const Matrix h = random_matrix(3, 8, 1, 1.0f), w = random_matrix(10, 8, 2, 1.0f);
  const std::vector<std::int32_t> t(3, -100);
  LmHeadCeOptions o;
  LmHeadHostExec exec(h, w, t, o);
  const auto r = loss::cuda::lm_head_ce_steps(exec, {3, 8, 10, 8, 3}, t, o, true);
  CHECK(r.loss == 0.0);
  CHECK(r.valid_tokens == 0);
  CHECK(exec.gemms == 0);
  const Matrix g = exec.g_rm;
  CHECK(g.cwiseAbs().maxCoeff() == 0.0f);
}

TEST_CASE("device lm-head argument checks name the tensor and its shape", "[lm_head]") {
  const LmHeadCeOptions o;
  const std::vector<std::int32_t> t{1, 2, 3};
  CHECK_THROWS_WITH(loss::cuda::check_lm_head_ce({3, 8, 10, 6, 3}, t, o),
                    Catch::Contains("hidden [3, 8] and head weight [10, 6] disagree on the hidden size"));
  CHECK_THROWS_WITH(loss::cuda::check_lm_head_ce({4, 8, 10, 8, 3}, t, o),
                    Catch::Contains("hidden [4, 8] needs one target per row, got targets [3]"));
  CHECK_THROWS_WITH(loss::cuda::check_lm_head_ce({3, 8, 3, 8, 3}, t, o),
                    Catch::Contains("target 3 at position 2 is outside [0, 3)"));
  LmHeadCeOptions bad = o;
  bad.chunk_size = -1;
  CHECK_THROWS_WITH(loss::cuda::check_lm_head_ce({3, 8, 10, 8, 3}, t, bad),
                    Catch::Contains("chunk_size must be positive, got -1"));
  bad = o;
  bad.total_valid_tokens = 2;
  CHECK_THROWS_WITH(loss::cuda::check_lm_head_ce({3, 8, 10, 8, 3}, t, bad),
                    Catch::Contains("3 valid tokens exceed total_valid_tokens = 2"));
  for (const double factor : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN()}) {
    bad = o;
    bad.grad_factor = factor;
    CHECK_THROWS_WITH(loss::cuda::check_lm_head_ce({3, 8, 10, 8, 3}, t, bad),
                      Catch::Contains("grad_factor (the loss scale) must be finite and > 0"));
  }
  CHECK(loss::cuda::check_lm_head_ce({3, 8, 10, 8, 3}, {1, -100, 3}, o) == 2);
}

TEST_CASE("device lm-head steps refuse one NaN logit wherever its lane sits in the fold's tree", "[lm_head]") {
  // A NaN in one row of the head makes one logit per token NaN. In a chunk narrower than the fold's 256 lanes that
  // logit is its lane's only value, and the lane is merged into another as the tree's right-hand side: the row's
  // log-sum-exp must still be NaN, so the loss refuses the logits (with and without label smoothing, which also sums
  // them). Classes in the first, a middle and the short last chunk, at lanes below and above 128.
  const Eigen::Index rows = 3, dim = 8, vocab = 301;
  const Matrix h = random_matrix(rows, dim, 1, 1.0f);
  const std::vector<std::int32_t> targets{0, 150, 300};
  for (const std::int64_t chunk : {std::int64_t{64}, std::int64_t{256}})
    for (const Eigen::Index bad : {Eigen::Index{3}, Eigen::Index{140}, Eigen::Index{200}, Eigen::Index{299}})
      for (const double eps : {0.0, 0.1}) {
        INFO("chunk " << chunk << ", NaN in class " << bad << ", label smoothing " << eps);
        Matrix w = random_matrix(vocab, dim, 2, 0.5f);
        w(bad, 5) = std::nanf("");
        LmHeadCeOptions o;
        o.chunk_size = chunk;
        o.label_smoothing = eps;
        LmHeadHostExec exec(h, w, targets, o);
        const LmHeadCeShape shape{rows, dim, vocab, dim, rows};
        CHECK_THROWS_WITH(loss::cuda::lm_head_ce_steps(exec, shape, targets, o, true),
                          Catch::Contains("NaN or +Inf in the logits"));
      }
}
