// Streamed label-smoothed cross-entropy against loss::cross_entropy.
#include <cstdint>

#include <catch2/catch.hpp>

#include <vidlora/loss/cuda/cross_entropy.cuh>

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
