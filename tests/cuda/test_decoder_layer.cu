// One decoder block run by the CUDA executor (model/cuda/decoder_layer.cuh) and by the CPU executor that
// model::Decoder runs (reference/decoder_layer.cpp), from the same weights and inputs, through the same step list
// (model/decoder_layer_steps.hpp): each step's output the forward keeps (q, k after RoPE, v, the attention
// residual, gate, up), the block's output, its input gradient and every LoRA gradient (llama.cpp's
// test-backend-ops compares its backends the same way). fp32: 1e-5 normwise for outputs, 1e-4 for gradients.
#include <cstdint>

#include <catch2/catch.hpp>

#include <vidlora/model/cuda/decoder_layer.cuh>

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

void check_layer(const ref::DecoderLayerCase& c) {
  INFO((c.qwen3 ? "qwen3" : "llama") << (c.nf4 ? " nf4" : " dense") << " batch " << c.batch << " seq " << c.seq_len
                                     << " hidden " << c.hidden << " heads " << c.q_heads << "/" << c.kv_heads
                                     << " head_dim " << c.head_dim << " dropout " << c.dropout);
  const ref::DecoderLayer want = ref::decoder_layer(c);
  DeviceLayer dev(c, want);
  model::cuda::DecoderLayerShape shape;
  shape.batch = c.batch;
  shape.seq_len = c.seq_len;
  shape.hidden = c.hidden;
  shape.intermediate = c.intermediate;
  shape.q_heads = c.q_heads;
  shape.kv_heads = c.kv_heads;
  shape.head_dim = c.head_dim;
  shape.rms_norm_eps = 1e-6;
  shape.rope_theta = 10000.0;
  shape.qk_norm = c.qwen3;
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
