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

template <class Scalar>
MatrixOf<Scalar> random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed, double spread = 1.0) {
  CounterRng rng(seed);
  MatrixOf<Scalar> m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(rng.uniform(-spread, spread));
  return m;
}

std::vector<int> random_targets(Eigen::Index rows, int vocab, std::uint64_t seed, int every_nth_ignored) {
  CounterRng rng(seed);
  std::vector<int> t(static_cast<std::size_t>(rows));
  for (std::size_t i = 0; i < t.size(); ++i)
    t[i] = (every_nth_ignored > 0 && i % std::size_t(every_nth_ignored) == 1)
               ? -100
               : static_cast<int>(rng.next_u32() % vocab);
  return t;
}

}  // namespace

TEST_CASE("lm head cross entropy matches torch autograd for hidden and head weight grads", "[loss][lm_head][fixture]") {
  const auto fixture = test::load_fixture("loss/lm_head.json");
  for (const auto& c : fixture["cases"]) {
    INFO(c["name"].get<std::string>());
    const Matrix hidden = test::json_matrix<float>(c["hidden"]);
    const Matrix weight = test::json_matrix<float>(c["head_weight"]);
    const auto targets = test::json_vector<int>(c["targets"]);
    CrossEntropyOptions options;
    options.label_smoothing = c["label_smoothing"].get<double>();
    const double torch_loss = c["loss"].get<double>();
    const Matrix torch_gh = test::json_matrix<float>(c["grad_hidden"]);
    const Matrix torch_gw = test::json_matrix<float>(c["grad_head_weight"]);
    for (const Eigen::Index chunk : {Eigen::Index{5}, Eigen::Index{37}}) {
      for (const bool head_grad : {false, true}) {
        INFO("chunk " << chunk << " head grad " << head_grad);
        const auto r = loss::lm_head_cross_entropy(
            hidden, weight, targets, options, loss::LmHeadOptions{.chunk_size = chunk, .compute_head_grad = head_grad});
        CHECK(std::abs(r.loss - torch_loss) <= 1e-6 * std::abs(torch_loss));
        CHECK(r.valid_tokens == c["valid_tokens"].get<long>());
        CHECK((r.grad_hidden - torch_gh).cwiseAbs().maxCoeff() <= 1e-6);
        if (head_grad) {
          REQUIRE(r.grad_head_weight.rows() == torch_gw.rows());
          CHECK((r.grad_head_weight - torch_gw).cwiseAbs().maxCoeff() <= 1e-6);
        } else {
          CHECK(r.grad_head_weight.size() == 0);
        }
      }
    }
  }
}

TEST_CASE("chunked lm head cross entropy equals the naive full logits path for every chunk size",
          "[loss][lm_head][invariance]") {
  const Eigen::Index tokens = 24, dim = 16, vocab = 250;
  const Matrix hidden = random_matrix<float>(tokens, dim, 1, 1.0);
  const Matrix weight = random_matrix<float>(vocab, dim, 2, 0.8);
  for (const int every_nth_ignored : {0, 3}) {
    const auto targets = random_targets(tokens, int(vocab), 3, every_nth_ignored);
    for (const double eps : {0.0, 0.1}) {
      CrossEntropyOptions options;
      options.label_smoothing = eps;
      const Matrix logits = hidden * weight.transpose();
      const loss::CrossEntropyResult naive = loss::cross_entropy(logits, targets, options);
      const Matrix naive_gh = naive.grad * weight;
      const Matrix naive_gw = naive.grad.transpose() * hidden;
      // 1: one column per chunk; 7 and 64 do not divide 250; 125 does; 250 and 1000: a single chunk
      for (const Eigen::Index chunk : {1, 7, 64, 125, 250, 1000}) {
        for (const bool head_grad : {false, true}) {
          INFO("eps " << eps << " ignored every " << every_nth_ignored << " chunk " << chunk << " head grad "
                      << head_grad);
          const auto r =
              loss::lm_head_cross_entropy(hidden, weight, targets, options,
                                          loss::LmHeadOptions{.chunk_size = chunk, .compute_head_grad = head_grad});
          CHECK(std::abs(r.loss - naive.loss) <= 1e-5 * std::abs(naive.loss));
          CHECK(r.valid_tokens == naive.valid_tokens);
          CHECK(test::normwise_error(r.grad_hidden, naive_gh) < 1e-5);
          CHECK(r.grad_hidden.cwiseAbs().maxCoeff() > 1e-3);  // a real gradient, not zeros
          if (head_grad) CHECK(test::normwise_error(r.grad_head_weight, naive_gw) < 1e-5);
        }
      }
      // the chunk-size-only overload
      const auto r = loss::lm_head_cross_entropy(hidden, weight, targets, options, Eigen::Index{33});
      CHECK(std::abs(r.loss - naive.loss) <= 1e-5 * std::abs(naive.loss));
    }
  }
}

TEST_CASE("the single pass rescaling survives a running max that grows chunk after chunk",
          "[loss][lm_head][invariance]") {
  // Rows of W scaled so that every later chunk holds larger logits: acc is rescaled at every chunk.
  const Eigen::Index tokens = 5, dim = 4, vocab = 40;
  const Matrix hidden = random_matrix<float>(tokens, dim, 4, 1.0).cwiseAbs();
  Matrix weight = random_matrix<float>(vocab, dim, 5, 1.0).cwiseAbs();
  for (Eigen::Index v = 0; v < vocab; ++v) weight.row(v) *= 0.3f * float(v + 1);
  const std::vector<int> targets{0, 39, 20, -100, 3};
  const CrossEntropyOptions options{.label_smoothing = 0.1};
  const loss::CrossEntropyResult naive = loss::cross_entropy((hidden * weight.transpose()).eval(), targets, options);
  const Matrix naive_gh = naive.grad * weight;
  const auto r = loss::lm_head_cross_entropy(hidden, weight, targets, options, Eigen::Index{3});
  CHECK(std::abs(r.loss - naive.loss) <= 1e-5 * std::abs(naive.loss));
  CHECK(test::normwise_error(r.grad_hidden, naive_gh) < 1e-5);
}

TEST_CASE("lm head grad hidden matches central finite differences in double", "[loss][lm_head][gradcheck]") {
  const Eigen::Index tokens = 4, dim = 5, vocab = 11;
  MatrixD hidden = random_matrix<double>(tokens, dim, 6, 1.0);
  const MatrixD weight = random_matrix<double>(vocab, dim, 7, 1.0);
  const std::vector<int> targets{3, -100, 10, 0};
  for (const double eps : {0.0, 0.1}) {
    for (const bool head_grad : {false, true}) {
      INFO("eps " << eps << " head grad " << head_grad);
      const CrossEntropyOptions options{.label_smoothing = eps};
      const loss::LmHeadOptions lm{.chunk_size = 4, .compute_head_grad = head_grad};
      const auto r = loss::lm_head_cross_entropy(hidden, weight, targets, options, lm);
      const double h = 1e-6;
      double worst = 0;
      for (Eigen::Index i = 0; i < tokens; ++i) {
        for (Eigen::Index d = 0; d < dim; ++d) {
          const double saved = hidden(i, d);
          hidden(i, d) = saved + h;
          const double up = loss::lm_head_cross_entropy(hidden, weight, targets, options, lm).loss;
          hidden(i, d) = saved - h;
          const double down = loss::lm_head_cross_entropy(hidden, weight, targets, options, lm).loss;
          hidden(i, d) = saved;
          worst = std::max(worst, std::abs((up - down) / (2 * h) - r.grad_hidden(i, d)));
        }
      }
      CHECK(worst < 1e-8);
      CHECK(r.grad_hidden.row(1).cwiseAbs().maxCoeff() == 0.0);  // the ignored token
      if (head_grad) {
        MatrixD w = weight;
        double worst_w = 0;
        for (Eigen::Index v = 0; v < vocab; ++v) {
          for (Eigen::Index d = 0; d < dim; ++d) {
            const double saved = w(v, d);
            w(v, d) = saved + h;
            const double up = loss::lm_head_cross_entropy(hidden, w, targets, options, lm).loss;
            w(v, d) = saved - h;
            const double down = loss::lm_head_cross_entropy(hidden, w, targets, options, lm).loss;
            w(v, d) = saved;
            worst_w = std::max(worst_w, std::abs((up - down) / (2 * h) - r.grad_head_weight(v, d)));
          }
        }
        CHECK(worst_w < 1e-8);
      }
    }
  }
}

TEST_CASE("lm head with every target ignored gives zero loss and zero gradients", "[loss][lm_head]") {
  const Matrix hidden = random_matrix<float>(3, 4, 8);
  const Matrix weight = random_matrix<float>(9, 4, 9);
  const auto r = loss::lm_head_cross_entropy(hidden, weight, std::vector<int>{-100, -100, -100}, {},
                                             loss::LmHeadOptions{.chunk_size = 4, .compute_head_grad = true});
  CHECK(r.loss == 0.0);
  CHECK(r.valid_tokens == 0);
  CHECK(r.grad_hidden.rows() == 3);
  CHECK(r.grad_hidden.cwiseAbs().maxCoeff() == 0.0f);
  CHECK(r.grad_head_weight.rows() == 9);
  CHECK(r.grad_head_weight.cwiseAbs().maxCoeff() == 0.0f);
}

TEST_CASE("lm head errors name the shapes the chunk size and the bad target", "[loss][lm_head][errors]") {
  const Matrix hidden = random_matrix<float>(3, 4, 10);
  const Matrix weight = random_matrix<float>(9, 4, 11);
  const std::vector<int> ok{0, 1, 2};
  CHECK_THROWS_WITH(loss::lm_head_cross_entropy(hidden, Matrix(9, 5), ok), Contains("[3, 4]") && Contains("[9, 5]"));
  CHECK_THROWS_WITH(loss::lm_head_cross_entropy(hidden, weight, std::vector<int>{0, 1}),
                    Contains("[3, 4]") && Contains("[2]"));
  CHECK_THROWS_WITH(loss::lm_head_cross_entropy(hidden, weight, ok, {}, Eigen::Index{0}), Contains("chunk_size"));
  CHECK_THROWS_WITH(loss::lm_head_cross_entropy(hidden, weight, std::vector<int>{0, 9, 1}),
                    Contains("target 9 at position 1") && Contains("[0, 9)"));
  Matrix bad = hidden;
  bad(1, 2) = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(loss::lm_head_cross_entropy(bad, weight, ok), Contains("row 1"));
  // One NaN logit (a NaN in one row of the head), in any chunk, the first included, and alone in its chunk: every
  // row's log-sum-exp is NaN, so the loss refuses it, with and without the head's gradient (one pass or two).
  for (const Eigen::Index bad_class : {Eigen::Index{0}, Eigen::Index{4}, Eigen::Index{8}})
    for (const Eigen::Index chunk : {Eigen::Index{1}, Eigen::Index{4}, Eigen::Index{9}})
      for (const bool head_grad : {false, true}) {
        INFO("NaN in class " << bad_class << ", chunks of " << chunk << ", head gradient " << head_grad);
        Matrix nan_head = weight;
        nan_head(bad_class, 3) = std::numeric_limits<float>::quiet_NaN();
        loss::LmHeadOptions lm;
        lm.chunk_size = chunk;
        lm.compute_head_grad = head_grad;
        CHECK_THROWS_WITH(loss::lm_head_cross_entropy(hidden, nan_head, ok, {}, lm), Contains("row 0"));
      }
}

TEST_CASE("chunked and naive paths agree at a size large enough for the row parallel loops",
          "[loss][lm_head][invariance]") {
  // n·chunk and T·V exceed kParallelMinWork, so OpenMP builds run these loops on several threads.
  const Eigen::Index tokens = 64, dim = 32, vocab = 3000;
  REQUIRE(tokens * 1000 > kParallelMinWork);
  const Matrix hidden = random_matrix<float>(tokens, dim, 12, 1.0);
  const Matrix weight = random_matrix<float>(vocab, dim, 13, 0.5);
  const auto targets = random_targets(tokens, int(vocab), 14, 5);
  const CrossEntropyOptions options{.label_smoothing = 0.1};
  const loss::CrossEntropyResult naive = loss::cross_entropy((hidden * weight.transpose()).eval(), targets, options);
  const Matrix naive_gh = naive.grad * weight;
  const Matrix naive_gw = naive.grad.transpose() * hidden;
  for (const bool head_grad : {false, true}) {
    INFO("head grad " << head_grad);
    const auto r = loss::lm_head_cross_entropy(hidden, weight, targets, options,
                                               loss::LmHeadOptions{.chunk_size = 1000, .compute_head_grad = head_grad});
    CHECK(std::abs(r.loss - naive.loss) <= 1e-5 * std::abs(naive.loss));
    CHECK(test::normwise_error(r.grad_hidden, naive_gh) < 1e-5);
    if (head_grad) CHECK(test::normwise_error(r.grad_head_weight, naive_gw) < 1e-5);
  }
  // the dense path against the float64 definition (log-softmax evaluated in double)
  const MatrixD z = (hidden * weight.transpose()).cast<double>();
  double loss_sum = 0;
  long n = 0;
  for (Eigen::Index i = 0; i < tokens; ++i) {
    const int t = targets[std::size_t(i)];
    if (t == -100) continue;
    const double lse = std::log(z.row(i).array().exp().sum());
    loss_sum += 0.9 * (lse - z(i, t)) + 0.1 * (lse - z.row(i).mean());
    ++n;
  }
  CHECK(naive.loss == Approx(loss_sum / double(n)).epsilon(1e-6));
}

TEST_CASE("a power-of-two grad_factor (the loss scale) scales every gradient exactly and leaves the loss",
          "[loss][lm_head][loss_scaling]") {
  const auto hidden = random_matrix<float>(23, 16, 31);
  const auto head = random_matrix<float>(37, 16, 32, 0.3);
  const auto targets = random_targets(23, 37, 33, 4);
  for (const double eps : {0.0, 0.1}) {
    for (const Eigen::Index chunk : {Eigen::Index{37}, Eigen::Index{8}}) {
      for (const bool head_grad : {false, true}) {  // the single pass (training: frozen head) and the two passes
        INFO("label smoothing " << eps << ", chunk " << chunk << ", head grad " << head_grad);
        CrossEntropyOptions plain;
        plain.label_smoothing = eps;
        plain.total_valid_tokens = 40;
        CrossEntropyOptions scaled = plain;
        scaled.grad_factor = 65536.0;  // GradScaler's initial scale, 2^16
        const loss::LmHeadOptions lm{.chunk_size = chunk, .compute_head_grad = head_grad};
        const auto a = loss::lm_head_cross_entropy<float>(hidden, head, targets, plain, lm);
        const auto b = loss::lm_head_cross_entropy<float>(hidden, head, targets, scaled, lm);
        CHECK(b.loss == a.loss);
        CHECK(b.loss_sum == a.loss_sum);
        CHECK((b.grad_hidden - a.grad_hidden * 65536.0f).cwiseAbs().maxCoeff() == 0.0f);
        if (head_grad) CHECK((b.grad_head_weight - a.grad_head_weight * 65536.0f).cwiseAbs().maxCoeff() == 0.0f);
        CHECK(a.grad_hidden.cwiseAbs().maxCoeff() > 0.0f);
        // cross_entropy over the logits: the same rule
        const MatrixOf<float> logits = hidden * head.transpose();
        const auto c = loss::cross_entropy(logits, targets, plain);
        const auto d = loss::cross_entropy(logits, targets, scaled);
        CHECK(d.loss == c.loss);
        CHECK((d.grad - c.grad * 65536.0f).cwiseAbs().maxCoeff() == 0.0f);
      }
    }
  }
  for (const double bad : {0.0, -1.0, std::nan("")}) {
    CrossEntropyOptions o;
    o.grad_factor = bad;
    CHECK_THROWS_WITH(loss::lm_head_cross_entropy<float>(hidden, head, targets, o), Contains("grad_factor"));
    CHECK_THROWS_WITH(loss::cross_entropy(MatrixOf<float>(hidden * head.transpose()), targets, o),
                      Contains("grad_factor"));
  }
}
