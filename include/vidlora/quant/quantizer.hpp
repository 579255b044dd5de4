#pragma once
// Blockwise 4-bit quantization (NF4 / FP4), bit-exact with bitsandbytes' quantize_4bit, with
// optional double quantization of the per-block absmax.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/core/parallel.hpp>
#include <vidlora/quant/dynamic_map.hpp>
#include <vidlora/quant/format.hpp>

namespace vidlora::quant {

// Blocksizes bitsandbytes accepts for 4-bit quantization: powers of two in 32..4096.
constexpr bool valid_blocksize(long long blocksize) {
  return blocksize >= 32 && blocksize <= 4096 && (blocksize & (blocksize - 1)) == 0;
}

inline void require_blocksize(long long blocksize) {
  require(valid_blocksize(blocksize), "quant: blocksize {} is not a power of two in 32..4096", blocksize);
}

// A quantized tensor, flattened in row-major order.
struct QuantizedBlocks {
  std::vector<std::uint8_t> packed;   // ceil(numel / 2) bytes; element 2j in the high nibble
  std::vector<float> absmax;          // one per block; empty when double-quantized
  std::vector<std::uint8_t> qabsmax;  // double-quantized: absmax - offset as 8-bit codes, one per block
  float absmax_offset = 0.0f;         // double-quantized: mean of the absmax values
  std::vector<float> nested_absmax;   // double-quantized: one per 256 qabsmax codes
  std::size_t numel = 0;
  int blocksize = 64;

  std::size_t num_blocks() const { return (numel + blocksize - 1) / static_cast<std::size_t>(blocksize); }
  bool double_quantized() const { return !qabsmax.empty(); }
  // Bytes held: packed codes plus whatever stores the scales.
  std::size_t storage_bytes() const {
    return packed.size() + absmax.size() * sizeof(float) + qabsmax.size() + nested_absmax.size() * sizeof(float) +
           (double_quantized() ? sizeof(float) : 0);
  }
};

// Checks the fields agree with one another and with `blocksize`; names the first that does not.
inline void validate(const QuantizedBlocks& q) {
  require_blocksize(q.blocksize);
  const std::size_t blocks = q.num_blocks();
  require(q.packed.size() == (q.numel + 1) / 2, "quant: {} packed bytes cannot hold {} elements (need {})",
          q.packed.size(), q.numel, (q.numel + 1) / 2);
  if (q.double_quantized()) {
    require(q.absmax.empty(), "quant: double-quantized blocks also carry {} float absmax values", q.absmax.size());
    require(q.qabsmax.size() == blocks, "quant: {} qabsmax codes for {} blocks", q.qabsmax.size(), blocks);
    const std::size_t nested = (blocks + kNestedBlocksize - 1) / kNestedBlocksize;
    require(q.nested_absmax.size() == nested, "quant: {} nested absmax values for {} qabsmax codes (need {})",
            q.nested_absmax.size(), blocks, nested);
  } else {
    require(q.absmax.size() == blocks, "quant: {} absmax values for {} blocks of {}", q.absmax.size(), blocks,
            q.blocksize);
  }
}

// The float absmax of block `b`, decoding the 8-bit level when double-quantized: the float product code·nested, then
// the float sum with the offset, each rounded once, as bitsandbytes computes them (a kernel writes the product, a tensor
// add follows). A compiler allowed FMA instructions (-march=native on x86-64, aarch64) contracts `a*b + c` into one
// fused multiply-add, one rounding fewer: other bits. The product is materialized first so that it cannot (a plain
// cast to double does not stop GCC, which contracts through it).
inline float block_absmax(const QuantizedBlocks& q, std::size_t b) {
  if (!q.double_quantized()) return q.absmax[b];
  volatile float level = decode_dynamic(q.qabsmax[b], q.nested_absmax[b / kNestedBlocksize]);
  return level + q.absmax_offset;
}

// The 4-bit code of element i.
inline std::uint8_t code_at(const QuantizedBlocks& q, std::size_t i) {
  const std::uint8_t byte = q.packed[i / 2];
  return (i & 1) ? (byte & 0xFu) : (byte >> 4);
}

// Quantizes `values` in blocks of `blocksize` (the last block may be partial, with its own
// absmax). Double quantization replaces absmax with 8-bit codes of (absmax - mean) in blocks of
// 256. Throws vidlora::Error on a bad blocksize or a NaN / Inf value.
template <QuantFormat Format>
QuantizedBlocks quantize_4bit(std::span<const float> values, int blocksize, bool double_quant) {
  require_blocksize(blocksize);
  require(!values.empty(), "quant: cannot quantize an empty tensor");
  if (const auto i = first_nonfinite(values))
    fail("quant: element {} is {}; {} cannot quantize NaN or Inf", *i, values[*i], Format::name);

  const std::size_t n = values.size(), bs = static_cast<std::size_t>(blocksize);
  QuantizedBlocks q;
  q.numel = n;
  q.blocksize = blocksize;
  const std::size_t blocks = q.num_blocks();
  std::vector<float> absmax(blocks);
  q.packed.assign((n + 1) / 2, 0);
  // Blocks are independent (a block holds an even number of elements, so no packed byte spans two):
  // threads split them and the result is the same bytes as one thread's.
  parallel_for(std::size_t{0}, blocks, static_cast<std::int64_t>(n) * 16, [&](std::size_t b) {
    const std::size_t begin = b * bs, end = std::min(n, begin + bs);
    float m = 0.0f;
    for (std::size_t i = begin; i < end; ++i) m = std::max(m, std::fabs(values[i]));
    absmax[b] = m;
    // x · (1 / absmax), clamped: the reciprocal form of bitsandbytes' CUDA kernel.
    const float inv = 1.0f / std::max(m, 1e-38f);
    const auto code = [&](std::size_t i) { return encode_4bit<Format>(std::clamp(values[i] * inv, -1.0f, 1.0f)); };
    std::size_t i = begin;
    for (; i + 1 < end; i += 2) q.packed[i / 2] = static_cast<std::uint8_t>((code(i) << 4) | code(i + 1));
    if (i < end) q.packed[i / 2] = static_cast<std::uint8_t>(code(i) << 4);  // a partial last block's odd element
  });
  if (n & 1) q.packed.back() |= CodeBook<Format>::zero_code;  // the pad element encodes 0

  if (!double_quant) {
    q.absmax = std::move(absmax);
    return q;
  }
  double sum = 0.0;
  for (float a : absmax) sum += a;
  q.absmax_offset = static_cast<float>(sum / static_cast<double>(blocks));
  std::vector<float> centred(blocks);
  for (std::size_t b = 0; b < blocks; ++b) centred[b] = absmax[b] - q.absmax_offset;
  quantize_dynamic_blockwise(centred, q.qabsmax, q.nested_absmax);
  return q;
}

// Decodes elements [first, first + out.size()) of `q` into `out` (no validation: callers check).
template <QuantFormat Format>
void dequantize_range(const QuantizedBlocks& q, std::size_t first, std::span<float> out) {
  const std::size_t bs = static_cast<std::size_t>(q.blocksize);
  std::size_t i = first;
  const std::size_t last = first + out.size();
  float* dst = out.data();
  while (i < last) {
    const std::size_t b = i / bs;
    const std::size_t block_end = std::min(last, (b + 1) * bs);
    const float scale = block_absmax(q, b);
    float* const block_dst = dst;
    if ((i & 1) && i < block_end) *dst++ = Format::code[q.packed[i / 2] & 0xFu], ++i;
    // whole bytes: copy both code values of each byte from the pair table, then scale the block
    const std::uint8_t* src = q.packed.data() + i / 2;
    const std::size_t pairs = (block_end - i) / 2;
    for (std::size_t p = 0; p < pairs; ++p)
      std::memcpy(dst + 2 * p, CodeBook<Format>::pairs[src[p]].data(), 2 * sizeof(float));
    dst += 2 * pairs;
    i += 2 * pairs;
    if (i < block_end) *dst++ = Format::code[q.packed[i / 2] >> 4], ++i;
    for (float* v = block_dst; v < dst; ++v) *v *= scale;
  }
}

// All `numel` values: code value times its block's absmax, in float32 as bitsandbytes computes it.
template <QuantFormat Format>
std::vector<float> dequantize_4bit(const QuantizedBlocks& q) {
  validate(q);
  std::vector<float> out(q.numel);
  dequantize_range<Format>(q, 0, out);
  return out;
}

// The compile-time face of the above: format and blocksize fixed by the type.
template <class Format, int BlockSize = 64>
struct Quantizer {
  static_assert(QuantFormat<Format>,
                "Quantizer<Format, BlockSize>: Format is not a 4-bit format (vidlora::quant::QuantFormat: a tag "
                "like NF4 or FP4 with a name and 16 code values)");
  static_assert(valid_blocksize(BlockSize),
                "Quantizer<Format, BlockSize>: BlockSize must be a power of two in 32..4096");
  using format = Format;
  static constexpr int blocksize = BlockSize;

  static QuantizedBlocks quantize(std::span<const float> values, bool double_quant = false) {
    return quantize_4bit<Format>(values, BlockSize, double_quant);
  }
  static std::vector<float> dequantize(const QuantizedBlocks& q) {
    require(q.blocksize == BlockSize, "Quantizer<{}, {}>: blocks were quantized with blocksize {}", Format::name,
            BlockSize, q.blocksize);
    return dequantize_4bit<Format>(q);
  }
};

}  // namespace vidlora::quant

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using quant::Quantizer;
}  // namespace vidlora
