// One decoder block run by the CUDA executor (model/cuda/decoder_layer.cuh) and by the CPU executor that
// model::Decoder runs (reference/decoder_layer.cpp), from the same weights and inputs, through the same step list
// (model/decoder_layer_steps.hpp): each step's output the forward keeps (q, k after RoPE, v, the attention
// residual, gate, up), the block's output, its input gradient and every LoRA gradient (llama.cpp's
// test-backend-ops compares its backends the same way). fp32: 1e-5 normwise for outputs, 1e-4 for gradients.
#include <cstdint>

#include <catch2/catch.hpp>

#include <vidlora/io/half.hpp>
#include <vidlora/model/cuda/decoder_layer.cuh>
#include <vidlora/model/cuda/flash_attention_mma.cuh>

#include "reference/decoder_layer.hpp"
#include "support/cuda_test.cuh"

using namespace vidlora;
using vidlora::cuda::DeviceBuffer;

namespace {

// Device copies of what ref::decoder_layer used, wired into DecoderLayerDeviceWeights.
struct DeviceLayer {
  DeviceBuffer<float> norm1, norm2, q_norm, k_norm;
  DeviceBuffer<float> w[7], a[7], b[7], grad_a[7], grad_b[7], nested[7];
  DeviceBuffer<std::uint8_t> packed[7], qabsmax[7];
  model::cuda::DecoderLayerDeviceWeights weights;

  DeviceLayer(const ref::DecoderLayerCase& c, const ref::DecoderLayer& r)
      : norm1(r.norm1), norm2(r.norm2), q_norm(r.q_norm), k_norm(r.k_norm) {
    weights.norm1 = norm1.data();
    weights.norm2 = norm2.data();
    weights.q_norm = c.qwen3 ? q_norm.data() : nullptr;
    weights.k_norm = c.qwen3 ? k_norm.data() : nullptr;
    for (int m = 0; m < 7; ++m) {
      auto& lin = weights.linears[static_cast<std::size_t>(m)];
      lora::cuda::LoraLinearParams& p = lin.params;
      p.in = r.in[m];
      p.out = r.out[m];
      p.rank = 16;
      if (c.nf4) {
        packed[m] = DeviceBuffer<std::uint8_t>(r.q[m].packed);
        qabsmax[m] = DeviceBuffer<std::uint8_t>(r.q[m].qabsmax);
        nested[m] = DeviceBuffer<float>(r.q[m].nested_absmax);
        p.base = lora::cuda::BaseKind::NF4;
        p.qw = {packed[m].data(), nullptr, qabsmax[m].data(), nested[m].data(), r.q[m].absmax_offset, p.out * p.in, 6};
      } else {
        w[m] = DeviceBuffer<float>(r.w[m]);
        p.base = lora::cuda::BaseKind::Dense;
        p.w = w[m].data();
      }
      lin.has_lora = !r.a[m].empty();
      lin.layer_index = static_cast<std::uint32_t>(m);
      if (!lin.has_lora) continue;
      a[m] = DeviceBuffer<float>(r.a[m]);
      b[m] = DeviceBuffer<float>(r.b[m]);
      grad_a[m] = DeviceBuffer<float>(r.a[m].size());
      grad_b[m] = DeviceBuffer<float>(r.b[m].size());
      grad_a[m].fill_bytes(0);
      grad_b[m].fill_bytes(0);
      p.a = a[m].data();
      p.b = b[m].data();
      p.grad_a = grad_a[m].data();
      p.grad_b = grad_b[m].data();
      p.scaling = r.scaling;
      p.dropout = static_cast<float>(c.dropout);
      p.seed = c.seed;
    }
  }
};

std::vector<float> download(const model::cuda::DeviceTensor& t) { return t.buffer.download(); }

model::cuda::DecoderLayerShape shape_of(const ref::DecoderLayerCase& c) {
  model::cuda::DecoderLayerShape shape;
  shape.batch = c.batch;
  shape.seq_len = c.seq_len;
  shape.hidden = c.hidden;
  shape.intermediate = c.intermediate;
  shape.q_heads = c.q_heads;
  shape.kv_heads = c.kv_heads;
  shape.head_dim = c.head_dim;
  shape.rms_norm_eps = 1e-6;
  shape.rope = model::default_rope_frequencies(static_cast<int>(c.head_dim), 10000.0);
  shape.qk_norm = c.qwen3;
  return shape;
}

void check_layer(const ref::DecoderLayerCase& c) {
  INFO((c.qwen3 ? "qwen3" : "llama") << (c.nf4 ? " nf4" : " dense") << " batch " << c.batch << " seq " << c.seq_len
                                     << " hidden " << c.hidden << " heads " << c.q_heads << "/" << c.kv_heads
                                     << " head_dim " << c.head_dim << " dropout " << c.dropout);
  const ref::DecoderLayer want = ref::decoder_layer(c);
  DeviceLayer dev(c, want);
  const model::cuda::DecoderLayerShape shape = shape_of(c);
  vidlora::cuda::GemmRunner gemm;
  model::cuda::DecoderLayerExecutor exec(gemm, dev.weights, shape, c.key_mask, /*training=*/true);
  const long tokens = c.batch * c.seq_len;
  model::cuda::DeviceTensor x(tokens, c.hidden), d_out(tokens, c.hidden);
  x.buffer.upload(want.x);
  d_out.buffer.upload(want.d_out);
  model::cuda::DecoderLayerExecutor::saved_type saved;
  const model::cuda::DeviceTensor y = model::decoder_layer_forward_steps(exec, x, saved);
  const model::cuda::DeviceTensor dx = model::decoder_layer_backward_steps(exec, saved, d_out);
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
  // each forward step
  CHECK(cuda_test::normwise_error(download(saved.q), want.q_rot) < 1e-5);
  CHECK(cuda_test::normwise_error(download(saved.k), want.k_rot) < 1e-5);
  CHECK(cuda_test::normwise_error(download(saved.v), want.v) < 1e-5);
  CHECK(cuda_test::normwise_error(download(saved.h_mid), want.h_mid) < 1e-5);
  CHECK(cuda_test::normwise_error(download(saved.gate), want.gate) < 1e-5);
  CHECK(cuda_test::normwise_error(download(saved.up), want.up) < 1e-5);
  // the block
  CHECK(cuda_test::normwise_error(download(y), want.y) < 1e-5);
  CHECK(cuda_test::normwise_error(download(dx), want.dx) < 1e-4);
  for (int m = 0; m < 7; ++m) {
    if (want.a[m].empty()) continue;
    INFO("slot " << m);
    CHECK(cuda_test::normwise_error(dev.grad_a[m].download(), want.grad_a[m]) < 1e-4);
    CHECK(cuda_test::normwise_error(dev.grad_b[m].download(), want.grad_b[m]) < 1e-4);
  }
}

std::vector<int> right_padded(long batch, long seq_len, long pad_last) {
  std::vector<int> mask(static_cast<std::size_t>(batch * seq_len), 1);
  for (long t = seq_len - pad_last; t < seq_len; ++t) mask[static_cast<std::size_t>((batch - 1) * seq_len + t)] = 0;
  return mask;
}

}  // namespace

TEST_CASE("cuda decoder block matches the CPU executor: llama, dense base, LoRA on all seven slots", "[layer]") {
  ref::DecoderLayerCase c;
  c.batch = 2;
  c.seq_len = 7;
  c.hidden = 64;
  c.intermediate = 96;
  c.q_heads = 4;
  c.kv_heads = 2;
  c.head_dim = 16;
  c.lora_slots = {0, 1, 2, 3, 4, 5, 6};
  c.key_mask = right_padded(c.batch, c.seq_len, 3);
  c.seed = 11;
  check_layer(c);
}

TEST_CASE("cuda decoder block matches the CPU executor: qwen3 head norms, NF4 base, LoRA dropout", "[layer]") {
  ref::DecoderLayerCase c;
  c.batch = 2;
  c.seq_len = 9;
  c.hidden = 64;
  c.intermediate = 128;
  c.q_heads = 4;
  c.kv_heads = 1;
  c.head_dim = 32;
  c.qwen3 = true;
  c.nf4 = true;
  c.dropout = 0.1;
  c.lora_slots = {0, 2, 4, 5};
  c.key_mask = right_padded(c.batch, c.seq_len, 4);
  c.seed = 12;
  check_layer(c);
}

TEST_CASE("cuda decoder block matches the CPU executor: head_dim 128, one sequence, no mask", "[layer]") {
  ref::DecoderLayerCase c;
  c.batch = 1;
  c.seq_len = 33;
  c.hidden = 256;
  c.intermediate = 320;
  c.q_heads = 2;
  c.kv_heads = 1;
  c.head_dim = 128;
  c.lora_slots = {0, 1, 2, 3};
  c.seed = 13;
  check_layer(c);
}

namespace {
std::vector<std::uint16_t> rounded_bits(const std::vector<float>& v, vidlora::cuda::DType t) {
  std::vector<std::uint16_t> b(v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    b[i] = t == vidlora::cuda::DType::BF16 ? io::float_to_bf16_bits(v[i]) : io::float_to_fp16_bits(v[i]);
  return b;
}
}  // namespace

TEST_CASE("cuda decoder block with 16-bit operands: norms, RoPE and SwiGLU round for their consumers, same bits",
          "[layer]") {
  // DecoderLayerExecutor::set_producer_rounding: the forward's block norms write their output's 16-bit rounding for
  // the q/k/v and gate/up GEMMs, SwiGLU its for down_proj, RoPE q's and k's for the register-tile attention (head dim
  // 64: sm_80+) and that attention its output's for o_proj, each the bits of round_to_16bit of the fp32 output; the consumer gives them back (none is kept with
  // the saved activations), the backward's recomputations write none. A whole forward + backward gives the bits of
  // the run where every consumer rounds for itself.
  using vidlora::cuda::DType;
  ref::DecoderLayerCase c;
  c.batch = 2;
  c.seq_len = 20;
  c.hidden = 128;
  c.intermediate = 160;
  c.q_heads = 2;
  c.kv_heads = 1;
  c.head_dim = 64;
  c.nf4 = true;
  c.dropout = 0.1;
  c.lora_slots = {0, 2, 3, 4, 6};  // k, up: frozen slots
  c.key_mask = right_padded(c.batch, c.seq_len, 5);
  c.seed = 14;
  const ref::DecoderLayer want = ref::decoder_layer(c);
  const model::cuda::DecoderLayerShape shape = shape_of(c);
  const long tokens = c.batch * c.seq_len;
  using Norm = model::LayerNorm;
  using Slot = model::LayerLinear;
  for (const DType base : {DType::BF16, DType::F16}) {
    INFO(vidlora::cuda::dtype_name(base) << " operands");
    vidlora::cuda::GemmRunner gemm;
    struct Run {
      std::vector<float> y, dx;
      std::vector<std::vector<float>> grads;
    };
    auto whole_block = [&](bool producer_rounding) {
      DeviceLayer dev(c, want);
      model::cuda::DecoderLayerExecutor exec(gemm, dev.weights, shape, c.key_mask, /*training=*/true);
      exec.set_base_operands(base);
      exec.set_producer_rounding(producer_rounding);
      model::cuda::DeviceTensor x(tokens, c.hidden), d_out(tokens, c.hidden);
      x.buffer.upload(want.x);
      d_out.buffer.upload(want.d_out);
      model::cuda::DecoderLayerExecutor::saved_type saved;
      const model::cuda::DeviceTensor y = model::decoder_layer_forward_steps(exec, x, saved);
      CHECK(saved.q.rounded16.size() == 0);  // not kept for the backward
      CHECK(saved.k.rounded16.size() == 0);
      CHECK(saved.attn.rounded16.size() == 0);  // the attention's rounding, given back by o_proj
      const model::cuda::DeviceTensor dx = model::decoder_layer_backward_steps(exec, saved, d_out);
      VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
      Run r{download(y), download(dx), {}};
      for (int m : c.lora_slots) {
        r.grads.push_back(dev.grad_a[m].download());
        r.grads.push_back(dev.grad_b[m].download());
      }
      return r;
    };
    const Run fused = whole_block(true), plain = whole_block(false);
    CHECK(cuda_test::bit_mismatches(fused.y, plain.y) == 0);
    CHECK(cuda_test::bit_mismatches(fused.dx, plain.dx) == 0);
    REQUIRE(fused.grads.size() == plain.grads.size());
    for (std::size_t i = 0; i < fused.grads.size(); ++i)
      CHECK(cuda_test::bit_mismatches(fused.grads[i], plain.grads[i]) == 0);
    CHECK(cuda_test::normwise_error(fused.y, want.y) < 3e-2);  // and it is the block (16-bit operands' rounding)

    // Step by step: who writes the rounding, what it holds, who reads it, who gives it back. "Reads it": with the
    // copy's bits zeroed the consumer's result changes (it did not round the fp32 values for itself).
    const auto differs = [](const model::cuda::DeviceTensor& a, const model::cuda::DeviceTensor& b) {
      return cuda_test::bit_mismatches(download(a), download(b)) > 0;
    };
    const auto zeroed_copy = [](const model::cuda::DeviceTensor& t) {
      return DeviceBuffer<std::uint16_t>(std::vector<std::uint16_t>(static_cast<std::size_t>(t.size()), 0));
    };
    DeviceLayer dev(c, want);
    model::cuda::DecoderLayerExecutor exec(gemm, dev.weights, shape, c.key_mask, /*training=*/true);
    exec.set_base_operands(base);
    model::cuda::DeviceTensor h(tokens, c.hidden), inv;
    h.buffer.upload(want.x);
    const model::cuda::DeviceTensor x1 = exec.rms_norm(h, Norm::input, &inv);
    VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
    REQUIRE(x1.rounded16.size() == static_cast<std::size_t>(x1.size()));
    const std::vector<std::uint16_t> x1_bits = x1.rounded16.download();
    CHECK(x1_bits == rounded_bits(download(x1), base));
    CHECK(exec.rms_norm(h, Norm::input, nullptr).rounded16.size() == 0);  // the backward's recomputation
    model::cuda::DecoderLayerExecutor::saved_type s;
    x1.rounded16 = zeroed_copy(x1);
    const model::cuda::DeviceTensor q_from_zeros = exec.linear(Slot::q, x1);
    x1.rounded16.upload(x1_bits);
    s.q = exec.linear(Slot::q, x1);
    CHECK(differs(s.q, q_from_zeros));  // the q slot's frozen GEMM reads the norm's copy
    s.k = exec.linear(Slot::k, x1);
    CHECK(x1.rounded16.size() != 0);  // v still reads it
    s.v = exec.linear(Slot::v, x1);
    CHECK(x1.rounded16.size() == 0);  // given back after the group's last slot
    exec.rope(s.q, false);
    exec.rope(s.k, false);
    VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
    model::cuda::AttentionParams attention_shape;
    attention_shape.head_dim = c.head_dim;
    const bool register_tiles = model::cuda::flash_mma_takes(
        attention_shape, base == DType::BF16 ? model::cuda::FlashOperands::BF16 : model::cuda::FlashOperands::F16);
    CHECK((s.q.rounded16.size() != 0) == register_tiles);  // only for the attention that reads 16-bit q and k
    CHECK((s.k.rounded16.size() != 0) == register_tiles);
    if (register_tiles) {
      const std::vector<std::uint16_t> q_bits = s.q.rounded16.download(), k_bits = s.k.rounded16.download();
      CHECK(q_bits == rounded_bits(download(s.q), base));
      CHECK(k_bits == rounded_bits(download(s.k), base));
      const model::cuda::DeviceTensor attn = exec.attention(s);
      CHECK(s.q.rounded16.size() == 0);  // given back by the attention: not kept with the saved q and k
      CHECK(s.k.rounded16.size() == 0);
      s.q.rounded16 = zeroed_copy(s.q);
      s.k.rounded16 = DeviceBuffer<std::uint16_t>(k_bits);
      const model::cuda::DeviceTensor attn_from_zeros = exec.attention(s);
      CHECK(differs(attn, attn_from_zeros));  // the attention reads RoPE's copies
      // ... and writes its output's for o_proj, which reads it
      VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
      REQUIRE(attn.rounded16.size() == static_cast<std::size_t>(attn.size()));
      CHECK(attn.rounded16.download() == rounded_bits(download(attn), base));
      attn.rounded16 = zeroed_copy(attn);
      const model::cuda::DeviceTensor o_from_zeros = exec.linear(Slot::o, attn);
      CHECK(attn.rounded16.size() == 0);  // given back after its slot
      CHECK(differs(exec.linear(Slot::o, attn), o_from_zeros));
    }
    exec.rope(s.q, true);
    CHECK(s.q.rounded16.size() == 0);  // the values changed
    const model::cuda::DeviceTensor x2 = exec.rms_norm(h, Norm::post_attention, &inv);
    const model::cuda::DeviceTensor gate = exec.linear(Slot::gate, x2);
    const model::cuda::DeviceTensor up = exec.linear(Slot::up, x2);
    CHECK(x2.rounded16.size() == 0);
    const model::cuda::DeviceTensor m = exec.swiglu(gate, up);
    VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
    REQUIRE(m.rounded16.size() == static_cast<std::size_t>(m.size()));
    CHECK(m.rounded16.download() == rounded_bits(download(m), base));
    CHECK(exec.swiglu(gate, up).rounded16.size() == 0);  // not after the up slot: the backward's recomputation
    m.rounded16 = zeroed_copy(m);
    const model::cuda::DeviceTensor down_from_zeros = exec.linear(Slot::down, m);
    CHECK(m.rounded16.size() == 0);
    CHECK(differs(exec.linear(Slot::down, m), down_from_zeros));  // down_proj read SwiGLU's copy
    {  // a copy made for one 16-bit type is not read as the other
      const model::cuda::DeviceTensor x3 = exec.rms_norm(h, Norm::input, &inv);
      exec.set_base_operands(base == DType::BF16 ? DType::F16 : DType::BF16);
      CHECK_THROWS_WITH(exec.linear(Slot::q, x3), Catch::Contains("a 16-bit copy of"));
    }
    exec.set_base_operands(DType::F32);  // nothing to round for
    CHECK(exec.rms_norm(h, Norm::input, &inv).rounded16.size() == 0);
  }
}
