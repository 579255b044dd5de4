// Streamed label-smoothed cross-entropy against loss::cross_entropy; the streamed LM-head loss against the CPU's.
#include <cstdint>

#include <catch2/catch.hpp>

#include <vidlora/core/cuda/gemm.cuh>
#include <vidlora/loss/cuda/cross_entropy.cuh>
#include <vidlora/loss/cuda/lm_head_cross_entropy.cuh>
#include <vidlora/loss/lm_head_cross_entropy.hpp>

#include "reference/reference.hpp"
#include "support/cuda_test.cuh"

using namespace vidlora;
using vidlora::cuda::DeviceBuffer;

TEST_CASE("cuda cross entropy loss and gradient match the CPU with label smoothing and ignored tokens", "[loss]") {
  for (auto [rows, vocab, eps] : {std::tuple<long, long, double>{7, 32000, 0.1}, {3, 1001, 0.0}, {64, 152064, 0.0}}) {
    INFO("rows " << rows << " vocab " << vocab << " eps " << eps);
    const auto logits = cuda_test::random_vector(static_cast<std::size_t>(rows * vocab), rows + vocab, -12.0f, 12.0f);
    std::vector<int> targets(static_cast<std::size_t>(rows));
    for (long r = 0; r < rows; ++r)
      targets[static_cast<std::size_t>(r)] = (r % 3 == 1) ? -100 : static_cast<int>((r * 7919) % vocab);
    const auto want = ref::cross_entropy(logits, rows, vocab, targets, eps);
    const std::vector<std::int32_t> t32(targets.begin(), targets.end());
    const long valid = loss::cuda::check_ce_targets(t32, vocab, -100, eps);
    DeviceBuffer<float> dl(logits), dg(logits.size());
    DeviceBuffer<std::int32_t> dt(t32);
    DeviceBuffer<double> dloss(static_cast<std::size_t>(rows));
    cuda_test::poison(dg);
    cuda_test::poison(dloss);
    loss::cuda::CrossEntropyParams p;
    p.logits = dl.data();
    p.targets = dt.data();
    p.rows = rows;
    p.vocab = vocab;
    p.label_smoothing = eps;
    p.grad_scale = 1.0 / loss::cuda::ce_normalizer(false, valid);
    p.grad = dg.data();
    p.row_loss = dloss.data();
    loss::cuda::cross_entropy(p);
    VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
    double sum = 0;
    for (double l : dloss.download()) sum += l;
    CHECK(sum * p.grad_scale == Approx(want.loss).epsilon(1e-6));  // the CPU sums exp in float
    CHECK(cuda_test::elementwise_relative_error(dg.download(), want.grad, 1e-6) < 1e-4);
  }
}

// The streamed LM-head loss (logits = hidden · headᵀ a chunk of the vocabulary at a time, never [rows, vocab]) against
// the float64 CPU function, over chunks that do not divide the vocabulary, with label smoothing and ignored rows.
TEST_CASE("cuda streamed LM-head cross-entropy: the float64 CPU loss and hidden gradient over vocabulary chunks",
          "[loss]") {
  const long rows = 9, dim = 24, vocab = 100;
  const auto hidden = cuda_test::random_vector(static_cast<std::size_t>(rows * dim), 11);
  const auto head = cuda_test::random_vector(static_cast<std::size_t>(vocab * dim), 12, -0.5f, 0.5f);
  std::vector<int> targets(static_cast<std::size_t>(rows));
  for (long r = 0; r < rows; ++r)
    targets[static_cast<std::size_t>(r)] = (r % 4 == 2) ? -100 : static_cast<int>((r * 37) % vocab);
  MatrixOf<double> h(rows, dim), w(vocab, dim);
  for (long r = 0; r < rows; ++r)
    for (long c = 0; c < dim; ++c) h(r, c) = hidden[static_cast<std::size_t>(r * dim + c)];
  for (long r = 0; r < vocab; ++r)
    for (long c = 0; c < dim; ++c) w(r, c) = head[static_cast<std::size_t>(r * dim + c)];
  loss::CrossEntropyOptions ce;
  ce.label_smoothing = 0.1;
  const auto want = loss::lm_head_cross_entropy<double>(h, w, targets, ce, Eigen::Index{16});
  std::vector<double> want_grad(static_cast<std::size_t>(rows * dim));
  for (long r = 0; r < rows; ++r)
    for (long c = 0; c < dim; ++c) want_grad[static_cast<std::size_t>(r * dim + c)] = want.grad_hidden(r, c);

  vidlora::cuda::GemmRunner gemm;
  DeviceBuffer<float> dh(hidden), dw(head), dg(hidden.size());
  const std::vector<std::int32_t> t32(targets.begin(), targets.end());
  loss::cuda::LmHeadCeOptions o;
  o.label_smoothing = 0.1;
  o.chunk_size = 16;  // 7 chunks of the vocabulary, the last of 4 entries
  const loss::cuda::LmHeadCeShape shape{rows, dim, vocab, dim, rows};
  auto check = [&](cudaStream_t stream) {
    cuda_test::poison(dg);
    const loss::cuda::LmHeadCeResult got =
        loss::cuda::lm_head_cross_entropy(gemm, dh.data(), dw.data(), shape, t32, o, dg.data(), stream);
    VIDLORA_CUDA_CHECK(cudaStreamSynchronize(stream));
    CHECK(got.valid_tokens == want.valid_tokens);
    CHECK(got.loss == Approx(want.loss).epsilon(1e-6));
    CHECK(cuda_test::normwise_error(dg.download(), want_grad) < 1e-5);
  };
  check(nullptr);
  cudaStream_t blocking = nullptr;  // ordered with the legacy stream, which its target upload runs on
  VIDLORA_CUDA_CHECK(cudaStreamCreate(&blocking));
  check(blocking);
  VIDLORA_CUDA_CHECK(cudaStreamDestroy(blocking));
  // A non-blocking stream's kernels would not wait for that upload (under the emulation's streams they read the targets
  // before it lands, and the loss comes out wrong): refused before anything is queued.
  vidlora::cuda::Stream non_blocking;
  CHECK_THROWS_WITH(
      loss::cuda::lm_head_cross_entropy(gemm, dh.data(), dw.data(), shape, t32, o, dg.data(), non_blocking.get()),
      Catch::Contains("cuda::lm_head_cross_entropy") && Catch::Contains("cudaStreamNonBlocking is not supported"));
}
