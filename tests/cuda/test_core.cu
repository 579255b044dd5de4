// Device memory, status checks and the cuBLASLt GEMM wrapper against a naive host product.
#include <cstdint>

#include <catch2/catch.hpp>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <vidlora/core/cuda/gemm.cuh>

#include "support/cuda_test.cuh"

using namespace vidlora::cuda;

namespace {
// Row-major C = alpha·op(A)·op(B) + beta·C0 + bias, in double.
std::vector<double> host_gemm(const GemmProblem& p, const std::vector<float>& a, const std::vector<float>& b,
                              const std::vector<float>& c0, float alpha, float beta, const std::vector<float>& bias) {
  std::vector<double> c(static_cast<std::size_t>(p.m * p.n));
  for (std::int64_t i = 0; i < p.m; ++i)
    for (std::int64_t j = 0; j < p.n; ++j) {
      double acc = 0;
      for (std::int64_t l = 0; l < p.k; ++l) {
        const double av = p.op_a == Op::N ? a[i * p.k + l] : a[l * p.m + i];
        const double bv = p.op_b == Op::N ? b[l * p.n + j] : b[j * p.k + l];
        acc += av * bv;
      }
      c[i * p.n + j] = alpha * acc + beta * c0[i * p.n + j] + (bias.empty() ? 0.0 : bias[j]);
    }
  return c;
}

template <class T>
std::vector<T> convert(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<T>(v[i]);
  return out;
}
template <class T>
std::vector<float> round_trip(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<float>(static_cast<T>(v[i]));
  return out;
}

template <class T>
double run_gemm(GemmRunner& runner, GemmProblem p, bool bias, float beta, std::uint64_t seed) {
  p.bias = bias;
  const auto a = cuda_test::random_vector(static_cast<std::size_t>(p.m * p.k), seed);
  const auto b = cuda_test::random_vector(static_cast<std::size_t>(p.k * p.n), seed + 1);
  const auto c0 = cuda_test::random_vector(static_cast<std::size_t>(p.m * p.n), seed + 2);
  const auto bv = bias ? cuda_test::random_vector(static_cast<std::size_t>(p.n), seed + 3) : std::vector<float>{};
  // Reference on the operands as the device sees them (rounded to T).
  const auto want = host_gemm(p, round_trip<T>(a), round_trip<T>(b), c0, 0.75f, beta, bv);
  DeviceBuffer<T> da(convert<T>(a)), db(convert<T>(b));
  DeviceBuffer<float> dc(c0), dbias(bv);
  if (beta == 0.0f) cuda_test::poison(dc);
  runner.run(p, da.data(), db.data(), dc.data(), 0.75f, beta, bias ? dbias.data() : nullptr);
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
  return cuda_test::normwise_error(dc.download(), want);
}
}  // namespace

TEST_CASE("device buffers round-trip and report sizes", "[core]") {
  const std::vector<float> host = cuda_test::random_vector(1000, 1);
  DeviceBuffer<float> d(host);
  CHECK(d.size() == 1000);
  CHECK(d.bytes() == 4000);
  CHECK(d.download() == host);
  DeviceBuffer<float> moved = std::move(d);
  CHECK(d.data() == nullptr);
  CHECK(moved.download() == host);
  CHECK_THROWS_WITH(moved.upload(std::span<const float>(host.data(), 10)),
                    Catch::Contains("10 elements into a buffer of 1000"));
}

TEST_CASE("failed CUDA calls throw CudaError naming the call and place", "[core]") {
  // An invalid device number: refused up front, never a sticky error (a copy from a bad address could fault on the
  // device and break every later test of the process).
  const int bad = -1;
  try {
    VIDLORA_CUDA_CHECK(cudaSetDevice(bad));
    FAIL("cudaSetDevice(-1) did not fail");
  } catch (const CudaError& e) {
    const std::string m = e.what();
    CHECK(m.find("cudaSetDevice(bad) failed") != std::string::npos);
    CHECK(m.find("test_core.cu:") != std::string::npos);
  }
  (void)cudaGetLastError();
}

TEST_CASE("streams and events time asynchronous work", "[core]") {
  Stream s;
  Event start, stop;
  DeviceBuffer<float> buf(1 << 20);
  start.record(s);
  buf.fill_bytes(0, s);
  stop.record(s);
  stop.synchronize();
  CHECK(stop.elapsed_ms_since(start) >= 0.0f);
  CHECK(device_count() >= 1);
}

TEST_CASE("fp32 gemm matches the host product for every transpose pair with bias and beta", "[core]") {
  GemmRunner runner;
  for (Op oa : {Op::N, Op::T})
    for (Op ob : {Op::N, Op::T}) {
      GemmProblem p;
      p.m = 37;
      p.n = 19;
      p.k = 53;
      p.op_a = oa;
      p.op_b = ob;
      CHECK(run_gemm<float>(runner, p, false, 0.0f, 1) < 1e-5);
      CHECK(run_gemm<float>(runner, p, true, 0.5f, 2) < 1e-5);
    }
  CHECK(runner.cached_plans() == 8);
  GemmProblem p;
  p.m = 37;
  p.n = 19;
  p.k = 53;
  run_gemm<float>(runner, p, false, 0.0f, 3);
  CHECK(runner.cached_plans() == 8);  // same problem and alignment: cached plan reused
}

TEST_CASE("tf32 fp16 and bf16 gemms meet their tolerances with fp32 accumulation", "[core]") {
  GemmRunner runner;
  GemmProblem p = linear_forward(128, 256, 96, DType::F32);
  p.compute = Compute::TF32;
  CHECK(run_gemm<float>(runner, p, true, 0.0f, 4) < 5e-3);
  GemmProblem h = linear_forward(128, 256, 96, DType::F16);
  CHECK(run_gemm<__half>(runner, h, true, 1.0f, 5) < 1e-5);  // exact fp16 inputs, fp32 accumulate and output
  GemmProblem b = linear_weight_grad(77, 64, 48, DType::BF16);
  CHECK(run_gemm<__nv_bfloat16>(runner, b, false, 0.0f, 6) < 1e-5);  // likewise
}

TEST_CASE("16-bit gemms as the frozen linears run them: an fp32 bias with beta = 1 into fp32", "[core]") {
  // The frozen forward: bf16 / fp16 x and W, an fp32 output already holding the low-rank term (beta = 1), fp32 bias.
  GemmRunner runner;
  const GemmProblem f = linear_forward(96, 128, 160, DType::BF16);
  CHECK(run_gemm<__nv_bfloat16>(runner, f, true, 1.0f, 7) < 1e-5);
  const GemmProblem h = linear_forward(96, 128, 160, DType::F16);
  CHECK(run_gemm<__half>(runner, h, true, 1.0f, 7) < 1e-5);
}

TEST_CASE("16-bit gemms with K = 588: rows 8-byte aligned only (ViT-L/14's patch, unpadded)", "[core]") {
  // ClipVisionCuda pads this K to 592; a model whose linear widths are not multiples of 8 would not be.
  GemmRunner runner;
  CHECK(run_gemm<__nv_bfloat16>(runner, linear_forward(40, 588, 64, DType::BF16), true, 0.0f, 8) < 1e-5);
  CHECK(run_gemm<__half>(runner, linear_forward(40, 588, 64, DType::F16), true, 0.0f, 8) < 1e-5);
}

TEST_CASE("gemm refuses a bias pointer mismatch", "[core]") {
  GemmRunner runner;
  DeviceBuffer<float> a(4), b(4), c(4);
  GemmProblem p;
  p.m = p.n = p.k = 2;
  CHECK_THROWS_WITH(runner.run(p, a.data(), b.data(), c.data(), 1, 0, a.data()), Catch::Contains("bias pointer"));
}

TEST_CASE("autotuned gemm plans give the same results and leave accumulating outputs untouched while tuning",
          "[core]") {
  GemmRunner tuned(std::size_t{32} << 20, GemmTuning::Autotune);
  CHECK(tuned.tuning() == GemmTuning::Autotune);
  GemmProblem b = linear_weight_grad(512, 384, 256, DType::BF16);  // fp32 output, accumulated (beta = 1)
  CHECK(run_gemm<__nv_bfloat16>(tuned, b, false, 1.0f, 7) < 1e-5);
  GemmProblem f = linear_forward(300, 256, 200, DType::F32);
  CHECK(run_gemm<float>(tuned, f, true, 0.5f, 8) < 1e-5);
  CHECK(tuned.cached_plans() == 2);
  CHECK(tuned.autotune_trials() > 0);
  GemmRunner plain;
  CHECK(run_gemm<float>(plain, f, true, 0.5f, 8) < 1e-5);
  CHECK(plain.autotune_trials() == 0);
}
