// train/lora_mfu.hpp: the FLOPs a LoRA step does per token, counted by hand for LLaVA-NeXT-Video-7B's decoder
// (LLaMA-7B shapes) and a GQA decoder, and the MFU they give.
#include <catch2/catch.hpp>

#include <vidlora/presets/model_shape.hpp>
#include <vidlora/train/lora_mfu.hpp>

using namespace vidlora;

namespace {
model::DecoderConfig llama7b() {
  model::DecoderConfig c;
  c.hidden_size = 4096;
  c.intermediate_size = 11008;
  c.num_hidden_layers = 32;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 32;
  c.head_dim = 128;
  c.vocab_size = 32064;
  return c;
}
}  // namespace

TEST_CASE("N counts the decoder's matmul weights: LLaMA-7B's 6.74 B less its embedding table", "[train][mfu]") {
  // per layer 4 · 4096² (q, k, v, o) + 3 · 4096 · 11008 (gate, up, down) = 202,375,168; 32 layers; LM head 32064 · 4096
  CHECK(train::decoder_matmul_parameters(llama7b()) == 6'607'339'520.0);
  // with the embedding table (32064 · 4096) it is the 6.74 B of LLaMA-7B
  CHECK(train::decoder_matmul_parameters(llama7b()) + 32064.0 * 4096 == 6'738'673'664.0);

  // grouped-query attention: k and v are num_key_value_heads · head_dim wide
  model::DecoderConfig gqa = llama7b();
  gqa.num_key_value_heads = 8;
  const double per_layer = 4096.0 * 4096 * 2 + 2.0 * 4096 * 1024 + 3.0 * 4096 * 11008;
  CHECK(train::decoder_matmul_parameters(gqa) == per_layer * 32 + 32064.0 * 4096);
}

TEST_CASE("a LoRA step's FLOPs per token are 4·N + 6·L·d·T, and MFU their rate over the peak", "[train][mfu]") {
  const auto c = llama7b();
  // T = 1,000: 4 · 6,607,339,520 + 6 · 32 · 4096 · 1,000
  CHECK(train::lora_training_flops_per_token(c, 1000) == 26'429'358'080.0 + 786'432'000.0);
  CHECK(train::lora_training_flops_per_token(c, 0) == 4.0 * train::decoder_matmul_parameters(c));
  // the same from the preset estimate's shape (what bench_cuda_preset_step counts with)
  constexpr presets::ModelShape m = presets::models::LlavaNextVideo7B;
  CHECK(
      train::lora_training_flops_per_token(static_cast<double>(m.layers * m.layer_linear_params() + m.vocab * m.hidden),
                                           m.layers, m.heads * m.head_dim, 1000) == 26'429'358'080.0 + 786'432'000.0);

  // 2,000 tokens a second at T = 1,000 on a 989 TFLOP/s peak: 5.50%
  const double flops = 2000.0 * train::lora_training_flops_per_token(c, 1000);
  CHECK(train::lora_mfu(flops, 1.0, 989e12) == Approx(0.055037).epsilon(1e-4));
  CHECK(train::lora_mfu(2 * flops, 2.0, 989e12) == train::lora_mfu(flops, 1.0, 989e12));
  CHECK(train::lora_mfu(flops, 1.0, 0.0) == 0.0);  // no known peak: no MFU
  CHECK(train::lora_mfu(flops, 0.0, 989e12) == 0.0);
}

TEST_CASE("the MFU denominator is the peak of the GPU that ran, by its name and compute capability", "[train][mfu]") {
  // cudaGetDeviceProperties' names; dense 16-bit tensor TFLOP/s from the datasheets (no sparsity)
  CHECK(train::dense_16bit_peak_tflops("NVIDIA H100 80GB HBM3", 9, 0) == 989.0);
  CHECK(train::dense_16bit_peak_tflops("NVIDIA H200", 9, 0) == 989.0);
  CHECK(train::dense_16bit_peak_tflops("NVIDIA H100 PCIe", 9, 0) == 756.0);
  CHECK(train::dense_16bit_peak_tflops("NVIDIA H100 NVL", 9, 0) == 835.0);
  CHECK(train::dense_16bit_peak_tflops("NVIDIA A100-SXM4-80GB", 8, 0) == 312.0);
  CHECK(train::dense_16bit_peak_tflops("NVIDIA A100-PCIE-40GB", 8, 0) == 312.0);
  CHECK(train::dense_16bit_peak_tflops("NVIDIA L4", 8, 9) == 121.0);
  CHECK(train::dense_16bit_peak_tflops("Tesla T4", 7, 5) == 65.0);
  // not in the table: no MFU rather than another card's
  CHECK(train::dense_16bit_peak_tflops("NVIDIA L40S", 8, 9) == 0.0);
  CHECK(train::dense_16bit_peak_tflops("NVIDIA GeForce RTX 4090", 8, 9) == 0.0);
  CHECK(train::dense_16bit_peak_tflops("NVIDIA A10", 8, 6) == 0.0);
}
