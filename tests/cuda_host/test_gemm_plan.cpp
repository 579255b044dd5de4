// Host-side logic of the cuBLASLt wrapper: the row-major -> column-major mapping, the linear-layer problems,
// shape checks, the plan-cache key.
#include <catch2/catch.hpp>

#include <cstdint>
#include <unordered_set>

#include <vidlora/core/matrix.hpp>
#include <vidlora/core/rng.hpp>

#include "host_gemm.hpp"

using namespace vidlora::cuda;

namespace {
vidlora::Matrix random_gemm_matrix(Eigen::Index r, Eigen::Index c, std::uint64_t seed) {
  vidlora::Matrix m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = vidlora::random_uniform(seed, 7, static_cast<std::uint64_t>(i)) * 2.0f - 1.0f;
  return m;
}
}  // namespace

TEST_CASE("row-major gemm through the column-major mapping equals the Eigen product for every transpose pair",
          "[cuda_host][gemm]") {
  const Eigen::Index m = 5, n = 7, k = 3;
  for (Op oa : {Op::N, Op::T})
    for (Op ob : {Op::N, Op::T}) {
      const vidlora::Matrix a = oa == Op::N ? random_gemm_matrix(m, k, 1) : random_gemm_matrix(k, m, 1);
      const vidlora::Matrix b = ob == Op::N ? random_gemm_matrix(k, n, 2) : random_gemm_matrix(n, k, 2);
      const vidlora::Matrix opa = oa == Op::N ? vidlora::Matrix(a) : vidlora::Matrix(a.transpose());
      const vidlora::Matrix opb = ob == Op::N ? vidlora::Matrix(b) : vidlora::Matrix(b.transpose());
      vidlora::Matrix c0 = random_gemm_matrix(m, n, 3);
      vidlora::Vector bias = random_gemm_matrix(1, n, 4).row(0).transpose();
      const vidlora::Matrix want = 0.5f * (opa * opb) + 2.0f * c0 + vidlora::Matrix::Ones(m, 1) * bias.transpose();
      GemmProblem p;
      p.m = m;
      p.n = n;
      p.k = k;
      p.op_a = oa;
      p.op_b = ob;
      p.bias = true;
      vidlora::Matrix c = c0;
      vidlora_test::run_row_major(p, a.data(), b.data(), c.data(), 0.5f, 2.0f, bias.data());
      CHECK((c - want).cwiseAbs().maxCoeff() < 1e-5f);
    }
}

TEST_CASE("padded leading dimensions address sub-matrices", "[cuda_host][gemm]") {
  const vidlora::Matrix big_a = random_gemm_matrix(4, 9, 5),
                        big_b = random_gemm_matrix(6, 8, 6);  // use 4x3 and 3x5 blocks
  vidlora::Matrix big_c = vidlora::Matrix::Zero(4, 11);
  GemmProblem p;
  p.m = 4;
  p.n = 5;
  p.k = 3;
  p.lda = 9;
  p.ldb = 8;
  p.ldc = 11;
  vidlora_test::run_row_major(p, big_a.data(), big_b.data(), big_c.data(), 1.0f, 0.0f, nullptr);
  const vidlora::Matrix want = big_a.leftCols(3) * big_b.topLeftCorner(3, 5);
  CHECK((big_c.leftCols(5) - want).cwiseAbs().maxCoeff() < 1e-5f);
  CHECK(big_c.rightCols(6).cwiseAbs().maxCoeff() == 0.0f);  // nothing written past n
}

TEST_CASE("linear layer problems give forward input-grad and weight-grad products", "[cuda_host][gemm]") {
  const Eigen::Index tokens = 6, in = 5, out = 4;
  const vidlora::Matrix x = random_gemm_matrix(tokens, in, 11), w = random_gemm_matrix(out, in, 12),
                        dy = random_gemm_matrix(tokens, out, 13);
  vidlora::Matrix y(tokens, out), dx(tokens, in), dw(out, in);
  vidlora_test::run_row_major(linear_forward(tokens, in, out, DType::F32), x.data(), w.data(), y.data(), 1, 0, nullptr);
  vidlora_test::run_row_major(linear_input_grad(tokens, in, out, DType::F32), dy.data(), w.data(), dx.data(), 1, 0,
                              nullptr);
  vidlora_test::run_row_major(linear_weight_grad(tokens, in, out, DType::F32), dy.data(), x.data(), dw.data(), 1, 0,
                              nullptr);
  CHECK((y - x * w.transpose()).cwiseAbs().maxCoeff() < 1e-5f);
  CHECK((dx - dy * w).cwiseAbs().maxCoeff() < 1e-5f);
  CHECK((dw - dy.transpose() * x).cwiseAbs().maxCoeff() < 1e-5f);
}

TEST_CASE("column-major mapping swaps operands and sizes", "[cuda_host][gemm]") {
  const GemmProblem p = linear_forward(8192, 4096, 16, DType::BF16);
  const ColumnMajorGemm g = to_column_major(p);
  CHECK(g.m == 16);
  CHECK(g.n == 8192);
  CHECK(g.k == 4096);
  CHECK(g.op_a == Op::T);  // W [16, 4096] row-major read transposed
  CHECK(g.op_b == Op::N);
  CHECK(g.lda == 4096);
  CHECK(g.ldb == 4096);
  CHECK(g.ldc == 16);
  CHECK(g.a_rows == 4096);
  CHECK(g.a_cols == 16);
}

TEST_CASE("gemm shape and type checks name the problem", "[cuda_host][gemm]") {
  GemmProblem p = linear_forward(4, 3, 2, DType::F32);
  CHECK_NOTHROW(check_gemm(p));
  GemmProblem bad = p;
  bad.k = 0;
  CHECK_THROWS_WITH(check_gemm(bad), Catch::Contains("k=0"));
  bad = p;
  bad.lda = 2;
  CHECK_THROWS_WITH(check_gemm(bad), Catch::Contains("lda 2 is shorter than a row of A (3)"));
  bad = p;
  bad.b_type = DType::BF16;
  CHECK_THROWS_AS(check_gemm(bad), CudaError);
  bad = linear_forward(4, 3, 2, DType::BF16, false, DType::F16);
  CHECK_THROWS_WITH(check_gemm(bad), Catch::Contains("C must be bf16 or f32"));
  bad = linear_forward(4, 3, 2, DType::F16);
  bad.compute = Compute::TF32;
  CHECK_THROWS_WITH(check_gemm(bad), Catch::Contains("TF32"));
}

TEST_CASE("plan keys treat packed and explicit strides alike and separate everything else", "[cuda_host][gemm]") {
  GemmKey a{linear_forward(64, 32, 16, DType::F32), 16};
  GemmKey b = a;
  b.p.lda = 32;  // the packed stride written out
  b.p.ldb = 32;
  b.p.ldc = 16;
  CHECK(a == b);
  CHECK(GemmKeyHash{}(a) == GemmKeyHash{}(b));
  std::unordered_set<GemmKey, GemmKeyHash> keys{a};
  std::vector<GemmKey> variants(7, a);
  variants[0].p.m = 65;
  variants[1].p.op_b = Op::N;
  variants[2].p.a_type = variants[2].p.b_type = DType::BF16;
  variants[3].p.bias = true;
  variants[4].p.compute = Compute::TF32;
  variants[5].alignment = 4;
  variants[6].p.c_type = DType::F16;
  for (const GemmKey& v : variants) {
    CHECK_FALSE(v == a);
    keys.insert(v);
  }
  CHECK(keys.size() == 8);
}

TEST_CASE("address alignment is the largest power of two up to 256", "[cuda_host][gemm]") {
  alignas(256) static unsigned char buf[1024];
  CHECK(address_alignment(buf) == 256);
  CHECK(address_alignment(buf + 512) == 256);
  CHECK(address_alignment(buf + 128) == 128);
  CHECK(address_alignment(buf + 16) == 16);
  CHECK(address_alignment(buf + 8) == 8);
  CHECK(address_alignment(buf + 2) == 2);
  CHECK(address_alignment(buf + 3) == 1);
  CHECK(address_alignment(nullptr) == 256);
}
