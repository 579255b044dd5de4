#pragma once
// ClipVisionCuda: model::ClipVision's features on the device, over a batch of frames at a time. The frames' patches
// are laid out on the host (ClipVision::patches_of), then everything runs on the device: the patch embedding (a
// cuBLASLt GEMM), [CLS; patches] + position embeddings, pre_layrnorm, and every encoder layer up to the deepest
// feature layer by clip_layer_forward_steps (model/clip_layer_steps.hpp, the list the CPU tower runs) with cuBLASLt
// linears (bias in the epilogue), LayerNorm and quick_gelu kernels (model/cuda/elementwise.cuh) and bidirectional
// attention per frame (model/cuda/flash_attention.cuh's tiled kernel for head dims that are multiples of 16 —
// ViT-L/14's 64 — else the row kernel). The feature layers' hidden states come back to the host, the CLS token
// dropped as the options say: the CPU tower's output, [frames · tokens_per_frame, feature_width]. Weights are fp32
// copies of the host tower's (ViT-L/14-336: 1.2 GB), or, with 16-bit operands (bf16 / fp16: what a GPU preset runs),
// bf16 / fp16 copies (0.6 GB): every GEMM then takes its activations rounded to 16 bits, accumulates and writes fp32
// (bias fp32), and the attention's tile products take the same 16-bit operands; LayerNorm, quick_gelu and the
// residuals stay fp32. The host tower must outlive this one.
// It is what a GPU preset's train_captioner encodes frames with: the features a clip's epochs reuse (FeatureCache)
// are computed once, on the GPU, instead of by the CPU cores (ViT-L/14-336: about 0.35 TFLOP a frame, 2 × 0.3 B weights × 577 tokens).
// Status: compiled for sm_75..90; checked against model::ClipVision by tests/cuda/test_trainer_step.cu, which has not
// yet run on a GPU (docs/cuda.md).

#include <vidlora/core/portability.hpp>

#if !VIDLORA_KERNELS
#error "vidlora/model/cuda/clip_vision.cuh runs kernels: compile this translation unit with nvcc (LANGUAGE CUDA)"
#endif

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <vidlora/core/cuda/cuda_upstream.cuh>
#include <vidlora/core/cuda/gemm.cuh>
#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/memory.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/matrix.hpp>
#include <vidlora/io/cuda/round_16bit.cuh>
#include <vidlora/io/half.hpp>
#include <vidlora/model/clip_layer_steps.hpp>
#include <vidlora/model/clip_vision.hpp>
#include <vidlora/model/cuda/attention.cuh>
#include <vidlora/model/cuda/decoder_layer.cuh>
#include <vidlora/model/cuda/elementwise.cuh>
#include <vidlora/model/cuda/flash_attention.cuh>

namespace vidlora::model::cuda {

namespace detail {
// x[f·T + t] = (t == 0 ? cls : patches[f·(T − 1) + t − 1]) + pos[t], as the CPU tower builds it (one float sum).
template <class = void>
__global__ void clip_embed_kernel(float* x, const float* patches, const float* cls, const float* pos,
                                  std::int64_t frames, std::int64_t tokens, std::int64_t d) {
  const std::int64_t n = frames * tokens * d;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t j = i % d, row = i / d, t = row % tokens, f = row / tokens;
    const float v = t == 0 ? cls[j] : patches[(f * (tokens - 1) + t - 1) * d + j];
    x[i] = v + pos[t * d + j];
  }
}
}  // namespace detail

class ClipVisionCuda {
 public:
  // frames_per_pass: how many frames run through the tower at once (activations scale with it: for ViT-L/14-336 a
  // layer's tensors are about 12k fp32 values a token, some 30 MB a frame); compute: the GEMMs' (fp32, or TF32 on sm_80+). allocator null: cudaMalloc.
  // operands: the GEMMs' and the attention's operands, F32 (at `compute`), or BF16 / F16 (16-bit weights and rounded
  // activations, fp32 accumulation; bf16 needs sm_80+ for its tensor cores, fp16 runs on every supported card).
  explicit ClipVisionCuda(const ClipVision& host, vidlora::cuda::Compute compute = vidlora::cuda::Compute::F32,
                          std::int64_t frames_per_pass = 16, cudaStream_t stream = nullptr,
                          vidlora::cuda::CudaCachingAllocator* allocator = nullptr,
                          vidlora::cuda::DType operands = vidlora::cuda::DType::F32)
      : host_(host),
        compute_(compute),
        frames_per_pass_(frames_per_pass),
        stream_(stream),
        allocator_(allocator),
        operands_(operands) {
    vidlora::cuda::check_arg(frames_per_pass_ > 0, "cuda::ClipVisionCuda",
                             "frames_per_pass must be positive (got " + std::to_string(frames_per_pass_) + ")");
    // Weights and patches go up with cudaMemcpy on the legacy stream, which a non-blocking stream's kernels would not
    // wait for.
    vidlora::cuda::require_legacy_ordered_stream(stream, "cuda::ClipVisionCuda");
    // The patch embedding's K = channels·patch² (588 for ViT-L/14) is zero-padded to a multiple of 8 with 16-bit
    // operands, so that the rows of its 16-bit operands start on 16-byte boundaries (tensor-core GEMMs' alignment;
    // 588 halves are 1,176 bytes, 8-byte aligned only). Zero columns add exact zeros: the same products.
    const std::int64_t patch_in = host.patch_weight().cols();
    patch_cols_ = operands_ == vidlora::cuda::DType::F32 ? patch_in : (patch_in + 7) / 8 * 8;
    if (patch_cols_ == patch_in) {
      patch_w_ = weight(host.patch_weight(), "vision.embeddings.patch_embedding.weight");
    } else {
      Matrix padded = Matrix::Zero(host.patch_weight().rows(), patch_cols_);
      padded.leftCols(patch_in) = host.patch_weight();
      patch_w_ = weight(padded, "vision.embeddings.patch_embedding.weight");
    }
    cls_ = up(host.class_embedding(), "vision.embeddings.class_embedding");
    pos_ = up(host.position_embedding(), "vision.embeddings.position_embedding.weight");
    pre_w_ = up(host.pre_norm_weight(), "vision.pre_layrnorm.weight");
    pre_b_ = up(host.pre_norm_bias(), "vision.pre_layrnorm.bias");
    static constexpr const char* kNames[6] = {"self_attn.q_proj",   "self_attn.k_proj", "self_attn.v_proj",
                                              "self_attn.out_proj", "mlp.fc1",          "mlp.fc2"};
    for (std::size_t l = 0; l < host.layers().size(); ++l) {
      const ClipLayerWeights& src = host.layers()[l];
      const std::string p = "vision.encoder.layers." + std::to_string(l) + ".";
      Layer& L = layers_.emplace_back();
      L.norm_w[0] = up(src.ln1_w, p + "layer_norm1.weight");
      L.norm_b[0] = up(src.ln1_b, p + "layer_norm1.bias");
      L.norm_w[1] = up(src.ln2_w, p + "layer_norm2.weight");
      L.norm_b[1] = up(src.ln2_b, p + "layer_norm2.bias");
      for (int m = 0; m < 6; ++m) {
        const auto which = static_cast<ClipLinear>(m);
        L.w[m] = weight(src.weight(which), p + kNames[m] + ".weight");
        L.b[m] = up(src.bias(which), p + kNames[m] + ".bias");
        L.out[m] = src.weight(which).rows();
      }
    }
  }

  const ClipVisionConfig& config() const { return host_.config(); }
  vidlora::cuda::DType operands() const { return operands_; }
  Eigen::Index tokens_per_frame() const { return host_.tokens_per_frame(); }
  Eigen::Index feature_width() const { return host_.feature_width(); }

  // As ClipVision::features: pixels frames × [channels, image_size, image_size] -> [frames · tokens_per_frame(),
  // feature_width()] (host).
  Matrix features(std::span<const float> pixels, Eigen::Index frames) const {
    host_.check_pixels(pixels, frames, "ClipVisionCuda::features");
    const ClipVisionConfig& c = host_.config();
    const std::int64_t per_frame = static_cast<std::int64_t>(c.num_channels) * c.image_size * c.image_size;
    const std::int64_t np = c.num_patches(), tokens = np + 1, d = c.hidden_size;
    const std::int64_t patch_in = static_cast<std::int64_t>(c.num_channels) * c.patch_size * c.patch_size;
    const std::int64_t tpf = host_.tokens_per_frame();
    const std::vector<int>& states = host_.feature_states();
    const int run_layers = *std::max_element(states.begin(), states.end());
    Matrix out(frames * tpf, host_.feature_width());
    for (std::int64_t f0 = 0; f0 < frames; f0 += frames_per_pass_) {
      const std::int64_t nf = std::min<std::int64_t>(frames_per_pass_, frames - f0);
      Matrix patches(nf * np, patch_cols_);
      if (patch_cols_ != patch_in) patches.rightCols(patch_cols_ - patch_in).setZero();
      for (std::int64_t f = 0; f < nf; ++f)
        host_.patches_of(pixels.data() + (f0 + f) * per_frame, patches.middleRows(f * np, np).leftCols(patch_in));
      DeviceTensor pin = tensor(nf * np, patch_cols_, "vision.patches");
      sync();  // the block may have been freed by queued work on a non-legacy stream
      pin.buffer.upload(std::span<const float>(patches.data(), static_cast<std::size_t>(patches.size())));
      DeviceTensor pe = tensor(nf * np, d, "vision.patch_embeds");
      linear_into(pe, pin, patch_w_, nullptr, "vision.patch_embedding");
      DeviceTensor x = tensor(nf * tokens, d, "vision.embeddings");
      VIDLORA_LAUNCH(vidlora::cuda::grid_size(x.size(), 256), 256, 0, stream_, detail::clip_embed_kernel<>)
      (x.data(), pe.data(), cls_.data(), pos_.data(), nf, tokens, d);
      VIDLORA_CUDA_CHECK_LAUNCH("clip_embed_kernel");
      x = norm(x, pre_w_.data(), pre_b_.data(), "vision.pre_layrnorm");
      take(0, x, f0, nf, out);
      for (int l = 0; l < run_layers; ++l) {
        Executor exec{*this, layers_[static_cast<std::size_t>(l)], nf, tokens,
                      "vision.encoder.layers." + std::to_string(l) + "."};
        x = clip_layer_forward_steps(exec, x);
        take(l + 1, x, f0, nf, out);
      }
    }
    return out;
  }

 private:
  // A GEMM's weight [out, in] as the tower's operands take it: fp32, or 16-bit bits.
  struct Weight {
    vidlora::cuda::DeviceBuffer<float> f32;
    vidlora::cuda::DeviceBuffer<std::uint16_t> h16;
    const void* data() const { return f32.size() ? static_cast<const void*>(f32.data()) : h16.data(); }
  };
  struct Layer {
    vidlora::cuda::DeviceBuffer<float> norm_w[2], norm_b[2], b[6];
    Weight w[6];
    std::int64_t out[6] = {};
  };

  // clip_layer_forward_steps' executor over nf frames of `tokens` rows each.
  struct Executor {
    using tensor_type = DeviceTensor;
    const ClipVisionCuda& m;
    const Layer& L;
    std::int64_t frames, tokens;
    std::string prefix;

    DeviceTensor layer_norm(const DeviceTensor& x, ClipNorm n) const {
      const auto i = static_cast<std::size_t>(n);
      return m.norm(x, L.norm_w[i].data(), L.norm_b[i].data(), prefix + (n == ClipNorm::ln1 ? "ln1" : "ln2"));
    }
    DeviceTensor linear(ClipLinear which, const DeviceTensor& x) const {
      const auto i = static_cast<std::size_t>(which);
      DeviceTensor y = m.tensor(x.rows, L.out[i], prefix + "linear." + std::to_string(i));
      m.linear_into(y, x, L.w[i], L.b[i].data(), prefix + "linear." + std::to_string(i));
      return y;
    }
    DeviceTensor attention(const DeviceTensor& q, const DeviceTensor& k, const DeviceTensor& v) const {
      const ClipVisionConfig& c = m.host_.config();
      const std::int64_t d = q.cols, heads = c.num_attention_heads;
      DeviceTensor out = m.tensor(q.rows, d, prefix + "self_attn.attention");
      DeviceTensor lse = m.tensor(frames, heads * tokens, prefix + "self_attn.lse");
      for (std::int64_t f = 0; f < frames; ++f) {
        AttentionParams p;
        p.q = q.data() + f * tokens * d;
        p.k = k.data() + f * tokens * d;
        p.v = v.data() + f * tokens * d;
        p.out = out.data() + f * tokens * d;
        p.lse = lse.data() + f * heads * tokens;
        p.tq = p.tk = tokens;
        p.q_heads = p.kv_heads = heads;
        p.head_dim = c.head_dim();
        p.q_offset = tokens;  // past the last key: every query sees every key of its frame (bidirectional)
        const FlashAttentionOptions o{m.compute_ == vidlora::cuda::Compute::TF32, 0, m.flash_operands()};
        if (flash_attention_fits(p, o))
          flash_attention_forward(p, o, m.stream_);
        else
          model::cuda::attention_forward(p, m.stream_);
      }
      return out;
    }
    void quick_gelu(DeviceTensor& x) const { model::cuda::quick_gelu(x.data(), x.size(), m.stream_); }
    DeviceTensor add(const DeviceTensor& a, const DeviceTensor& b) const {
      DeviceTensor y = m.tensor(a.rows, a.cols, prefix + "residual");
      model::cuda::add(y.data(), a.data(), b.data(), a.size(), m.stream_);
      return y;
    }
  };

  // A row-major matrix or a vector, as stored (contiguous).
  template <class M>
  vidlora::cuda::DeviceBuffer<float> up(const M& m, const std::string& tag) const {
    vidlora::cuda::DeviceBuffer<float> b(allocator_, static_cast<std::size_t>(m.size()), tag);
    b.upload(std::span<const float>(m.data(), static_cast<std::size_t>(m.size())));
    return b;
  }
  DeviceTensor tensor(std::int64_t rows, std::int64_t cols, const std::string& tag) const {
    return DeviceTensor(allocator_, rows, cols, tag);
  }
  // fp32 weights, or their 16-bit bits (rounded to nearest even on the host, as io::float_to_bf16_bits /
  // float_to_fp16_bits), by the tower's operands.
  template <class M>
  Weight weight(const M& m, const std::string& tag) const {
    Weight w;
    if (operands_ == vidlora::cuda::DType::F32) {
      w.f32 = up(m, tag);
      return w;
    }
    std::vector<std::uint16_t> bits(static_cast<std::size_t>(m.size()));
    const bool bf = operands_ == vidlora::cuda::DType::BF16;
    for (std::size_t i = 0; i < bits.size(); ++i)
      bits[i] = bf ? io::float_to_bf16_bits(m.data()[i]) : io::float_to_fp16_bits(m.data()[i]);
    w.h16 = vidlora::cuda::DeviceBuffer<std::uint16_t>(allocator_, bits, tag);
    return w;
  }
  FlashOperands flash_operands() const {
    return operands_ == vidlora::cuda::DType::BF16  ? FlashOperands::BF16
           : operands_ == vidlora::cuda::DType::F16 ? FlashOperands::F16
                                                    : FlashOperands::F32;
  }
  // y = x·Wᵀ (+ bias): at `compute` on fp32 operands, or on x rounded to 16 bits (a temporary) and the 16-bit W,
  // fp32 accumulation, output and bias.
  void linear_into(DeviceTensor& y, const DeviceTensor& x, const Weight& w, const float* bias,
                   const std::string& tag) const {
    const std::int64_t out = y.cols;
    if (operands_ == vidlora::cuda::DType::F32) {
      vidlora::cuda::GemmProblem g =
          vidlora::cuda::linear_forward(x.rows, x.cols, out, vidlora::cuda::DType::F32, bias != nullptr);
      g.compute = compute_;
      gemm_.run(g, x.data(), w.data(), y.data(), 1.0f, 0.0f, bias, stream_);
      return;
    }
    vidlora::cuda::DeviceBuffer<std::uint16_t> x16(allocator_, static_cast<std::size_t>(x.size()),
                                                   tag + ".operand_16bit");
    io::cuda::round_to_16bit(x.data(), x16.data(), x.size(), operands_, stream_);
    gemm_.run(vidlora::cuda::linear_forward(x.rows, x.cols, out, operands_, bias != nullptr, vidlora::cuda::DType::F32),
              x16.data(), w.data(), y.data(), 1.0f, 0.0f, bias, stream_);
  }
  DeviceTensor norm(const DeviceTensor& x, const float* w, const float* b, const std::string& tag) const {
    DeviceTensor y = tensor(x.rows, x.cols, tag);
    model::cuda::layer_norm({x.data(), w, b, y.data(), x.rows, x.cols, host_.config().layer_norm_eps}, stream_);
    return y;
  }
  void sync() const { VIDLORA_CUDA_CHECK(cudaStreamSynchronize(stream_)); }
  // hidden_states[state] of frames f0 .. f0 + nf into every column block of `out` that asks for it.
  void take(int state, const DeviceTensor& x, std::int64_t f0, std::int64_t nf, Matrix& out) const {
    const std::vector<int>& states = host_.feature_states();
    if (std::find(states.begin(), states.end(), state) == states.end()) return;
    sync();
    const std::vector<float> h = x.buffer.download();
    const std::int64_t d = x.cols, tokens = x.rows / nf, tpf = host_.tokens_per_frame(), skip = tokens - tpf;
    for (std::size_t k = 0; k < states.size(); ++k) {
      if (states[k] != state) continue;
      for (std::int64_t f = 0; f < nf; ++f)
        for (std::int64_t t = 0; t < tpf; ++t)
          std::copy_n(h.data() + ((f * tokens + skip + t) * d), d,
                      out.data() + ((f0 + f) * tpf + t) * out.cols() + static_cast<std::int64_t>(k) * d);
    }
  }

  const ClipVision& host_;
  vidlora::cuda::Compute compute_;
  std::int64_t frames_per_pass_;
  cudaStream_t stream_;
  vidlora::cuda::CudaCachingAllocator* allocator_;
  vidlora::cuda::DType operands_;
  mutable vidlora::cuda::GemmRunner gemm_;
  Weight patch_w_;
  std::int64_t patch_cols_ = 0;  // the patch embedding's K: channels·patch², padded to a multiple of 8 in 16 bits
  vidlora::cuda::DeviceBuffer<float> cls_, pos_, pre_w_, pre_b_;
  std::vector<Layer> layers_;
};

}  // namespace vidlora::model::cuda
