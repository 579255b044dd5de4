// Results do not depend on the thread count: the same products, LoRA layers and loss at one and at two
// OpenMP threads, compared bit for bit. This module is compiled with OpenMP (tests/CMakeLists.txt); the
// other test modules are not, so only here does the library run multi-threaded.
#include <catch2/catch.hpp>

#include <vidlora/lora.hpp>
#include <vidlora/loss/cross_entropy.hpp>

#include <cstdint>
#include <cstring>
#include <functional>

#include <omp.h>

using namespace vidlora;

namespace {

Matrix random_matrix(Eigen::Index rows, Eigen::Index cols, std::uint64_t seed) {
  CounterRng rng(seed, 7);
  Matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(rng.uniform(-1.0, 1.0));
  return m;
}

bool bitwise_equal(const Matrix& a, const Matrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(float)) == 0;
}

// fn() run with `threads` OpenMP threads (the previous setting is restored).
template <class Fn>
auto with_threads(int threads, Fn&& fn) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto result = fn();
  omp_set_num_threads(before);
  return result;
}

}  // namespace

TEST_CASE("this module runs with OpenMP and two threads are available to it", "[threads]") {
  CHECK(with_threads(2, [] { return omp_get_max_threads(); }) == 2);
}

TEST_CASE("a frozen dense linear gives the same bits at one and two threads", "[threads]") {
  // in = 344 and tokens = 700: Eigen's own OpenMP GEMM blocks depths above 320 differently when it has
  // several threads (the demo decoder's down_proj and every weight gradient over the tokens).
  const Matrix w = random_matrix(128, 344, 1), x = random_matrix(700, 344, 2), dy = random_matrix(700, 128, 3);
  const lora::DenseWeight base(w);
  auto run = [&] { return std::pair{base.apply(x), base.apply_transposed(dy)}; };
  const auto one = with_threads(1, run), two = with_threads(2, run);
  CHECK(bitwise_equal(one.first, two.first));
  CHECK(bitwise_equal(one.second, two.second));
}

TEST_CASE("LoraLinear forward and backward give the same bits at one and two threads", "[threads][lora]") {
  const Matrix w = random_matrix(128, 344, 4), x = random_matrix(701, 344, 5), dy = random_matrix(701, 128, 6);
  for (const double dropout : {0.0, 0.05}) {
    auto run = [&] {
      LoraLinear<8, 16> layer(w, LoraOptions{.dropout = dropout, .seed = 3, .layer = 1});
      layer.lora_B() = random_matrix(128, 8, 7);
      std::vector<Matrix> r;
      r.push_back(layer.forward(x, true));
      r.push_back(layer.backward(dy));
      r.push_back(layer.grad_A());
      r.push_back(layer.grad_B());
      return r;
    };
    const auto one = with_threads(1, run), two = with_threads(2, run);
    for (std::size_t k = 0; k < one.size(); ++k) {
      INFO("dropout " << dropout << ", output " << k << " (y, dx, grad_A, grad_B)");
      CHECK(bitwise_equal(one[k], two[k]));
    }
  }
}

TEST_CASE("cross-entropy loss and gradient give the same bits at one and two threads", "[threads][loss]") {
  const Matrix logits = random_matrix(700, 160, 8);
  std::vector<int> labels(700);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = i % 9 == 0 ? -100 : static_cast<int>((i * 37) % 160);
  auto run = [&] {
    loss::CrossEntropyOptions o;
    o.label_smoothing = 0.1;
    const auto r = loss::cross_entropy(logits, labels, o);
    return std::pair{r.loss, r.grad};
  };
  const auto one = with_threads(1, run), two = with_threads(2, run);
  CHECK(one.first == two.first);
  CHECK(bitwise_equal(one.second, two.second));
}
