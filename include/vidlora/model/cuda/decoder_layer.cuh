#pragma once
// The CUDA executor of decoder_layer_forward_steps / decoder_layer_backward_steps
// (model/decoder_layer_steps.hpp): the block model::Decoder runs on the CPU, run on the device from the
// existing kernels — cuBLASLt GEMMs (core/cuda/gemm.cuh), LoRA linears (lora/cuda/lora_linear.cuh, frozen
// base dense fp32 or NF4/FP4 dequantized into a temporary before each GEMM, forward and backward, never
// kept), RMSNorm / RoPE / SwiGLU (model/cuda/elementwise.cuh) and causal GQA attention per sequence
// (model/cuda/flash_attention.cuh's tiled kernels for head dims that are multiples of 16, else
// model/cuda/attention.cuh's row kernels with the deterministic dk/dv kernel; no atomics either way). fp32 first: every tensor is float;
// bf16 is the next step (docs/cuda.md).
// Every op allocates its output, and the linears their caches, from a caching allocator (DecoderLayerMemory: the
// model's CudaCachingAllocator, tags "layers.3.self_attn.q_proj", ...; none given: cudaMalloc), so a step over the
// cap is a DeviceMemoryError naming the tensor. A LoRA slot keeps only its dropout keep bits and h = dropout(x)·Aᵀ
// from forward to backward: its input comes back from the step list (backward_takes_input: the attention output
// kept, the norm outputs and the SwiGLU product recomputed), and dropout(x), g = scaling·dy·B and a 4-bit base's
// dense copy are temporaries of the call that needs them; model/decoder_step_memory.hpp counts what a block keeps.
// Status: compiled for sm_75..90 and checked against the CPU executor by tests/cuda/test_decoder_layer.cu,
// which has not yet run on a GPU (docs/cuda.md).

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <vidlora/core/backend.hpp>
#include <vidlora/core/cuda/cuda_upstream.cuh>
#include <vidlora/core/cuda/gemm.cuh>
#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/cuda/memory.cuh>
#include <vidlora/io/cuda/round_16bit.cuh>
#include <vidlora/core/cuda/status.cuh>
#include <vidlora/io/half.hpp>
#include <vidlora/lora/cuda/lora_linear.cuh>
#include <vidlora/lora/dropout.hpp>
#include <vidlora/model/cuda/attention.cuh>
#include <vidlora/model/cuda/elementwise.cuh>
#include <vidlora/model/cuda/flash_attention.cuh>
#include <vidlora/model/decoder_layer_steps.hpp>
#include <vidlora/model/decoder_step_memory.hpp>
#include <vidlora/quant/cuda/dequantize.cuh>

namespace vidlora::model::cuda {

// The shape of one block over a right-padded batch (row b·seq_len + t is token t of sequence b).
struct DecoderLayerShape {
  std::int64_t batch = 1, seq_len = 0;
  std::int64_t hidden = 0, intermediate = 0, q_heads = 0, kv_heads = 0, head_dim = 0;
  double rms_norm_eps = 1e-6;
  RopeFrequencies rope;  // the frequencies this forward rotates with (the model's RopeFrequencyState::current())
  bool qk_norm = false;  // Qwen3's per-head q_norm / k_norm
  std::int64_t tokens() const { return batch * seq_len; }
  std::int64_t q_features() const { return q_heads * head_dim; }
  std::int64_t kv_features() const { return kv_heads * head_dim; }
};

// One linear slot on the device (pointers owned by the caller). `params` describes the frozen base (base kind,
// w or qw, bias) and, with has_lora, the adapters (a, b, rank, scaling, dropout, seed) and their fp32
// gradients; tokens and stream are filled in per call. layer_index: the CPU slot's LoraOptions::layer
// (layer·7 + module), so both draw the same dropout masks.
struct DeviceLinear {
  lora::cuda::LoraLinearParams params;
  bool has_lora = false;
  std::uint32_t layer_index = 0;
  std::uint64_t step = 0;  // dropout step, as lora::LoraLinear::step()
};

// The frozen norms (fp32 device pointers, owned by the caller) and the seven slots of one block.
struct DecoderLayerDeviceWeights {
  const float* norm1 = nullptr;           // [hidden]
  const float* norm2 = nullptr;           // [hidden]
  const float* q_norm = nullptr;          // qwen3 [head_dim]
  const float* k_norm = nullptr;          // qwen3 [head_dim]
  std::array<DeviceLinear, 7> linears{};  // q, k, v, o, gate, up, down
};

// One layer's KV cache on the device (owned by the caller): K and V [capacity, kv_features] row-major, the first
// `past` rows holding the positions already run.
struct LayerKvCache {
  float* k = nullptr;
  float* v = nullptr;
  std::int64_t capacity = 0, past = 0;
};

inline void check_layer_shape(const DecoderLayerShape& s) {
  vidlora::cuda::check_arg(s.batch > 0 && s.seq_len > 0 && s.hidden > 0 && s.intermediate > 0 && s.q_heads > 0 &&
                               s.kv_heads > 0 && s.head_dim > 0 && s.head_dim % 2 == 0 && s.q_heads % s.kv_heads == 0,
                           "cuda::DecoderLayerExecutor",
                           "needs positive sizes, an even head_dim and q_heads a multiple of kv_heads (batch " +
                               std::to_string(s.batch) + ", seq_len " + std::to_string(s.seq_len) + ", heads " +
                               std::to_string(s.q_heads) + "/" + std::to_string(s.kv_heads) + ", head_dim " +
                               std::to_string(s.head_dim) + ")");
  vidlora::cuda::check_arg(
      static_cast<std::int64_t>(s.rope.inv_freq.size()) * 2 == s.head_dim, "cuda::DecoderLayerExecutor",
      "RoPE frequencies for " + std::to_string(s.rope.inv_freq.size()) + " rotation pairs, head_dim " +
          std::to_string(s.head_dim) + " has " + std::to_string(s.head_dim / 2));
}

}  // namespace vidlora::model::cuda

#if VIDLORA_KERNELS
namespace vidlora::model::cuda {

// A float matrix [rows, cols] in device memory: the executor's tensor (rows of one value: cols = 1). Packed
// (pack_bf16), its values wait as bf16 bits in `packed` and `buffer` is empty until unpack_bf16 widens them again.
//
// rounded16: the values rounded to the executor's 16-bit operands (bf16 or fp16, its base_operands), written beside
// them by the kernel that made them when a 16-bit consumer reads them next (DecoderLayerExecutor::
// set_producer_rounding): the frozen GEMMs of the slots after a norm or SwiGLU, the register-tile attention after RoPE.
// A cache of `buffer`, hence mutable: the consumer gives it back when done; whatever changes the values in place
// drops it (accumulate) or writes it again (rope).
struct DeviceTensor {
  vidlora::cuda::DeviceBuffer<float> buffer;
  vidlora::cuda::DeviceBuffer<std::uint16_t> packed;
  mutable vidlora::cuda::DeviceBuffer<std::uint16_t> rounded16;
  mutable vidlora::cuda::DType rounded16_type = vidlora::cuda::DType::F32;  // BF16 or F16 while rounded16 is held
  std::int64_t rows = 0, cols = 0;
  DeviceTensor() = default;
  DeviceTensor(std::int64_t r, std::int64_t c) : buffer(static_cast<std::size_t>(r * c)), rows(r), cols(c) {}
  // From a caching allocator under `tag` (null: cudaMalloc).
  DeviceTensor(vidlora::cuda::CudaCachingAllocator* allocator, std::int64_t r, std::int64_t c, std::string_view tag)
      : buffer(allocator, static_cast<std::size_t>(r * c), tag), rows(r), cols(c) {}
  float* data() { return buffer.data(); }
  const float* data() const { return buffer.data(); }
  std::int64_t size() const { return rows * cols; }
};

namespace detail {
template <class = void>  // a template: header kernels get one definition across TUs
__global__ void add_kernel(float* out, const float* a, const float* b, std::int64_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = a[i] + b[i];
}
template <class = void>
__global__ void from_bf16_kernel(float* out, const std::uint16_t* x, std::int64_t n) {
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x)
    out[i] = io::bf16_bits_to_float(x[i]);
}
}  // namespace detail

// out = a + b over n floats (out may be a), on `stream`.
inline void add(float* out, const float* a, const float* b, std::int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  VIDLORA_LAUNCH(vidlora::cuda::grid_size(n, 256), 256, 0, stream, detail::add_kernel<>)(out, a, b, n);
  VIDLORA_CUDA_CHECK_LAUNCH("add_kernel");
}

// Keeps t's values as bf16 (round to nearest even, as io::float_to_bf16_bits) in a buffer from `allocator` under
// `tag`, and gives its float buffer back. Stream-ordered: the float block's next user runs after the conversion.
inline void pack_bf16(DeviceTensor& t, vidlora::cuda::CudaCachingAllocator* allocator, std::string_view tag,
                      cudaStream_t stream) {
  if (t.size() == 0 || t.buffer.size() == 0) return;
  t.rounded16 = {};  // a copy of values about to change (and memory the packing is to save)
  t.packed = vidlora::cuda::DeviceBuffer<std::uint16_t>(allocator, static_cast<std::size_t>(t.size()), tag);
  io::cuda::round_to_16bit(t.buffer.data(), t.packed.data(), t.size(), vidlora::cuda::DType::BF16, stream);
  t.buffer = vidlora::cuda::DeviceBuffer<float>();
}
// Widens a packed tensor back into a float buffer (the bf16 values exactly) and gives the bf16 one back.
inline void unpack_bf16(DeviceTensor& t, vidlora::cuda::CudaCachingAllocator* allocator, std::string_view tag,
                        cudaStream_t stream) {
  if (t.packed.size() == 0) return;
  t.rounded16 = {};
  t.buffer = vidlora::cuda::DeviceBuffer<float>(allocator, static_cast<std::size_t>(t.size()), tag);
  VIDLORA_LAUNCH(vidlora::cuda::grid_size(t.size(), 256), 256, 0, stream, detail::from_bf16_kernel<>)
  (t.buffer.data(), t.packed.data(), t.size());
  VIDLORA_CUDA_CHECK_LAUNCH("from_bf16_kernel");
  t.packed = vidlora::cuda::DeviceBuffer<std::uint16_t>();
}

// A block executor's position and RoPE tables (positions r mod seq_len, cos / sin of positions first .. first +
// seq_len - 1) and its attention mask, built on the host once for all the blocks of a step (or of a KV-cache forward)
// in page-locked memory, from which each block's executor uploads its own device copy asynchronously on its stream.
// Without it every executor recomputed the cos / sin tables on the host (2·seq_len·head_dim/2 double cos / sin: about
// 2-6 ms a block at the H100 preset's 2,432 positions) and uploaded them with a pageable cudaMemcpy, which waits for
// every kernel queued before it: once per block the GPU ran dry while the host computed. Same tables, same bits.
class LayerTablesHost {
 public:
  LayerTablesHost() = default;
  LayerTablesHost(const LayerTablesHost&) = delete;
  LayerTablesHost& operator=(const LayerTablesHost&) = delete;
  // A move keeps the page-locked addresses (uploads in flight read the same memory).
  LayerTablesHost(LayerTablesHost&& o) noexcept { swap(o); }
  LayerTablesHost& operator=(LayerTablesHost&& o) noexcept {
    if (this != &o) {
      LayerTablesHost gone(std::move(*this));
      swap(o);
    }
    return *this;
  }
  ~LayerTablesHost() {
    if (!positions_ && !mask_ && !cos_ && !sin_) return;
    (void)cudaDeviceSynchronize();  // uploads from these buffers may still run (their stream may be gone by now)
    for (void* p : {static_cast<void*>(positions_), static_cast<void*>(mask_), static_cast<void*>(cos_),
                    static_cast<void*>(sin_)})
      if (p) (void)cudaFreeHost(p);
  }

  // The tables of `shape` from absolute position `first` and `key_mask` ([tokens] or empty). Rewrites the host tables
  // only when they change, after waiting for `stream`, where earlier executors' uploads from them may still run. The
  // cos / sin rows are absolute positions, so tables built for a longer sequence from the same first position serve a
  // shorter one as their prefix (a run whose clips vary in length builds them once per longest length); new ones are
  // computed before the wait, while the GPU still works.
  void prepare(const DecoderLayerShape& shape, std::int64_t first, const std::vector<int>& key_mask,
               cudaStream_t stream) {
    static_assert(sizeof(int) == sizeof(std::int32_t), "the mask's host ints are copied as int32");
    const std::int64_t t = shape.tokens();
    const bool rope_fits =
        cos_ && head_dim_ == shape.head_dim && rope_ == shape.rope && first_ == first && shape.seq_len <= rope_rows_;
    const bool positions_same = positions_ && tokens_ == t && seq_len_ == shape.seq_len;
    const bool mask_same = static_cast<std::int64_t>(key_mask.size()) == mask_count_ &&
                           (key_mask.empty() || std::equal(key_mask.begin(), key_mask.end(), mask_));
    if (rope_fits && positions_same && mask_same) return;
    std::vector<float> cos_table, sin_table;
    if (!rope_fits) rope_tables(shape.rope, shape.seq_len, cos_table, sin_table, first);
    VIDLORA_CUDA_CHECK(cudaStreamSynchronize(stream));
    tokens_ = 0;  // not valid (matches() is false) until every table below is rewritten
    if (!rope_fits) {
      rope_rows_ = 0;
      reserve(cos_, cos_capacity_, cos_table.size());
      reserve(sin_, sin_capacity_, sin_table.size());
      std::copy(cos_table.begin(), cos_table.end(), cos_);
      std::copy(sin_table.begin(), sin_table.end(), sin_);
      head_dim_ = shape.head_dim;
      rope_ = shape.rope;
      first_ = first;
      rope_rows_ = shape.seq_len;
    }
    if (!positions_same) {
      reserve(positions_, positions_capacity_, static_cast<std::size_t>(t));
      for (std::int64_t i = 0; i < t; ++i) positions_[i] = static_cast<std::int32_t>(i % shape.seq_len);
    }
    if (!mask_same) {
      mask_count_ = -1;
      reserve(mask_, mask_capacity_, key_mask.size());
      std::copy(key_mask.begin(), key_mask.end(), mask_);
      mask_count_ = static_cast<std::int64_t>(key_mask.size());
    }
    seq_len_ = shape.seq_len;
    tokens_ = t;
  }

  // Whether these are the tables an executor of `shape` from `first` with `key_mask` needs (the mask compared by
  // value: an executor made after another prepare() of the same length would otherwise upload that one's mask).
  bool matches(const DecoderLayerShape& shape, std::int64_t first, const std::vector<int>& key_mask) const {
    return positions_ && tokens_ == shape.tokens() && seq_len_ == shape.seq_len && head_dim_ == shape.head_dim &&
           rope_ == shape.rope && first_ == first && shape.seq_len <= rope_rows_ &&
           mask_count_ == static_cast<std::int64_t>(key_mask.size()) &&
           (key_mask.empty() || std::equal(key_mask.begin(), key_mask.end(), mask_));
  }
  const std::int32_t* positions() const { return positions_; }
  const std::int32_t* mask() const { return mask_; }
  const float* cos() const { return cos_; }
  const float* sin() const { return sin_; }
  std::int64_t table_elements() const { return seq_len_ * (head_dim_ / 2); }  // of cos, and of sin: seq_len rows

 private:
  // Grows a page-locked buffer to hold `n` elements (its contents are rewritten by the caller).
  template <class T>
  static void reserve(T*& p, std::size_t& capacity, std::size_t n) {
    if (p && n <= capacity) return;
    if (p) VIDLORA_CUDA_CHECK(cudaFreeHost(p));
    p = nullptr;
    capacity = 0;
    if (n == 0) return;
    VIDLORA_CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&p), n * sizeof(T)));
    capacity = n;
  }
  void swap(LayerTablesHost& o) noexcept {
    std::swap(positions_, o.positions_);
    std::swap(mask_, o.mask_);
    std::swap(cos_, o.cos_);
    std::swap(sin_, o.sin_);
    std::swap(positions_capacity_, o.positions_capacity_);
    std::swap(mask_capacity_, o.mask_capacity_);
    std::swap(cos_capacity_, o.cos_capacity_);
    std::swap(sin_capacity_, o.sin_capacity_);
    std::swap(tokens_, o.tokens_);
    std::swap(seq_len_, o.seq_len_);
    std::swap(head_dim_, o.head_dim_);
    std::swap(first_, o.first_);
    std::swap(mask_count_, o.mask_count_);
    std::swap(rope_rows_, o.rope_rows_);
    std::swap(rope_, o.rope_);
  }

  std::int32_t* positions_ = nullptr;
  std::int32_t* mask_ = nullptr;
  float* cos_ = nullptr;
  float* sin_ = nullptr;
  std::size_t positions_capacity_ = 0, mask_capacity_ = 0, cos_capacity_ = 0, sin_capacity_ = 0;
  std::int64_t tokens_ = 0, seq_len_ = 0, head_dim_ = 0, first_ = 0, mask_count_ = 0;
  std::int64_t rope_rows_ = 0;  // positions first .. first + rope_rows_ - 1 in cos_ / sin_
  RopeFrequencies rope_;        // the frequencies of cos_ / sin_
};

// Where a block executor's tensors come from: the allocator (null: cudaMalloc) and the prefix of their tags.
struct DecoderLayerMemory {
  vidlora::cuda::CudaCachingAllocator* allocator = nullptr;
  std::string tag_prefix;  // "layers.3."
};

class DecoderLayerExecutor {
 public:
  using tensor_type = DeviceTensor;
  using rows_type = DeviceTensor;
  using saved_type = DecoderLayerSavedOf<DeviceTensor, DeviceTensor, DeviceTensor>;  // attention: lse [batch, heads·T]
  using backend_policy = backend::Cuda;

  // key_mask: [tokens] host ints (1 token, 0 padding), or empty for all tokens. One executor serves one
  // forward and its backward (it keeps each LoRA slot's keep bits and h in between).
  // compute: every GEMM's (the frozen bases' and the LoRA pieces'): fp32, or TF32 tensor cores (sm_80+).
  // tables: the step's tables prepared on the host for this shape and key_mask (LayerTablesHost::prepare, from position
  // 0), uploaded asynchronously; null: built and uploaded here.
  DecoderLayerExecutor(vidlora::cuda::GemmRunner& gemm, DecoderLayerDeviceWeights& weights,
                       const DecoderLayerShape& shape, const std::vector<int>& key_mask, bool training,
                       cudaStream_t stream = nullptr, DecoderLayerMemory memory = {},
                       vidlora::cuda::Compute compute = vidlora::cuda::Compute::F32,
                       const LayerTablesHost* tables = nullptr)
      : gemm_(gemm),
        weights_(weights),
        shape_(shape),
        training_(training),
        stream_(stream),
        memory_(std::move(memory)),
        compute_(compute) {
    vidlora::cuda::require_legacy_ordered_stream(stream, "cuda::DecoderLayerExecutor");
    check_layer_shape(shape_);
    const std::int64_t t = shape_.tokens();
    vidlora::cuda::check_arg(
        key_mask.empty() || static_cast<std::int64_t>(key_mask.size()) == t, "cuda::DecoderLayerExecutor",
        "key mask of " + std::to_string(key_mask.size()) + " for " + std::to_string(t) + " tokens");
    if (tables) {
      upload_tables(*tables, 0, key_mask);
      return;
    }
    set_positions(0);
    if (!key_mask.empty())
      mask_ = vidlora::cuda::DeviceBuffer<std::int32_t>(
          memory_.allocator, std::vector<std::int32_t>(key_mask.begin(), key_mask.end()), tag("attention_mask"));
  }

  // Generation: one sequence of shape.seq_len new positions continuing `cache` (shape.batch 1), as
  // model::CpuLayerExecutor's KV-cache constructor: the slots infer (no dropout, nothing kept for a backward), the
  // rotated K and V are written to cache rows [past, past + seq_len), and the queries attend over every cached row
  // from absolute position past + i. No backward.
  DecoderLayerExecutor(vidlora::cuda::GemmRunner& gemm, DecoderLayerDeviceWeights& weights,
                       const DecoderLayerShape& shape, const LayerKvCache& cache, cudaStream_t stream = nullptr,
                       DecoderLayerMemory memory = {}, vidlora::cuda::Compute compute = vidlora::cuda::Compute::F32,
                       const LayerTablesHost* tables = nullptr)
      : gemm_(gemm),
        weights_(weights),
        shape_(shape),
        training_(false),
        stream_(stream),
        memory_(std::move(memory)),
        compute_(compute),
        cache_(cache) {
    vidlora::cuda::require_legacy_ordered_stream(stream, "cuda::DecoderLayerExecutor");
    check_layer_shape(shape_);
    vidlora::cuda::check_arg(shape_.batch == 1 && cache_.k && cache_.v && cache_.past >= 0 &&
                                 cache_.past + shape_.seq_len <= cache_.capacity,
                             "cuda::DecoderLayerExecutor",
                             "a KV-cache forward takes one sequence whose " + std::to_string(shape_.seq_len) +
                                 " positions fit after the cache's " + std::to_string(cache_.past) + " (capacity " +
                                 std::to_string(cache_.capacity) + ", batch " + std::to_string(shape_.batch) + ")");
    if (tables)
      upload_tables(*tables, cache_.past, {});
    else
      set_positions(cache_.past);
  }

  bool qk_norm() const { return shape_.qk_norm; }
  bool cached() const { return cache_.k != nullptr; }
  // The frozen GEMMs' operands (every slot's base, LoRA or not): F32, or BF16 / F16 (lora::cuda::LoraLinearParams::
  // base_operands: 16-bit tensor cores, fp32 accumulation and outputs; the LoRA pieces stay at the compute above).
  // 16-bit operands also put the tiled attention's tile products on 16 bits (flash_options).
  void set_base_operands(vidlora::cuda::DType t) { base_operands_ = t; }
  // With 16-bit operands, the kernels that make a 16-bit consumer's input (the forward's block norms and SwiGLU for
  // the frozen GEMMs after them, RoPE for the register-tile attention) write its rounding beside their fp32 output
  // (DeviceTensor::rounded16), instead of the consumer rounding it in a pass of its own: the same bits (on by default;
  // off: every consumer rounds, as before).
  void set_producer_rounding(bool on) { producer_rounding_ = on; }

  DeviceTensor copy(const DeviceTensor& x) const { return copy_as(x, "input"); }
  DeviceTensor copy_as(const DeviceTensor& x, std::string_view what) const {
    DeviceTensor y = tensor(x.rows, x.cols, what);
    if (x.size())
      VIDLORA_CUDA_CHECK(cudaMemcpyAsync(y.data(), x.data(), static_cast<std::size_t>(x.size()) * sizeof(float),
                                         cudaMemcpyDeviceToDevice, stream_));
    return y;
  }
  DeviceTensor add(const DeviceTensor& a, const DeviceTensor& b) const {
    check_same(a, b, "add");
    DeviceTensor y = tensor(a.rows, a.cols, "residual");
    model::cuda::add(y.data(), a.data(), b.data(), a.size(), stream_);
    return y;
  }
  void accumulate(DeviceTensor& a, const DeviceTensor& b) const {
    check_same(a, b, "accumulate");
    a.rounded16 = {};  // no longer a's values
    model::cuda::add(a.data(), a.data(), b.data(), a.size(), stream_);
  }

  // The forward's block norms (those given `inv`, which the backward's recomputations are not) feed the frozen GEMMs
  // of q, k, v and of gate, up: with 16-bit operands the kernel writes their rounding too (rounded16).
  DeviceTensor rms_norm(const DeviceTensor& x, LayerNorm which, DeviceTensor* inv) const {
    const std::int64_t n = norm_width(which), rows = x.size() / n;
    DeviceTensor y = tensor(x.rows, x.cols, norm_name(which));
    if (inv) *inv = tensor(rows, 1, std::string(norm_name(which)) + ".inv");
    RmsNormParams p{x.data(), norm_weight(which),  y.data(), inv ? inv->data() : nullptr, nullptr, nullptr, rows,
                    n,        shape_.rms_norm_eps, {}};
    if (inv && (which == LayerNorm::input || which == LayerNorm::post_attention))
      p.y16 = round_in_producer(y, std::string(norm_name(which)) + ".16bit");
    model::cuda::rms_norm(p, stream_);
    return y;
  }
  DeviceTensor rms_norm_backward(const DeviceTensor& x, LayerNorm which, const DeviceTensor& inv,
                                 const DeviceTensor& dy) const {
    check_same(x, dy, "rms_norm_backward");
    const std::int64_t n = norm_width(which), rows = x.size() / n;
    DeviceTensor dx = tensor(dy.rows, dy.cols, std::string(norm_name(which)) + ".grad");
    RmsNormParams p{x.data(), norm_weight(which),  nullptr, const_cast<float*>(inv.data()), dy.data(), dx.data(), rows,
                    n,        shape_.rms_norm_eps, {}};
    model::cuda::rms_norm_backward(p, stream_);
    return dx;
  }

  DeviceTensor linear(LayerLinear m, const DeviceTensor& x) {
    DeviceLinear& lin = weights_.linears[static_cast<std::size_t>(m)];
    SlotState& st = state_[static_cast<std::size_t>(m)];
    lora::cuda::LoraLinearParams p = lin.params;
    vidlora::cuda::check_arg(x.cols == p.in, "cuda::DecoderLayerExecutor::linear",
                             "input of " + std::to_string(x.cols) + " columns for a slot of " + std::to_string(p.in));
    p.tokens = x.rows;
    p.compute = compute_;
    p.base_operands = base_operands_;
    const std::string_view name = kSlotMemoryNames[static_cast<std::size_t>(m)];
    if (p.narrow_base()) p.x16 = shared_operand(m, x, name);
    if (m == LayerLinear::up) swiglu_feeds_down_ = true;  // the forward's SwiGLU comes next
    struct SharedRelease {  // x's 16-bit copy, after the last slot of its group (v; o; up; down), also on a throw
      const DeviceTensor& x;
      bool last;
      ~SharedRelease() {
        if (last) x.rounded16 = {};
      }
    } release{x, m == LayerLinear::v || m == LayerLinear::o || m == LayerLinear::up || m == LayerLinear::down};
    DeviceTensor y = tensor(x.rows, p.out, name);
    if (!lin.has_lora) {
      FrozenTemporaries w = frozen_temporaries(p, name, /*input_rounded=*/p.x16 != nullptr);
      lora::cuda::frozen_forward(gemm_, p, w.ws, x.data(), y.data(), stream_);
      return y;
    }
    // lora::LoraLinear draws a mask only for a training forward with dropout, at step() and then advances it.
    if (training_ && p.dropout > 0.0f) {
      p.stream = lora::dropout_stream(lin.layer_index, lin.step++);
    } else {
      p.dropout = 0.0f;
    }
    p.rebuild_dropout_input = true;  // the backward gets x from the step list and rebuilds dropout(x) from the bits
    st.params = p;
    st.params.x16 = nullptr;  // the shared bits go back after the group's last slot: never read from the kept params
    // Kept until the backward: the keep bits and h (lora::cuda::lora_workspace_sizes' mask and h pieces).
    // Temporaries of this call: dropout(x) and a 4-bit base's dense copy; g is the backward's.
    st.sizes = lora::cuda::lora_workspace_sizes<float>(p);
    lora::cuda::LoraWorkspaceSizes kept{};
    kept.mask = st.sizes.mask;
    kept.h = st.sizes.h;
    st.workspace = vidlora::cuda::DeviceBuffer<float>(memory_.allocator, static_cast<std::size_t>(kept.total()),
                                                      tag(std::string(name) + ".workspace"));
    st.ws = lora::cuda::LoraWorkspace<float>::carve(st.workspace.data(), kept);
    SlotTemporaries tmp = temporaries(st, name, /*g=*/false, /*input_rounded=*/p.x16 != nullptr);
    lora::cuda::lora_forward<float>(gemm_, p, st.ws, x.data(), y.data(), stream_);
    st.ws.xd = st.ws.w_dense = nullptr;
    st.ws.op16 = nullptr;
    st.ready = true;
    return y;
  }

  // Every LoRA slot takes its input back from the step list (it keeps only its keep bits and h).
  bool backward_takes_input(LayerLinear m) const { return weights_.linears[static_cast<std::size_t>(m)].has_lora; }

  DeviceTensor linear_backward(LayerLinear m, const DeviceTensor& dy, const DeviceTensor& x) {
    vidlora::cuda::check_arg(!cached(), "cuda::DecoderLayerExecutor", "no backward through a KV-cache forward");
    DeviceLinear& lin = weights_.linears[static_cast<std::size_t>(m)];
    SlotState& st = state_[static_cast<std::size_t>(m)];
    const std::string name = std::string(kSlotMemoryNames[static_cast<std::size_t>(m)]);
    if (!lin.has_lora) {
      lora::cuda::LoraLinearParams p = lin.params;
      p.tokens = dy.rows;
      p.compute = compute_;
      p.base_operands = base_operands_;
      DeviceTensor dx = tensor(dy.rows, p.in, name + ".grad");
      FrozenTemporaries w = frozen_temporaries(p, name);  // a 4-bit base is dequantized again here, never kept
      lora::cuda::frozen_input_grad(gemm_, p, w.ws, dy.data(), dx.data(), stream_);
      return dx;
    }
    vidlora::cuda::check_arg(st.ready && st.params.tokens == dy.rows, "cuda::DecoderLayerExecutor::linear_backward",
                             "needs this executor's forward of the slot first, over the same tokens");
    vidlora::cuda::check_arg(
        x.rows == st.params.tokens && x.cols == st.params.in, "cuda::DecoderLayerExecutor::linear_backward",
        name + " needs its forward input [" + std::to_string(st.params.tokens) + ", " + std::to_string(st.params.in) +
            "], got [" + std::to_string(x.rows) + ", " + std::to_string(x.cols) + "]");
    DeviceTensor dx = tensor(dy.rows, st.params.in, name + ".grad");
    SlotTemporaries tmp = temporaries(st, name, /*g=*/true);  // dropout(x) rebuilt, g, the base dequantized again
    lora::cuda::lora_backward<float>(gemm_, st.params, st.ws, x.data(), dy.data(), dx.data(), stream_);
    st.ws.xd = st.ws.g = st.ws.w_dense = nullptr;
    st.ws.op16 = nullptr;
    return dx;
  }

  // In place. The forward's rotation of q and k, when the register-tile attention takes them next (which then writes
  // its output's rounding for o_proj in turn), writes their
  // 16-bit rounding too (rounded16, which that attention reads); otherwise whatever rounding x had is dropped.
  void rope(DeviceTensor& x, bool inverse) const {
    RopeParams p{x.data(),        positions_.data(), cos_.data(), sin_.data(), x.rows, x.cols / shape_.head_dim,
                 shape_.head_dim, inverse,           {}};
    x.rounded16 = {};
    if (!inverse && !cached() && attention_takes_16bit_inputs()) p.x16 = round_in_producer(x, "self_attn.rope_16bit");
    model::cuda::rope(p, stream_);
  }

  DeviceTensor attention(saved_type& a) const {
    if (cached()) return cached_attention(a);
    const std::int64_t t = shape_.seq_len, qf = shape_.q_features();
    DeviceTensor out = tensor(a.q.rows, qf, "self_attn.attention");
    a.attention = tensor(shape_.batch, shape_.q_heads * t, "self_attn.lse");
    const Inputs16 in16 = inputs_16bit(a, nullptr);
    struct Release {  // RoPE's rounding of q and k is this call's only: not kept with the saved q and k
      saved_type& a;
      ~Release() {
        a.q.rounded16 = {};
        a.k.rounded16 = {};
      }
    } release{a};
    // o_proj's 16-bit operand: the register-tile kernels (those that take in16) write it beside out.
    const Output16 out16 = in16.q16 ? round_in_producer(out, "self_attn.attention_16bit") : Output16{};
    for (std::int64_t b = 0; b < shape_.batch; ++b) {
      AttentionParams p = sequence_params(a, b);
      in16.point(p, b, shape_);
      p.out = out.data() + b * t * qf;
      if (out16.bits) p.out16 = out16.bits + b * t * qf;
      if (flash_attention_fits(p, flash_options()))  // the tiled kernel (head dims that are multiples of 16 and
        flash_attention_forward(p, flash_options(), stream_);  // fit the card's shared memory), else the row kernel
      else
        model::cuda::attention_forward(p, stream_);
    }
    return out;
  }

  QkvGrads<DeviceTensor> attention_backward(const saved_type& a, const DeviceTensor& d_attn) const {
    vidlora::cuda::check_arg(!cached(), "cuda::DecoderLayerExecutor", "no backward through a KV-cache forward");
    const std::int64_t t = shape_.seq_len, qf = shape_.q_features(), kvf = shape_.kv_features();
    QkvGrads<DeviceTensor> g{zeros(a.q.rows, a.q.cols, "self_attn.dq"), zeros(a.k.rows, a.k.cols, "self_attn.dk"),
                             zeros(a.v.rows, a.v.cols, "self_attn.dv")};
    DeviceTensor row_dot = tensor(shape_.batch, shape_.q_heads * t, "self_attn.row_dot");  // dk/dv kernel scratch
    const Inputs16 in16 = inputs_16bit(a, &d_attn);
    for (std::int64_t b = 0; b < shape_.batch; ++b) {
      AttentionParams p = sequence_params(a, b);
      in16.point(p, b, shape_);
      p.row_dot = row_dot.data() + b * shape_.q_heads * t;  // dk/dv in a fixed order: two runs give the same bits
      p.d_out = d_attn.data() + b * t * qf;
      p.dq = g.dq.data() + b * t * qf;
      p.dk = g.dk.data() + b * t * kvf;
      p.dv = g.dv.data() + b * t * kvf;
      // o_proj's input, when the block kept it: the tiled backward's row_dot from it (one dq pass over the keys)
      p.forward_out = a.attn.buffer.size() ? a.attn.data() + b * t * qf : nullptr;
      if (flash_attention_fits(p, flash_options()))
        flash_attention_backward(p, flash_options(), stream_);
      else
        model::cuda::attention_backward(p, stream_);
    }
    return g;
  }

  // The forward's SwiGLU (right after the up slot's forward; the backward's recomputation for down_proj is not)
  // feeds down_proj's frozen GEMM: with 16-bit operands the kernel writes its rounding too (rounded16).
  DeviceTensor swiglu(const DeviceTensor& gate, const DeviceTensor& up) {
    check_same(gate, up, "swiglu");
    DeviceTensor h = tensor(gate.rows, gate.cols, "mlp.act");
    SwigluParams p{gate.data(), up.data(), h.data(), nullptr, nullptr, nullptr, gate.size(), {}};
    if (swiglu_feeds_down_) p.h16 = round_in_producer(h, "mlp.act.16bit");
    swiglu_feeds_down_ = false;
    model::cuda::swiglu(p, false, stream_);
    return h;
  }
  SwigluGrads<DeviceTensor> swiglu_backward(const DeviceTensor& gate, const DeviceTensor& up,
                                            const DeviceTensor& dm) const {
    check_same(gate, dm, "swiglu_backward");
    SwigluGrads<DeviceTensor> g{tensor(dm.rows, dm.cols, "mlp.gate_proj.dout"),
                                tensor(dm.rows, dm.cols, "mlp.up_proj.dout")};
    SwigluParams p{gate.data(), up.data(), nullptr, dm.data(), g.dgate.data(), g.dup.data(), dm.size(), {}};
    model::cuda::swiglu(p, true, stream_);
    return g;
  }

 private:
  struct SlotState {
    lora::cuda::LoraLinearParams params;  // as run by the forward (tokens, dropout stream)
    lora::cuda::LoraWorkspaceSizes sizes;
    vidlora::cuda::DeviceBuffer<float> workspace;  // the kept pieces: keep bits and h
    lora::cuda::LoraWorkspace<float> ws;
    bool ready = false;
  };
  // With 16-bit base operands a slot reads its input's 16-bit copy (DeviceTensor::rounded16): the one its producer
  // wrote (a norm, SwiGLU, the attention), or, when the producers do not round (set_producer_rounding(false)), the one
  // the first slot of a group that reads one norm's output (q, k, v; gate, up) rounds for the group. The copy goes
  // back after the group's last slot (linear's release). Null: the slot rounds its input itself (o, down without a
  // producer's copy).
  const void* shared_operand(LayerLinear m, const DeviceTensor& x, std::string_view name) {
    if (x.rounded16.size() != 0) return rounded_copy(x);
    if (m != LayerLinear::q && m != LayerLinear::gate) return nullptr;
    x.rounded16 = vidlora::cuda::DeviceBuffer<std::uint16_t>(memory_.allocator, static_cast<std::size_t>(x.size()),
                                                             tag(std::string(name) + ".input_16bit"));
    x.rounded16_type = base_operands_;
    io::cuda::round_to_16bit(x.data(), x.rounded16.data(), x.size(), base_operands_, stream_);
    return x.rounded16.data();
  }
  // A slot call's temporary workspace pieces (dropout(x), g, a 4-bit base's dense copy, the 16-bit operand), pointed
  // to by st.ws while the call runs and given back to the allocator when it returns. input_rounded: a forward given
  // its input's 16-bit bits (the group's shared rounding) takes no 16-bit operand piece.
  struct SlotTemporaries {
    vidlora::cuda::DeviceBuffer<float> xd, g, w_dense, op16;
  };
  SlotTemporaries temporaries(SlotState& st, std::string_view name, bool with_g, bool input_rounded = false) const {
    SlotTemporaries t;
    const std::string n(name);
    auto take = [&](std::int64_t elements, const char* what, float*& into) {
      vidlora::cuda::DeviceBuffer<float> b(memory_.allocator, static_cast<std::size_t>(elements), tag(n + what));
      into = elements ? b.data() : nullptr;
      return b;
    };
    t.xd = take(st.sizes.xd, ".dropout_input", st.ws.xd);
    if (with_g) t.g = take(st.sizes.g, ".grad_low_rank", st.ws.g);
    t.w_dense = take(st.sizes.w_dense, ".dequantized", st.ws.w_dense);
    float* op16 = nullptr;
    t.op16 = take(input_rounded ? 0 : st.sizes.op16, ".operand_16bit", op16);
    st.ws.op16 = op16;
    return t;
  }
  // A slot without LoRA: the temporaries of its frozen GEMM (a 4-bit base's dense copy, the 16-bit operand).
  struct FrozenTemporaries {
    vidlora::cuda::DeviceBuffer<float> w_dense, op16;
    lora::cuda::LoraWorkspace<float> ws;
  };
  FrozenTemporaries frozen_temporaries(const lora::cuda::LoraLinearParams& p, std::string_view name,
                                       bool input_rounded = false) const {
    FrozenTemporaries t;
    lora::cuda::LoraWorkspaceSizes s = lora::cuda::lora_workspace_sizes<float>(p);
    if (input_rounded) s.op16 = 0;
    const std::string n(name);
    t.w_dense = vidlora::cuda::DeviceBuffer<float>(memory_.allocator, static_cast<std::size_t>(s.w_dense),
                                                   tag(n + ".dequantized"));
    t.op16 = vidlora::cuda::DeviceBuffer<float>(memory_.allocator, static_cast<std::size_t>(s.op16),
                                                tag(n + ".operand_16bit"));
    t.ws.w_dense = s.w_dense ? t.w_dense.data() : nullptr;
    t.ws.op16 = s.op16 ? t.op16.data() : nullptr;
    return t;
  }

  // The device copies of prepared host tables (the same buffers, tags and order as set_positions and the mask's),
  // uploaded on the executor's stream without waiting for it.
  void upload_tables(const LayerTablesHost& h, std::int64_t first, const std::vector<int>& key_mask) {
    vidlora::cuda::check_arg(h.matches(shape_, first, key_mask), "cuda::DecoderLayerExecutor",
                             "the shared position tables were prepared for another shape, first position or mask");
    const std::int64_t t = shape_.tokens();
    auto upload = [this](auto& buffer, const auto* from, std::int64_t n, const char* what) {
      using T = std::remove_cvref_t<decltype(*from)>;
      buffer = vidlora::cuda::DeviceBuffer<T>(memory_.allocator, static_cast<std::size_t>(n), tag(what));
      if (n)
        VIDLORA_CUDA_CHECK(cudaMemcpyAsync(buffer.data(), from, static_cast<std::size_t>(n) * sizeof(T),
                                           cudaMemcpyHostToDevice, stream_));
    };
    upload(positions_, h.positions(), t, "rope.positions");
    upload(cos_, h.cos(), h.table_elements(), "rope.cos");
    upload(sin_, h.sin(), h.table_elements(), "rope.sin");
    if (!key_mask.empty()) upload(mask_, h.mask(), t, "attention_mask");
  }

  // Row r at absolute position first + (r mod seq_len): the kernel's position index r mod seq_len into cos / sin
  // tables whose rows are the positions first .. first + seq_len - 1.
  void set_positions(std::int64_t first) {
    const std::int64_t t = shape_.tokens();
    std::vector<std::int32_t> pos(static_cast<std::size_t>(t));
    for (std::int64_t i = 0; i < t; ++i)
      pos[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % shape_.seq_len);
    positions_ = vidlora::cuda::DeviceBuffer<std::int32_t>(memory_.allocator, pos, tag("rope.positions"));
    std::vector<float> cos_table, sin_table;
    rope_tables(shape_.rope, shape_.seq_len, cos_table, sin_table, first);
    cos_ = vidlora::cuda::DeviceBuffer<float>(memory_.allocator, cos_table, tag("rope.cos"));
    sin_ = vidlora::cuda::DeviceBuffer<float>(memory_.allocator, sin_table, tag("rope.sin"));
  }

  // The KV-cache attention: this call's rotated K and V appended to the cache, then the queries (absolute
  // positions past + i) over every cached key.
  DeviceTensor cached_attention(saved_type& a) const {
    const std::int64_t n = a.q.rows, qf = shape_.q_features(), kvf = shape_.kv_features();
    const std::size_t bytes = static_cast<std::size_t>(n * kvf) * sizeof(float);
    VIDLORA_CUDA_CHECK(
        cudaMemcpyAsync(cache_.k + cache_.past * kvf, a.k.data(), bytes, cudaMemcpyDeviceToDevice, stream_));
    VIDLORA_CUDA_CHECK(
        cudaMemcpyAsync(cache_.v + cache_.past * kvf, a.v.data(), bytes, cudaMemcpyDeviceToDevice, stream_));
    DeviceTensor out = tensor(n, qf, "self_attn.attention");
    a.attention = tensor(1, shape_.q_heads * n, "self_attn.lse");
    AttentionParams p;
    p.q = a.q.data();
    p.k = cache_.k;
    p.v = cache_.v;
    p.out = out.data();
    p.lse = a.attention.data();
    p.tq = n;
    p.tk = cache_.past + n;
    p.q_heads = shape_.q_heads;
    p.kv_heads = shape_.kv_heads;
    p.head_dim = shape_.head_dim;
    p.q_offset = cache_.past;
    if (flash_attention_fits(p, flash_options()))
      flash_attention_forward(p, flash_options(), stream_);
    else
      model::cuda::attention_forward(p, stream_);
    return out;
  }

  // q, k and v (and the backward's d_out) rounded once to the operands' 16 bits when the register-tile kernels take the
  // sequences (flash_attention_on_register_tiles; the backward's also need o_proj's kept input): those kernels then
  // read half the bytes, with the same results, as they round the fp32 values the same way themselves. Given back
  // when the attention call returns. Empty otherwise.
  // The forward's q and k come rounded by RoPE (rounded16) when the executor rounds in producers.
  struct Inputs16 {
    vidlora::cuda::DeviceBuffer<std::uint16_t> q, k, v, d_out;  // rounded here
    const std::uint16_t *q16 = nullptr, *k16 = nullptr, *v16 = nullptr, *d_out16 = nullptr;
    void point(AttentionParams& p, std::int64_t b, const DecoderLayerShape& s) const {
      const std::int64_t t = s.seq_len, qf = s.q_features(), kvf = s.kv_features();
      if (q16) p.q16 = q16 + b * t * qf;
      if (k16) p.k16 = k16 + b * t * kvf;
      if (v16) p.v16 = v16 + b * t * kvf;
      if (d_out16) p.d_out16 = d_out16 + b * t * qf;
    }
  };
  Inputs16 inputs_16bit(const saved_type& a, const DeviceTensor* d_out) const {
    Inputs16 in;
    if ((d_out && a.attn.buffer.size() == 0) || !attention_takes_16bit_inputs()) return in;
    const auto narrow = [this](const DeviceTensor& x, vidlora::cuda::DeviceBuffer<std::uint16_t>& own,
                               std::string_view what) -> const std::uint16_t* {
      if (x.rounded16.size() != 0) return rounded_copy(x);
      own =
          vidlora::cuda::DeviceBuffer<std::uint16_t>(memory_.allocator, static_cast<std::size_t>(x.size()), tag(what));
      io::cuda::round_to_16bit(x.data(), own.data(), x.size(), base_operands_, stream_);
      return own.data();
    };
    in.q16 = narrow(a.q, in.q, "self_attn.q_16bit");
    in.k16 = narrow(a.k, in.k, "self_attn.k_16bit");
    in.v16 = narrow(a.v, in.v, "self_attn.v_16bit");
    if (d_out) in.d_out16 = narrow(*d_out, in.d_out, "self_attn.d_out_16bit");
    return in;
  }
  // Whether this block's attention runs the register-tile kernels, which read 16-bit q, k, v (and d_out).
  bool attention_takes_16bit_inputs() const {
    AttentionParams p;
    p.tq = p.tk = shape_.seq_len;
    p.q_heads = shape_.q_heads;
    p.kv_heads = shape_.kv_heads;
    p.head_dim = shape_.head_dim;
    const FlashAttentionOptions o = flash_options();
    return flash_attention_fits(p, o) && flash_attention_on_register_tiles(p, o);
  }
  // A 16-bit copy beside `y` (y.rounded16) for its producing kernel to fill, when the executor rounds in producers and
  // its operands are 16-bit; else none.
  Output16 round_in_producer(const DeviceTensor& y, std::string_view what) const {
    if (!producer_rounding_ || base_operands_ == vidlora::cuda::DType::F32 || y.size() == 0) return {};
    y.rounded16 =
        vidlora::cuda::DeviceBuffer<std::uint16_t>(memory_.allocator, static_cast<std::size_t>(y.size()), tag(what));
    y.rounded16_type = base_operands_;
    return {y.rounded16.data(), base_operands_ == vidlora::cuda::DType::BF16};
  }
  // x's producer's 16-bit copy for a consumer of this executor's operands: its size and type, or an error (a copy made
  // before set_base_operands changed them would be read as the other format).
  const std::uint16_t* rounded_copy(const DeviceTensor& x) const {
    vidlora::cuda::check_arg(
        static_cast<std::int64_t>(x.rounded16.size()) == x.size() && x.rounded16_type == base_operands_,
        "cuda::DecoderLayerExecutor", [&] {
          return "a 16-bit copy of " + std::to_string(x.rounded16.size()) + " " +
                 vidlora::cuda::dtype_name(x.rounded16_type) + " values beside " + std::to_string(x.size()) +
                 " floats, for " + vidlora::cuda::dtype_name(base_operands_) + " operands";
        });
    return x.rounded16.data();
  }

  AttentionParams sequence_params(const saved_type& a, std::int64_t b) const {
    const std::int64_t t = shape_.seq_len, qf = shape_.q_features(), kvf = shape_.kv_features();
    AttentionParams p;
    p.q = a.q.data() + b * t * qf;
    p.k = a.k.data() + b * t * kvf;
    p.v = a.v.data() + b * t * kvf;
    p.key_mask = mask_.size() ? mask_.data() + b * t : nullptr;
    p.lse = const_cast<float*>(a.attention.data()) + b * shape_.q_heads * t;
    p.tq = p.tk = t;
    p.q_heads = shape_.q_heads;
    p.kv_heads = shape_.kv_heads;
    p.head_dim = shape_.head_dim;
    p.q_offset = 0;
    return p;
  }

  // The tiled attention's tile products in TF32 when the executor's GEMMs are.
  // The tiled attention's tile products: on the frozen GEMMs' 16-bit operands when they are 16-bit (the preset's
  // precision, as SDPA runs in bf16 / fp16 under autocast), else fp32 or TF32 as the GEMMs.
  FlashAttentionOptions flash_options() const {
    const FlashOperands ops = base_operands_ == vidlora::cuda::DType::BF16  ? FlashOperands::BF16
                              : base_operands_ == vidlora::cuda::DType::F16 ? FlashOperands::F16
                                                                            : FlashOperands::F32;
    return {compute_ == vidlora::cuda::Compute::TF32, 0, ops};
  }
  std::string tag(std::string_view what) const { return memory_.tag_prefix + std::string(what); }
  DeviceTensor tensor(std::int64_t rows, std::int64_t cols, std::string_view what) const {
    return DeviceTensor(memory_.allocator, rows, cols, tag(what));
  }
  static const char* norm_name(LayerNorm which) {
    switch (which) {
      case LayerNorm::input: return "input_layernorm";
      case LayerNorm::post_attention: return "post_attention_layernorm";
      case LayerNorm::q_head: return "self_attn.q_norm";
      case LayerNorm::k_head: break;
    }
    return "self_attn.k_norm";
  }
  DeviceTensor zeros(std::int64_t rows, std::int64_t cols, std::string_view what) const {
    DeviceTensor z = tensor(rows, cols, what);
    z.buffer.fill_bytes(0, stream_);
    return z;
  }
  std::int64_t norm_width(LayerNorm which) const {
    return which == LayerNorm::q_head || which == LayerNorm::k_head ? shape_.head_dim : shape_.hidden;
  }
  const float* norm_weight(LayerNorm which) const {
    switch (which) {
      case LayerNorm::input: return weights_.norm1;
      case LayerNorm::post_attention: return weights_.norm2;
      case LayerNorm::q_head: return weights_.q_norm;
      case LayerNorm::k_head: break;
    }
    return weights_.k_norm;
  }
  static void check_same(const DeviceTensor& a, const DeviceTensor& b, const char* what) {
    vidlora::cuda::check_arg(a.rows == b.rows && a.cols == b.cols, "cuda::DecoderLayerExecutor",
                             std::string(what) + ": [" + std::to_string(a.rows) + ", " + std::to_string(a.cols) +
                                 "] and [" + std::to_string(b.rows) + ", " + std::to_string(b.cols) + "] differ");
  }

  vidlora::cuda::GemmRunner& gemm_;
  DecoderLayerDeviceWeights& weights_;
  DecoderLayerShape shape_;
  bool training_ = true;
  cudaStream_t stream_ = nullptr;
  DecoderLayerMemory memory_;
  vidlora::cuda::Compute compute_ = vidlora::cuda::Compute::F32;
  vidlora::cuda::DType base_operands_ = vidlora::cuda::DType::F32;
  vidlora::cuda::DeviceBuffer<std::int32_t> positions_, mask_;
  vidlora::cuda::DeviceBuffer<float> cos_, sin_;
  std::array<SlotState, 7> state_{};
  bool producer_rounding_ = true;
  bool swiglu_feeds_down_ = false;  // set by the up slot's forward, taken by the SwiGLU after it
  LayerKvCache cache_{};            // generation: the layer's K/V history (k null: a training or evaluation batch)
};

}  // namespace vidlora::model::cuda
#endif
