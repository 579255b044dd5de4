#include <catch2/catch.hpp>

#include <vidlora/presets.hpp>
#include <vidlora/quant/quantizer.hpp>

#include <span>

#include <string>
#include <type_traits>
#include <vector>

using namespace vidlora;
using namespace vidlora::presets;

namespace {
template <class Array>
std::vector<std::string> names(const Array& a) {
  return {a.begin(), a.end()};
}
struct T4Dense : T4 {
  static constexpr bool load_in_4bit = false;
};
struct A100Ckpt : A100 {
  static constexpr bool gradient_checkpointing = true;
};
struct Small : T4 {
  static constexpr int vram_gb = 8;
  static constexpr bool load_in_4bit = false;
};
struct H100Ckpt : H100 {
  static constexpr bool gradient_checkpointing = true;
};
}  // namespace

TEST_CASE("T4 preset holds the recipe's values", "[presets]") {
  STATIC_REQUIRE(T4::vram_gb == 16);
  STATIC_REQUIRE(T4::load_in_4bit);
  STATIC_REQUIRE(T4::gradient_checkpointing);
  STATIC_REQUIRE(T4::lora_r == 8);
  STATIC_REQUIRE(T4::lora_alpha == 16);
  STATIC_REQUIRE(T4::lora_dropout == 0.1);
  CHECK(names(T4::target_set::modules) == std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"});
  STATIC_REQUIRE(T4::batch_size == 1);
  STATIC_REQUIRE(T4::gradient_accumulation_steps == 16);
  STATIC_REQUIRE(T4::num_frames == 4);
  STATIC_REQUIRE(T4::learning_rate == 1e-4);
  STATIC_REQUIRE(std::is_same_v<T4::lr_policy, vidlora::schedule::Cosine>);
  STATIC_REQUIRE(T4::warmup_ratio == 0.05);
  STATIC_REQUIRE(T4::label_smoothing == 0.0);
  STATIC_REQUIRE(T4::fp16);
  STATIC_REQUIRE_FALSE(T4::bf16);
}

TEST_CASE("L4 preset holds the recipe's values", "[presets]") {
  STATIC_REQUIRE(L4::vram_gb == 24);
  STATIC_REQUIRE(L4::load_in_4bit);
  STATIC_REQUIRE(L4::gradient_checkpointing);
  STATIC_REQUIRE(L4::lora_r == 16);
  STATIC_REQUIRE(L4::lora_alpha == 32);
  STATIC_REQUIRE(L4::lora_dropout == 0.05);
  CHECK(names(L4::target_set::modules) ==
        std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj"});
  STATIC_REQUIRE(L4::batch_size == 2);
  STATIC_REQUIRE(L4::gradient_accumulation_steps == 8);
  STATIC_REQUIRE(L4::num_frames == 8);
  STATIC_REQUIRE(L4::learning_rate == 1e-4);
  STATIC_REQUIRE(std::is_same_v<L4::lr_policy, vidlora::schedule::Cosine>);
  STATIC_REQUIRE(L4::warmup_ratio == 0.03);
  STATIC_REQUIRE(L4::label_smoothing == 0.1);
  STATIC_REQUIRE(L4::fp16);
  STATIC_REQUIRE_FALSE(L4::bf16);
}

TEST_CASE("A100 preset holds the recipe's values", "[presets]") {
  STATIC_REQUIRE(A100::vram_gb == 40);
  STATIC_REQUIRE(A100::load_in_4bit);
  STATIC_REQUIRE_FALSE(A100::gradient_checkpointing);
  STATIC_REQUIRE(A100::lora_r == 32);
  STATIC_REQUIRE(A100::lora_alpha == 64);
  STATIC_REQUIRE(A100::lora_dropout == 0.05);
  CHECK(names(A100::target_set::modules) ==
        std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"});
  STATIC_REQUIRE(A100::batch_size == 4);
  STATIC_REQUIRE(A100::gradient_accumulation_steps == 4);
  STATIC_REQUIRE(A100::num_frames == 8);
  STATIC_REQUIRE(A100::learning_rate == 2e-4);
  STATIC_REQUIRE(std::is_same_v<A100::lr_policy, vidlora::schedule::Cosine>);
  STATIC_REQUIRE(A100::warmup_ratio == 0.03);
  STATIC_REQUIRE(A100::label_smoothing == 0.1);
  STATIC_REQUIRE_FALSE(A100::fp16);
  STATIC_REQUIRE(A100::bf16);
}

TEST_CASE("H100 preset holds the recipe's values", "[presets]") {
  STATIC_REQUIRE(H100::vram_gb == 80);
  STATIC_REQUIRE(H100::load_in_4bit);
  STATIC_REQUIRE_FALSE(H100::gradient_checkpointing);
  STATIC_REQUIRE(H100::lora_r == 64);
  STATIC_REQUIRE(H100::lora_alpha == 128);
  STATIC_REQUIRE(H100::lora_dropout == 0.05);
  STATIC_REQUIRE(std::is_same_v<H100::target_set, vidlora::lora::Extended>);
  CHECK(names(H100::target_set::modules) ==
        std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"});
  STATIC_REQUIRE(H100::batch_size == 8);
  STATIC_REQUIRE(H100::gradient_accumulation_steps == 2);
  STATIC_REQUIRE(H100::num_frames == 16);
  STATIC_REQUIRE(H100::learning_rate == 2e-4);
  STATIC_REQUIRE(std::is_same_v<H100::lr_policy, vidlora::schedule::CosineRestarts>);
  STATIC_REQUIRE(H100::lr_policy::name == "cosine_with_restarts");
  STATIC_REQUIRE(H100::warmup_ratio == 0.03);
  STATIC_REQUIRE(H100::label_smoothing == 0.1);
  STATIC_REQUIRE_FALSE(H100::fp16);
  STATIC_REQUIRE(H100::bf16);
}

TEST_CASE("every preset shares weight decay 0.01 clipping 1.0 patience 5, the recipe's stage 1 and its own stage 2",
          "[presets]") {
  for_each_preset([](auto p) {
    using P = decltype(p);
    INFO(P::name);
    CHECK(P::weight_decay == 0.01);
    CHECK(P::max_grad_norm == 1.0);
    CHECK(P::patience == 5);
    CHECK(P::stage1.train_projector);
    CHECK_FALSE(P::stage1.train_lora);
    CHECK(P::stage1.num_epochs == 1);
    CHECK(P::stage1.learning_rate == 2e-4);
    CHECK(P::stage1.warmup_ratio == 0.1);
    constexpr StageConfig stage2 = stage2_of<P>();
    CHECK(stage2.train_projector);
    CHECK(stage2.train_lora);
    CHECK(stage2.num_epochs == 4);
    CHECK(stage2.learning_rate == P::learning_rate);  // stage 2 trains at the preset's rate and warmup
    CHECK(stage2.warmup_ratio == P::warmup_ratio);
    CHECK(P::lora_alpha == 2 * P::lora_r);  // the alpha = 2r rule
  });
}

TEST_CASE("GPU presets choose the Cuda backend and the CPU preset the Cpu backend", "[presets]") {
  STATIC_REQUIRE(std::is_same_v<backend_of<T4>, backend::Cuda>);
  STATIC_REQUIRE(std::is_same_v<backend_of<L4>, backend::Cuda>);
  STATIC_REQUIRE(std::is_same_v<backend_of<A100>, backend::Cuda>);
  STATIC_REQUIRE(std::is_same_v<backend_of<H100>, backend::Cuda>);
  STATIC_REQUIRE(std::is_same_v<backend_of<Cpu>, backend::Cpu>);
  STATIC_REQUIRE(backend::Backend<backend::Cpu>);
  STATIC_REQUIRE_FALSE(backend::Backend<int>);
  CHECK(backend_of<T4>::on_device);
  CHECK_FALSE(backend_of<Cpu>::on_device);
  CHECK(backend_of<H100>::name == "Cuda");
}

TEST_CASE("preset names map to their types through the one table", "[presets]") {
  CHECK(with_preset("A100", [](auto p) { return decltype(p)::vram_gb; }) == 40);
  CHECK(with_preset("Cpu", [](auto p) { return decltype(p)::cuda_arch; }) == 0);
  CHECK(with_preset("H100", [](auto p) { return decltype(p)::cuda_arch; }) == 90);
  CHECK_THROWS_WITH(with_preset("V100", [](auto p) { return decltype(p)::vram_gb; }),
                    Catch::Contains("unknown preset 'V100'"));
  CHECK_THROWS_WITH(with_preset("V100", [](auto p) { return decltype(p)::vram_gb; }),
                    Catch::Contains("known presets: Cpu, T4, L4, A100, H100"));
  STATIC_REQUIRE(std::is_same_v<ActivePreset, Cpu>);  // no VIDLORA_ACTIVE_PRESET in this translation unit
}

TEST_CASE("model shapes reproduce the published parameter counts", "[presets][memory]") {
  // Decoder linears + embeddings (+ untied LM head); norms (a few hundred thousand) are not counted.
  const auto total = [](const ModelShape& m) { return m.layers * m.layer_linear_params() + m.embedding_params(); };
  CHECK(total(models::LlavaNextVideo7B) == 6'476'005'376L + 2L * 32064 * 4096);  // Vicuna-7B: 6.74B
  CHECK(total(models::Qwen3_8B) == Approx(8.19e9).epsilon(0.005));
  CHECK(total(models::Qwen3_4B) == Approx(4.02e9).epsilon(0.005));
}

TEST_CASE("memory estimate counts LoRA parameters as PEFT reports them", "[presets][memory]") {
  // PEFT on a LLaMA-7B with r=8 on q,k,v,o: 32 layers x 4 modules x 8 x (4096 + 4096) trainable parameters.
  constexpr auto e = estimate_memory<T4>(models::LlavaNextVideo7B);
  STATIC_REQUIRE(e.lora_params == 8'388'608.0);
  // All seven modules at r=64: 32 x 64 x (4x8192 + 3x(4096+11008)).
  constexpr auto h = estimate_memory<H100>(models::LlavaNextVideo7B);
  STATIC_REQUIRE(h.lora_params == 32.0 * 64 * (4 * 8192 + 3 * (4096 + 11008)));
  // Projector Mlp2xGelu 1024 -> 4096 -> 4096 with biases.
  STATIC_REQUIRE(e.projector_params == 1024.0 * 4096 + 4096 + 4096.0 * 4096 + 4096);
  CHECK(e.trainable_state == 16.0 * (e.lora_params + e.projector_params));
  // The device step's float64 sums over the step's clips (batch_invariant) come on top on the device: 8 B each.
  CHECK(e.clip_sums_device == 8.0 * (e.lora_params + e.projector_params));
  CHECK(e.total_device() ==
        e.total() - e.activations + e.activations_device + e.clip_sums_device + e.projector_activations_device);
  // x, z, GELU(z), y of every visual token of the micro-batch, fp32
  CHECK(e.projector_activations_device ==
        static_cast<double>(T4::num_frames) * 144.0 * T4::batch_size * (1024.0 + 3.0 * 4096.0) * 4.0);
}

TEST_CASE("the NF4 estimate equals what the quantizer stores for the same weights", "[presets][memory]") {
  constexpr auto e = estimate_memory<T4>(models::LlavaNextVideo7B);
  const double linear = 6'476'005'376.0;
  // Measured, not re-derived: the bytes Quantizer<NF4, 64> with double-quantized absmax holds for a
  // 4096 x 4096 q_proj, per parameter (packed codes, 8-bit block scales, nested float scales, offset).
  std::vector<float> w(4096 * 4096);
  for (std::size_t i = 0; i < w.size(); ++i)
    w[i] = static_cast<float>(static_cast<int>(i * 2654435761u % 2001) - 1000) * 1e-5f;
  const auto q = Quantizer<NF4, 64>::quantize(std::span<const float>(w), true);
  const double stored_per_param = static_cast<double>(q.storage_bytes()) / static_cast<double>(w.size());
  CHECK(stored_per_param == Approx(0.5159).epsilon(1e-3));  // about 4.13 bits per weight
  // Embeddings and LM head stay 16-bit (2 bytes each) in a 4-bit model, as bitsandbytes leaves them.
  CHECK(e.frozen_weights == Approx(linear * stored_per_param + 2.0 * 32064 * 4096 * 2).epsilon(1e-6));
  // The same model unquantized in fp16: 2 bytes for every parameter, about 3.5x more.
  constexpr auto dense = estimate_memory<T4Dense>(models::LlavaNextVideo7B);
  CHECK(dense.frozen_weights == Approx((linear + 2.0 * 32064 * 4096) * 2.0).epsilon(1e-12));
  CHECK(dense.frozen_weights / e.frozen_weights == Approx(3.49).margin(0.01));
}

TEST_CASE("the memory estimate counts Qwen3's head norms: q and k before them and their 1/rms", "[presets][memory]") {
  constexpr ModelShape with = models::Qwen3_1_7B;
  STATIC_REQUIRE(with.qk_norm);
  STATIC_REQUIRE_FALSE(models::LlavaNextVideo7B.qk_norm);
  ModelShape without = with;
  without.qk_norm = false;
  const MemoryEstimate a = estimate_memory<A100>(with), b = estimate_memory<A100>(without);
  const double tokens = static_cast<double>(A100::batch_size * with.tokens_per_sample(A100::num_frames));
  const double per_token =
      static_cast<double>((with.heads + with.kv_heads) * with.head_dim + with.heads + with.kv_heads);
  CHECK(a.activations - b.activations == static_cast<double>(with.layers) * tokens * per_token * 2.0);  // bf16
  CHECK(a.activations_fp32 - b.activations_fp32 == static_cast<double>(with.layers) * tokens * per_token * 4.0);
}

namespace {
struct Bf16OnTuring : T4 {  // a bf16 preset on a GPU without bf16 tensor cores
  static constexpr bool fp16 = false;
  static constexpr bool bf16 = true;
};
}  // namespace

TEST_CASE("the device step's precision: the preset's own where its GPU has the tensor cores for it", "[presets]") {
  STATIC_REQUIRE(device_precision_of<T4>() == "fp16");    // sm_75: fp16 tensor cores
  STATIC_REQUIRE(device_precision_of<L4>() == "fp16");    // sm_89, an fp16 preset
  STATIC_REQUIRE(device_precision_of<A100>() == "bf16");  // bf16 GEMM operands and saved activations
  STATIC_REQUIRE(device_precision_of<H100>() == "bf16");
  STATIC_REQUIRE(device_precision_of<Cpu>() == "fp32");
  STATIC_REQUIRE(device_precision_of<Bf16OnTuring>() == "fp16");  // bf16 tensor cores need sm_80
  STATIC_REQUIRE(precision_of<Bf16OnTuring>() == "bf16");
}

TEST_CASE("the device estimate follows the precision the step runs: bf16 packs the saved activations, fp16 does not",
          "[presets][memory]") {
  constexpr auto own = estimate_memory<H100>(models::LlavaNextVideo7B);  // device_precision_of<H100>(): bf16
  constexpr auto fp16 = estimate_memory<H100>(models::LlavaNextVideo7B, "fp16");
  STATIC_REQUIRE(own.activations_device == estimate_memory<H100>(models::LlavaNextVideo7B, "bf16").activations_device);
  STATIC_REQUIRE(fp16.activations_device > own.activations_device);
  STATIC_REQUIRE(fp16.activations_device == fp16.activations_fp32);  // nothing packed: the fp32 step's bytes
  STATIC_REQUIRE(fp16.activations == own.activations);               // the preset's own estimate is unchanged
}

TEST_CASE("gradient checkpointing cuts activation memory by an order of magnitude", "[presets][memory]") {
  constexpr auto plain = estimate_memory<A100>(models::LlavaNextVideo7B);
  constexpr auto ckpt = estimate_memory<A100Ckpt>(models::LlavaNextVideo7B);
  CHECK(plain.activations / ckpt.activations > 8.0);
  CHECK(plain.tokens_per_sample == 8 * 144 + 128);
}

TEST_CASE("every shipped preset fits its default model and the estimate rejects an 8 GB card without 4-bit",
          "[presets][memory]") {
  for_each_preset([](auto p) {
    using P = decltype(p);
    INFO(P::name);
    CHECK(fits_in_memory<P>(P::default_model));
  });
  STATIC_REQUIRE_FALSE(fits_in_memory<Small>(models::Qwen3_8B));
  STATIC_REQUIRE(AssertFits<H100Ckpt, models::Qwen3_8B>::value);
  // The H100 row as the recipe writes it (batch 8 x 16 frames = 19,456 tokens, no checkpointing) holds a 7B's
  // activations in bf16, its precision, and not in fp32 (the device step's today); with checkpointing in either.
  STATIC_REQUIRE(fits_in_memory<H100>(models::LlavaNextVideo7B));
  constexpr auto h100 = estimate_memory<H100>(models::LlavaNextVideo7B);
  STATIC_REQUIRE(h100.total() - h100.activations + h100.activations_fp32 > h100.budget);
  STATIC_REQUIRE(fits_in_memory<H100Ckpt>(models::LlavaNextVideo7B));
  // The A100 row (batch 4 x 8 frames) fits a 7B even with the fp32 step.
  constexpr auto a100 = estimate_memory<A100>(models::LlavaNextVideo7B);
  STATIC_REQUIRE(a100.total() - a100.activations + a100.activations_fp32 <= a100.budget);
  // The device step today ("bf16": fp32 values, the saved activations of every block but the last in bf16) fits the
  // H100 row, between the all-bf16 count and the fp32 one.
  STATIC_REQUIRE(h100.total_device() <= h100.budget);
  STATIC_REQUIRE(h100.activations < h100.activations_device);
  STATIC_REQUIRE(h100.activations_device < h100.activations_fp32);
  // The fp32 and TF32 presets' device step is the fp32 count.
  constexpr auto l4 = estimate_memory<L4>(models::LlavaNextVideo7B);
  STATIC_REQUIRE(l4.activations_device == l4.activations_fp32);
}
