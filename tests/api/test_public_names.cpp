// Every public name issue 2 lists, spelled exactly as downstream code spells it, from namespace vidlora.
#include <catch2/catch.hpp>

#include <vidlora/vidlora.hpp>

#include <stdexcept>
#include <vector>

TEST_CASE("the public names compile as written and give the documented values", "[api]") {
  using namespace vidlora;
  Matrix w = Matrix::Random(16, 24);
  LoraLinear<4, 8, DenseWeight> layer(w, LoraOptions{.dropout = 0.0, .seed = 3, .use_rslora = false});
  STATIC_REQUIRE(LoraLinear<4, 8>::rank == 4);
  CHECK(layer.scaling() == 2.0);
  const Matrix x = Matrix::Random(3, 24);
  CHECK(layer.forward(x, true).isApprox(x * w.transpose()));  // B starts at zero
  const Matrix dx = layer.backward(Matrix::Ones(3, 16));
  CHECK(dx.rows() == 3);
  CHECK(dx.cols() == 24);
  CHECK(layer.lora_A().rows() == 4);
  CHECK(layer.lora_B().cols() == 4);
  CHECK(layer.grad_A().isZero());  // dL/dA = B^T ... with B = 0
  CHECK_FALSE(layer.grad_B().isZero());
  layer.merge();
  CHECK(layer.merged());
  layer.unmerge();
  CHECK_FALSE(layer.merged());

  std::vector<float> data(130);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i) / 129.0f - 0.5f;
  quant::QuantizedBlocks q = Quantizer<NF4, 64>::quantize(std::span<const float>(data), true);
  CHECK(q.numel == 130);
  CHECK(q.packed.size() == 65);
  CHECK(q.qabsmax.size() == 3);
  CHECK(q.nested_absmax.size() == 1);
  const std::vector<float> back = Quantizer<NF4, 64>::dequantize(q);
  REQUIRE(back.size() == 130);
  for (std::size_t i = 0; i < back.size(); ++i) CHECK(std::abs(back[i] - data[i]) < 0.1);
  quant::QuantizedBlocks plain = Quantizer<FP4, 128>::quantize(std::span<const float>(data), false);
  CHECK(plain.absmax.size() == 2);

  Scheduler<Cosine> sched(ScheduleOptions{.base_lr = 1e-4, .warmup_steps = 10, .total_steps = 110});
  CHECK(sched.lr(5) == Approx(5e-5));
  CHECK(sched.lr(60) == Approx(5e-5));  // half-way through the cosine
  CHECK(schedule::warmup_steps_for(0.03, 1000) == 30);
  CHECK(schedule::adjusted_lr(1e-4, 4, 8) == Approx(2e-4));

  const std::vector<int> targets{1, -100};
  Matrix logits = Matrix::Zero(2, 4);
  loss::CrossEntropyResult ce = loss::cross_entropy(logits, std::span<const int>(targets),
                                                    CrossEntropyOptions{.label_smoothing = 0.1, .ignore_index = -100});
  CHECK(ce.loss == Approx(std::log(4.0)));  // uniform logits: every smoothing mix gives log V
  CHECK(ce.grad.row(1).isZero());           // ignored token

  EarlyStopping es(EarlyStoppingOptions{.patience = 1, .threshold = 0.0, .mode = train::Mode::Min});
  CHECK_FALSE(es(1.0));
  CHECK(es(1.5));
  STATIC_REQUIRE(select_lora_rank(10000, 16) == 8);
  STATIC_REQUIRE(presets::H100::lora_alpha == 128);
  // vidlora::Error is what every failure throws, and it is a std::runtime_error callers can catch.
  CHECK_THROWS_AS(Scheduler<Cosine>(ScheduleOptions{.base_lr = 1e-4, .total_steps = 0}), Error);
  const auto empty = std::span<const float>(data.data(), 0);
  using Nf4Quantizer = Quantizer<NF4, 64>;
  CHECK_THROWS_AS(Nf4Quantizer::quantize(empty, true), std::runtime_error);
}
