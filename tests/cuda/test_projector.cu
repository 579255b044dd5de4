// The projector on the device (model/cuda/cuda_mlp2x_gelu.cuh, model/cuda/projector.cuh) against model::Mlp2xGelu:
// the output, d loss / d features and the four parameter gradients to 1e-5 normwise, gradients accumulating over two
// backwards as the host's do, a bias-free projector, and a gradient of the wrong shape named; backward_rows (the
// gradient rows gathered from a device matrix, as the Trainer hands them over) bit for bit as backward.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include <vidlora/core/rng.hpp>
#include <vidlora/model/cuda/cuda_mlp2x_gelu.cuh>
#include <vidlora/model/projector.hpp>
#include <vidlora/model/splice.hpp>

#include "support/cuda_test.cuh"

using namespace vidlora;

namespace {

Matrix projector_input(Eigen::Index r, Eigen::Index c, std::uint64_t seed) {
  Matrix m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = 2.0f * (random_uniform(seed, 29, static_cast<std::uint64_t>(i)) - 0.5f);
  return m;
}

std::vector<float> flat(const Matrix& m) { return {m.data(), m.data() + m.size()}; }
std::vector<float> flat(const Vector& v) { return {v.data(), v.data() + v.size()}; }

void check_device_projector(bool bias) {
  INFO("bias " << bias);
  const Eigen::Index tokens = 300, in = 64, hidden = 96;
  model::Mlp2xGelu host(in, hidden, 5, bias);
  model::cuda::CudaMlp2xGelu dev(host);  // the same weights
  const Matrix x = projector_input(tokens, in, 1), dy = projector_input(tokens, hidden, 2);
  for (int pass = 0; pass < 2; ++pass) {  // the second backward adds to the first's gradients
    INFO("pass " << pass);
    const Matrix want_y = host.forward(x), got_y = dev.forward(x);
    CHECK(cuda_test::normwise_error(flat(got_y), flat(want_y)) < 1e-5);
    const Matrix want_dx = host.backward(dy), got_dx = dev.backward(dy);
    CHECK(cuda_test::normwise_error(flat(got_dx), flat(want_dx)) < 1e-5);
    CHECK(cuda_test::normwise_error(flat(dev.linear_1().grad_weight()), flat(host.linear_1().grad_weight())) < 1e-5);
    CHECK(cuda_test::normwise_error(flat(dev.linear_2().grad_weight()), flat(host.linear_2().grad_weight())) < 1e-5);
    if (bias) {
      CHECK(cuda_test::normwise_error(flat(dev.linear_1().grad_bias()), flat(host.linear_1().grad_bias())) < 1e-5);
      CHECK(cuda_test::normwise_error(flat(dev.linear_2().grad_bias()), flat(host.linear_2().grad_bias())) < 1e-5);
    }
  }
  // A weight change between steps (what AdamW does) reaches the next forward.
  host.linear_2().weight() *= 0.5f;
  dev.linear_2().weight() *= 0.5f;
  CHECK(cuda_test::normwise_error(flat(dev.forward(x)), flat(host.forward(x))) < 1e-5);
  CHECK_THROWS_WITH(dev.backward(Matrix::Zero(tokens, hidden + 1)), Catch::Contains("CudaMlp2xGelu::backward"));
}

}  // namespace

TEST_CASE("cuda projector matches model::Mlp2xGelu: output, input and parameter gradients, with and without biases",
          "[model]") {
  check_device_projector(true);
  check_device_projector(false);
}

TEST_CASE("cuda projector backward_rows gathers its gradient rows on the device: backward's gradients, bit for bit",
          "[model]") {
  // d loss / d embeds of a [400, hidden] batch whose visual tokens are rows 3..152 and 250..399 (two runs, as two
  // sequences of a micro-batch): backward_rows from the device matrix against backward of the rows gathered on the
  // host, the four parameter gradients over two backwards bit for bit; rows outside the matrix are named.
  const Eigen::Index in = 64, hidden = 96, total = 400;
  std::vector<Eigen::Index> rows;
  for (Eigen::Index r = 3; r < 153; ++r) rows.push_back(r);
  for (Eigen::Index r = 250; r < total; ++r) rows.push_back(r);
  const auto tokens = static_cast<Eigen::Index>(rows.size());
  const model::Mlp2xGelu host(in, hidden, 7, true);
  model::cuda::CudaMlp2xGelu by_rows(host), by_matrix(host);
  const Matrix x = projector_input(tokens, in, 3), grad = projector_input(total, hidden, 4);
  const vidlora::cuda::DeviceBuffer<float> d_grad(
      std::span<const float>(grad.data(), static_cast<std::size_t>(grad.size())));
  for (int pass = 0; pass < 2; ++pass) {
    (void)by_rows.forward(x);
    (void)by_matrix.forward(x);
    by_rows.backward_rows(d_grad.data(), total, hidden, rows);
    (void)by_matrix.backward(model::gather_rows<float>(grad, rows));
  }
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
  CHECK(cuda_test::bit_mismatches(flat(by_rows.linear_1().grad_weight()), flat(by_matrix.linear_1().grad_weight())) ==
        0);
  CHECK(cuda_test::bit_mismatches(flat(by_rows.linear_2().grad_weight()), flat(by_matrix.linear_2().grad_weight())) ==
        0);
  CHECK(cuda_test::bit_mismatches(flat(by_rows.linear_1().grad_bias()), flat(by_matrix.linear_1().grad_bias())) == 0);
  CHECK(cuda_test::bit_mismatches(flat(by_rows.linear_2().grad_bias()), flat(by_matrix.linear_2().grad_bias())) == 0);
  const std::vector<float> g2 = flat(by_rows.linear_2().grad_weight());
  CHECK(std::any_of(g2.begin(), g2.end(), [](float v) { return v != 0.0f; }));  // gradients, not zeros
  std::vector<Eigen::Index> outside = rows;
  outside.back() = total;
  (void)by_rows.forward(x);
  CHECK_THROWS_WITH(by_rows.backward_rows(d_grad.data(), total, hidden, outside),
                    Catch::Contains("outside a gradient of 400 rows"));
  CHECK_THROWS_WITH(by_rows.backward_rows(d_grad.data(), total, hidden + 1, rows), Catch::Contains("backward_rows"));
}

TEST_CASE("cuda projector forward_on_device leaves forward's output on the device, bit for bit; errors stop the run",
          "[model]") {
  // What the Trainer splices into the decoder step's input there (DecoderStep<Cuda>::loss_and_backward_spliced): the
  // output forward would download, at the pointer, and the backward after it as after forward. A CUDA error in the
  // projector (here a wrong argument) is its DeviceFailure, not a vidlora::Error (which the Trainer would take for a
  // loss that refused NaN logits).
  const Eigen::Index in = 48, hidden = 80, tokens = 37;
  const model::Mlp2xGelu host(in, hidden, 5, true);
  model::cuda::CudaMlp2xGelu kept(host), downloaded(host);
  const Matrix x = projector_input(tokens, in, 8), dy = projector_input(tokens, hidden, 9);
  const float* y = kept.forward_on_device(x);
  const Matrix want = downloaded.forward(x);
  std::vector<float> got(static_cast<std::size_t>(want.size()));
  VIDLORA_CUDA_CHECK(cudaMemcpy(got.data(), y, got.size() * sizeof(float), cudaMemcpyDeviceToHost));
  CHECK(cuda_test::bit_mismatches(got, flat(want)) == 0);
  (void)kept.backward(dy);
  (void)downloaded.backward(dy);
  CHECK(cuda_test::bit_mismatches(flat(kept.linear_1().grad_weight()), flat(downloaded.linear_1().grad_weight())) == 0);
  using Failure = model::cuda::CudaMlp2xGelu::DeviceFailure;
  CHECK_THROWS_AS(kept.forward_on_device(Matrix::Zero(tokens, in + 1)), Failure);
  CHECK_THROWS_WITH(kept.forward(Matrix::Zero(tokens, in + 1)), Catch::Contains("features of 49 columns"));
}

TEST_CASE("cuda projector under a caching allocator: its tensors tagged there, the same bits, a cap too small named",
          "[model]") {
  // use_allocator (the Trainer gives it the decoder step's capped allocator): the weights and gradients move there
  // with their values, the activations come from it, every tensor tagged multi_modal_projector.*; forward and
  // backward give the uncapped projector's bits; release_device gives everything back; a cap below the projector's
  // own tensors is a DeviceFailure naming one.
  const Eigen::Index in = 48, hidden = 80, tokens = 37;
  const model::Mlp2xGelu host(in, hidden, 5, true);
  model::cuda::CudaMlp2xGelu capped(host), plain(host);
  vidlora::cuda::CudaCachingAllocator allocator(CachingAllocatorOptions{.cap_bytes = std::size_t{64} << 20});
  const Matrix x = projector_input(tokens, in, 8), dy = projector_input(tokens, hidden, 9);
  (void)capped.forward(x);  // weights on the device before the move: their values must come along
  capped.use_allocator(&allocator);
  const Matrix got = capped.forward(x), want = plain.forward(x);
  CHECK(cuda_test::bit_mismatches(flat(got), flat(want)) == 0);
  (void)capped.backward(dy);
  (void)plain.backward(dy);
  CHECK(cuda_test::bit_mismatches(flat(capped.linear_1().grad_weight()), flat(plain.linear_1().grad_weight())) == 0);
  CHECK(cuda_test::bit_mismatches(flat(capped.linear_2().grad_bias()), flat(plain.linear_2().grad_bias())) == 0);
  const auto live = allocator.largest_live(32);
  CHECK(live.size() >= 8);  // weights, biases, their gradients, and the forward's activations
  for (const auto& [tag, bytes] : live) CHECK_THAT(tag, Catch::StartsWith("multi_modal_projector."));
  CHECK(allocator.stats().allocated_bytes > 0);
  capped.release_device();
  CHECK(allocator.stats().allocated_bytes == 0);
  CHECK(cuda_test::bit_mismatches(flat(capped.forward(x)), flat(want)) == 0);  // uploads again (cudaMalloc now)

  vidlora::cuda::CudaCachingAllocator tiny(CachingAllocatorOptions{.cap_bytes = 4096});
  model::cuda::CudaMlp2xGelu starved(host);
  starved.use_allocator(&tiny);
  using Failure = model::cuda::CudaMlp2xGelu::DeviceFailure;
  CHECK_THROWS_AS(starved.forward(x), Failure);
  try {
    (void)starved.forward(x);
  } catch (const Failure& e) {
    CHECK_THAT(e.what(), Catch::Contains("out of device memory") && Catch::Contains("multi_modal_projector."));
  }
}

TEST_CASE("cuda projector inside a step: use_allocator moves weights, gradients and sums with their values",
          "[model]") {
  // Two clips of a per-clip step, the projector moved into a caching allocator between them, against a twin that
  // stays: the second clip's forward runs on the step's weights (the host's changed meanwhile, under the same values
  // version: only the moved device copies hold the step's values), and finish_step's gradients (the first clip's
  // float64 sums, moved, plus the second's) are the twin's bit for bit.
  const Eigen::Index in = 48, hidden = 80, tokens = 37;
  const model::Mlp2xGelu host(in, hidden, 5, true);
  model::cuda::CudaMlp2xGelu moved(host), stay(host);
  vidlora::cuda::CudaCachingAllocator allocator(CachingAllocatorOptions{.cap_bytes = std::size_t{64} << 20});
  const Matrix x = projector_input(tokens, in, 8), dy = projector_input(tokens, hidden, 9);
  std::vector<float> first_out;
  for (auto* p : {&moved, &stay}) {
    p->begin_step(true, 1);
    const float* y = p->forward_on_device(x);
    first_out.resize(static_cast<std::size_t>(tokens * hidden));
    VIDLORA_CUDA_CHECK(cudaMemcpy(first_out.data(), y, first_out.size() * sizeof(float), cudaMemcpyDeviceToHost));
    (void)p->backward(dy);
    p->linear_2().weight() *= 2.0f;  // the host's values move; the step's stay those of version 1
  }
  moved.use_allocator(&allocator);
  std::vector<std::vector<float>> second_out;
  for (auto* p : {&moved, &stay}) {
    const float* y = p->forward_on_device(x);
    std::vector<float> out(static_cast<std::size_t>(tokens * hidden));
    VIDLORA_CUDA_CHECK(cudaMemcpy(out.data(), y, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
    second_out.push_back(std::move(out));
    (void)p->backward(dy);
    p->finish_step({});
  }
  CHECK(cuda_test::bit_mismatches(second_out[0], first_out) == 0);  // the step's weights, moved with their values
  CHECK(cuda_test::bit_mismatches(second_out[1], first_out) == 0);
  CHECK(cuda_test::bit_mismatches(flat(moved.linear_1().grad_weight()), flat(stay.linear_1().grad_weight())) == 0);
  CHECK(cuda_test::bit_mismatches(flat(moved.linear_2().grad_weight()), flat(stay.linear_2().grad_weight())) == 0);
  CHECK(cuda_test::bit_mismatches(flat(moved.linear_1().grad_bias()), flat(stay.linear_1().grad_bias())) == 0);
  CHECK(cuda_test::bit_mismatches(flat(moved.linear_2().grad_bias()), flat(stay.linear_2().grad_bias())) == 0);
  CHECK_FALSE(stay.linear_1().grad_weight().isZero(0.0));
  moved.release_device();
}

TEST_CASE("cuda projector: a step without a forward starts from the step's values (a rank without a clip)", "[model]") {
  // The device weights exist (an earlier step) and the host's values moved since (a checkpoint loaded, the host's
  // optimizer): begin_step refreshes them, so a device optimizer stepping them at the end of a step in which this
  // rank ran no clip steps the step's values, not stale ones.
  const Eigen::Index in = 48, hidden = 80, tokens = 37;
  model::cuda::CudaMlp2xGelu p(model::Mlp2xGelu(in, hidden, 5, true));
  const Matrix x = projector_input(tokens, in, 8);
  p.begin_step(true, 1);
  (void)p.forward_on_device(x);
  p.finish_step({});
  p.linear_1().weight() *= 0.5f;
  p.linear_2().bias().array() += 1.0f;
  p.begin_step(true, 2);
  for (const auto& [grad, value] : {std::pair{p.linear_1().grad_weight().data(), p.linear_1().weight().data()},
                                    std::pair{p.linear_2().grad_bias().data(), p.linear_2().bias().data()}}) {
    const std::optional<optim::DeviceParameter> d = p.device_parameter(grad);
    REQUIRE(d.has_value());
    std::vector<float> on_device(static_cast<std::size_t>(d->size));
    VIDLORA_CUDA_CHECK(
        cudaMemcpy(on_device.data(), d->value, on_device.size() * sizeof(float), cudaMemcpyDeviceToHost));
    CHECK(cuda_test::bit_mismatches(on_device, std::vector<float>(value, value + d->size)) == 0);
  }
  p.finish_step({});
}

TEST_CASE("cuda projector apply_on_device: apply's values on the device, the weights uploaded once per values version",
          "[model]") {
  // The Trainer's evaluation projects its val clips with it (not the host's apply).
  const Eigen::Index in = 48, hidden = 80, tokens = 37;
  model::Mlp2xGelu host(in, hidden, 5, true);
  model::cuda::CudaMlp2xGelu dev(host);
  const Matrix x = projector_input(tokens, in, 8);
  const Matrix want = host.apply(x);
  CHECK(cuda_test::normwise_error(flat(dev.apply_on_device(x, 1)), flat(want)) < 1e-5);
  // New host values under the same version: the device keeps the version's weights; a new version uploads them.
  dev.linear_2().weight() *= 2.0f;
  CHECK(cuda_test::bit_mismatches(flat(dev.apply_on_device(x, 1)), flat(dev.apply_on_device(x, 1))) == 0);
  CHECK(cuda_test::normwise_error(flat(dev.apply_on_device(x, 1)), flat(want)) < 1e-5);
  CHECK(cuda_test::normwise_error(flat(dev.apply_on_device(x, 2)), flat(dev.apply(x))) < 1e-5);
  CHECK(cuda_test::normwise_error(flat(dev.apply_on_device(x, 2)), flat(want)) > 1e-2);
}
