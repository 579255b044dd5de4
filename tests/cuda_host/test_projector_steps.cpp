// The CUDA projector's forward / backward step sequence (model/cuda/projector.cuh: GEMM problems, GELU passes,
// bias column sums) run by a host executor, against model::Mlp2xGelu: everything but cuBLASLt and the kernels.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>

#include <vidlora/core/rng.hpp>
#include <vidlora/model/cuda/projector.cuh>
#include <vidlora/model/projector.hpp>

#include "host_gemm.hpp"

using namespace vidlora;

namespace {

struct ProjectorHostExec {
  int gemms = 0, gelus = 0, sums = 0;
  void gemm(const cuda::GemmProblem& g, const void* a, const void* b, void* c, float alpha, float beta,
            const void* bias) {
    ++gemms;
    vidlora_test::run_row_major(g, static_cast<const float*>(a), static_cast<const float*>(b), static_cast<float*>(c),
                                alpha, beta, static_cast<const float*>(bias));
  }
  void gelu(const float* z, float* a, std::int64_t n) {
    ++gelus;
    for (std::int64_t i = 0; i < n; ++i) a[i] = model::gelu_erf(z[i]);
  }
  void gelu_backward(const float* z, float* da, std::int64_t n) {
    ++gelus;
    for (std::int64_t i = 0; i < n; ++i) da[i] *= model::gelu_erf_grad(z[i]);
  }
  void column_sums(const float* dy, std::int64_t rows, std::int64_t cols, float* out) {
    ++sums;
    for (std::int64_t c = 0; c < cols; ++c) out[c] += model::cuda::projector_column_sum(dy, rows, cols, c);
  }
};

Matrix projector_random(Eigen::Index r, Eigen::Index c, std::uint64_t seed) {
  Matrix m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = 2.0f * (random_uniform(seed, 23, static_cast<std::uint64_t>(i)) - 0.5f);
  return m;
}

float projector_error(const Matrix& got, const Matrix& want) {
  const float scale = want.cwiseAbs().maxCoeff();
  return (got - want).cwiseAbs().maxCoeff() / (scale > 0 ? scale : 1.0f);
}

void check_projector_steps(bool bias) {
  INFO("bias " << bias);
  const Eigen::Index tokens = 13, in = 24, hidden = 20;
  model::Mlp2xGelu want(in, hidden, 7, bias);
  const Matrix x = projector_random(tokens, in, 1), dy = projector_random(tokens, hidden, 2);
  // Gradients accumulate on top of what is there: start both sides from the same non-zero values.
  Matrix gw1 = projector_random(hidden, in, 3), gw2 = projector_random(hidden, hidden, 4);
  Matrix gb1 = projector_random(1, hidden, 5), gb2 = projector_random(1, hidden, 6);
  want.linear_1().grad_weight() = gw1;
  want.linear_2().grad_weight() = gw2;
  if (bias) {
    want.linear_1().grad_bias() = gb1.row(0).transpose();
    want.linear_2().grad_bias() = gb2.row(0).transpose();
  }
  model::cuda::ProjectorShape s{tokens, in, hidden, bias};
  model::cuda::ProjectorWeights w;
  w.w1 = want.linear_1().weight().data();
  w.w2 = want.linear_2().weight().data();
  w.b1 = bias ? want.linear_1().bias().data() : nullptr;
  w.b2 = bias ? want.linear_2().bias().data() : nullptr;
  w.grad_w1 = gw1.data();
  w.grad_w2 = gw2.data();
  w.grad_b1 = gb1.data();
  w.grad_b2 = gb2.data();
  Matrix z(tokens, hidden), a(tokens, hidden), y(tokens, hidden), da(tokens, hidden), dx(tokens, in);
  ProjectorHostExec exec;
  model::cuda::projector_forward_steps(exec, s, w, x.data(), z.data(), a.data(), y.data());
  model::cuda::projector_backward_steps(exec, s, w, x.data(), z.data(), a.data(), dy.data(), da.data(), dx.data());
  CHECK(exec.gemms == 2 + 4);
  CHECK(exec.gelus == 2);
  CHECK(exec.sums == (bias ? 2 : 0));

  const Matrix want_y = want.forward(x);
  const Matrix want_dx = want.backward(dy);
  CHECK(projector_error(y, want_y) < 1e-5f);
  CHECK(projector_error(dx, want_dx) < 1e-5f);
  CHECK(projector_error(gw1, want.linear_1().grad_weight()) < 1e-5f);
  CHECK(projector_error(gw2, want.linear_2().grad_weight()) < 1e-5f);
  if (bias) {
    CHECK(projector_error(gb1.row(0).transpose(), want.linear_1().grad_bias()) < 1e-5f);
    CHECK(projector_error(gb2.row(0).transpose(), want.linear_2().grad_bias()) < 1e-5f);
  }

  // Without dx (CudaMlp2xGelu::backward_rows: frozen features): one GEMM fewer, the same four gradients bit for bit.
  const Matrix gw1_with = gw1, gw2_with = gw2, gb1_with = gb1, gb2_with = gb2;
  // The same starting values as above, copied into the buffers w points at (a moved-in Matrix would replace them).
  gw1.array() = projector_random(hidden, in, 3).array();
  gw2.array() = projector_random(hidden, hidden, 4).array();
  gb1.array() = projector_random(1, hidden, 5).array();
  gb2.array() = projector_random(1, hidden, 6).array();
  REQUIRE(w.grad_w1 == gw1.data());
  ProjectorHostExec no_dx;
  model::cuda::projector_backward_steps(no_dx, s, w, x.data(), z.data(), a.data(), dy.data(), da.data(), nullptr);
  CHECK(no_dx.gemms == 3);
  const auto same = [](const Matrix& p, const Matrix& q) {
    return p.size() == q.size() && std::equal(p.data(), p.data() + p.size(), q.data());
  };
  CHECK(same(gw1, gw1_with));
  CHECK(same(gw2, gw2_with));
  CHECK(same(gb1, gb1_with));
  CHECK(same(gb2, gb2_with));
}

}  // namespace

TEST_CASE("cuda projector step sequence equals model::Mlp2xGelu, with and without biases", "[cuda_host][model]") {
  check_projector_steps(true);
  check_projector_steps(false);
}
