// The CLIP vision tower on the device (model/cuda/clip_vision.cuh) against model::ClipVision on the CPU from the same
// weights: the features of several frames, in passes of fewer frames than the clip has, for the tiled attention
// (head_dim 16) and the row kernel (head_dim 8), LLaVA's feature layer (-2, CLS dropped) and two feature layers
// concatenated with the CLS kept; fp32 to 2e-5 normwise, TF32 to 5e-3. (Apart from test_trainer_step.cu, whose tags
// the emulation's racecheck build does not run, so that build compiles this file and not that one.)
#include <catch2/catch.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/rng.hpp>
#include <vidlora/model/clip_vision.hpp>
#include <vidlora/model/cuda/clip_vision.cuh>
#include <vidlora/model/tensor_source.hpp>
#include <vidlora/train/random_vision_weights.hpp>

#include "support/cuda_test.cuh"

using namespace vidlora;

namespace clip_test {

model::ClipVisionConfig tiny_clip(int hidden, int heads) {
  model::ClipVisionConfig c;
  c.hidden_size = hidden;
  c.intermediate_size = 2 * hidden;
  c.num_hidden_layers = 3;
  c.num_attention_heads = heads;
  c.image_size = 32;
  c.patch_size = 8;  // 16 patches + CLS per frame
  return c;
}

std::vector<float> pixels_of(const model::ClipVisionConfig& c, int frames) {
  std::vector<float> p(static_cast<std::size_t>(frames) * c.num_channels * c.image_size * c.image_size);
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = 2.0f * random_uniform(4, 9, i) - 1.0f;
  return p;
}

std::vector<float> flat(const Matrix& m) { return std::vector<float>(m.data(), m.data() + m.size()); }

// train::random_clip_vision_weights with every bias drawn (uniform, std 0.2) and every LayerNorm weight 1 + that
// draw: its zero biases and unit norms would hide a bias dropped from a GEMM's epilogue, given to the wrong linear or
// in the wrong type, or two norms swapped.
model::TensorTable weights_with_affine(const model::ClipVisionConfig& c, std::uint64_t seed) {
  model::TensorTable t = train::random_clip_vision_weights(c, seed);
  const model::TensorTable drawn = t;  // (t changes inside the loop)
  std::uint64_t stream = 50;
  for (const auto& [name, entry] : drawn.tensors()) {
    const bool bias = name.ends_with(".bias");
    const bool norm_weight = name.ends_with(".weight") && (name.find("layer_norm") != std::string::npos ||
                                                           name.find("layrnorm") != std::string::npos);
    if (!bias && !norm_weight) continue;
    std::vector<float> v = entry.data;
    for (std::size_t i = 0; i < v.size(); ++i)
      v[i] = (norm_weight ? 1.0f : 0.0f) + 0.2f * 1.7320508f * (2.0f * random_uniform(seed, stream, i) - 1.0f);
    ++stream;
    t.insert(name, entry.shape, std::move(v));
  }
  return t;
}

// The device tower of `c` (weights drawn with biases and norms, seed) against the CPU tower over `frames` frames: fp32
// to 2e-5, and with bf16 / fp16 operands (`frames_per_pass` frames a pass) within those formats' reach, not the fp32
// bits.
void check_tower_against_cpu(const model::ClipVisionConfig& c, std::uint64_t seed, int frames, int frames_per_pass,
                             const char* label) {
  const model::ClipVision cpu(c, weights_with_affine(c, seed));
  const std::vector<float> pixels = pixels_of(c, frames);
  const Matrix want = cpu.features(pixels, frames);
  INFO(label);
  CHECK(cuda_test::normwise_error(flat(model::cuda::ClipVisionCuda(cpu).features(pixels, frames)), flat(want)) < 2e-5);
  for (const vidlora::cuda::DType ops : {vidlora::cuda::DType::BF16, vidlora::cuda::DType::F16}) {
    INFO(vidlora::cuda::dtype_name(ops) << " operands");
    const model::cuda::ClipVisionCuda narrow(cpu, vidlora::cuda::Compute::F32, frames_per_pass, nullptr, nullptr, ops);
    const double err = cuda_test::normwise_error(flat(narrow.features(pixels, frames)), flat(want));
    CHECK(err < (ops == vidlora::cuda::DType::BF16 ? 5e-2 : 1e-2));
    CHECK(err > 0.0);
  }
}

}  // namespace clip_test

TEST_CASE("cuda CLIP tower: the CPU tower's features, frames in passes, both attention kernels", "[model]") {
  struct Case {
    int hidden, heads;
    model::ClipVisionOptions options;
  };
  model::ClipVisionOptions two_layers;
  two_layers.feature_layers = {-1, 0};
  two_layers.drop_cls = false;
  const Case cases[] = {{64, 4, {}}, {32, 4, {}}, {64, 4, two_layers}};
  for (const Case& k : cases) {
    INFO("hidden " << k.hidden << " heads " << k.heads << " feature layers " << k.options.feature_layers.size()
                   << " drop_cls " << k.options.drop_cls);
    const model::ClipVisionConfig c = clip_test::tiny_clip(k.hidden, k.heads);
    const model::ClipVision cpu(c, clip_test::weights_with_affine(c, 7), k.options);
    const int frames = 5;
    const std::vector<float> pixels = clip_test::pixels_of(c, frames);
    const Matrix want = cpu.features(pixels, frames);
    const model::cuda::ClipVisionCuda gpu(cpu, vidlora::cuda::Compute::F32, /*frames_per_pass=*/2);
    CHECK(gpu.tokens_per_frame() == cpu.tokens_per_frame());
    const Matrix got = gpu.features(pixels, frames);
    REQUIRE(got.rows() == want.rows());
    REQUIRE(got.cols() == want.cols());
    CHECK(cuda_test::normwise_error(clip_test::flat(got), clip_test::flat(want)) < 2e-5);
    // Twice: the same bits.
    CHECK(gpu.features(pixels, frames) == got);
    const model::cuda::ClipVisionCuda tf32(cpu, vidlora::cuda::Compute::TF32, 16);
    CHECK(cuda_test::normwise_error(clip_test::flat(tf32.features(pixels, frames)), clip_test::flat(want)) < 5e-3);
    // 16-bit operands (what the GPU presets run): weights and activations rounded, fp32 accumulation; within the
    // formats' reach of the CPU (bf16 8 bits, fp16 11), not the fp32 bits, the same bits twice.
    for (const vidlora::cuda::DType ops : {vidlora::cuda::DType::BF16, vidlora::cuda::DType::F16}) {
      INFO(vidlora::cuda::dtype_name(ops) << " operands");
      const model::cuda::ClipVisionCuda narrow(cpu, vidlora::cuda::Compute::F32, 3, nullptr, nullptr, ops);
      CHECK(narrow.operands() == ops);
      const Matrix h = narrow.features(pixels, frames);
      const double err = cuda_test::normwise_error(clip_test::flat(h), clip_test::flat(want));
      CHECK(err < (ops == vidlora::cuda::DType::BF16 ? 5e-2 : 1e-2));
      CHECK(err > 0.0);
      CHECK(narrow.features(pixels, frames) == h);
    }
  }
  {
    // ViT-L/14's patch: K = 3·14·14 = 588, whose 16-bit rows are 8-byte aligned only (padded to 592 on the device).
    model::ClipVisionConfig c14 = clip_test::tiny_clip(64, 4);
    c14.patch_size = 14;
    c14.image_size = 28;  // 4 patches + CLS per frame
    clip_test::check_tower_against_cpu(c14, 7, 3, 2, "patch 14");
  }
  {
    // ViT-L/14's width and heads (1024 = 16 × 64, intermediate 4096): head dim 64 on the tiled kernel's 16-bit tiles,
    // K = 4096 in fc2, 65 tokens a frame (a partial last tile); two of its three layers run (feature layer -2).
    model::ClipVisionConfig wide = clip_test::tiny_clip(1024, 16);
    wide.intermediate_size = 4096;
    wide.patch_size = 14;
    wide.image_size = 112;  // 64 patches + CLS per frame
    clip_test::check_tower_against_cpu(wide, 11, 2, 1, "ViT-L width");
  }
  const model::ClipVisionConfig c = clip_test::tiny_clip(64, 4);
  const model::ClipVision cpu(c, train::random_clip_vision_weights(c, 7));
  const model::cuda::ClipVisionCuda gpu(cpu);
  cudaStream_t non_blocking = nullptr;  // a stream the legacy stream's uploads do not order: refused
  REQUIRE(cudaStreamCreateWithFlags(&non_blocking, cudaStreamNonBlocking) == cudaSuccess);
  CHECK_THROWS_AS(model::cuda::ClipVisionCuda(cpu, vidlora::cuda::Compute::F32, 2, non_blocking), Error);
  cudaStreamDestroy(non_blocking);
  const std::vector<float> pixels = clip_test::pixels_of(c, 2);
  CHECK_THROWS_AS(gpu.features(std::span<const float>(pixels).first(pixels.size() - 1), 2), Error);
}
