#pragma once
// Inverted dropout for the LoRA branch, drawn from the counter-based RNG so that the CPU
// reference and a CUDA kernel produce the same mask for the same (seed, stream, offset).

#include <cstdint>

#include <vidlora/core/portability.hpp>
#include <vidlora/core/rng.hpp>

namespace vidlora::lora {

// The RNG stream of one layer's dropout at one training step; stream `layer << 32 | 0` is kept
// for the initialisation of lora_A, so masks start at step + 1.
VIDLORA_HOST_DEVICE inline std::uint64_t dropout_stream(std::uint32_t layer, std::uint64_t step) {
  return (static_cast<std::uint64_t>(layer) << 32) + 1u + (step & 0xFFFFFFFFu);
}

// The stream used to draw lora_A at construction.
VIDLORA_HOST_DEVICE inline std::uint64_t init_stream(std::uint32_t layer) {
  return static_cast<std::uint64_t>(layer) << 32;
}

// The factor element `offset` (row-major index into x [tokens, in]) is multiplied by:
// 0 with probability p, otherwise 1 / (1 - p). p must lie in [0, 1).
VIDLORA_HOST_DEVICE inline float dropout_scale(std::uint64_t seed, std::uint64_t stream, std::uint64_t offset,
                                               float p) {
  return random_uniform(seed, stream, offset) < p ? 0.0f : 1.0f / (1.0f - p);
}

// Which of offsets 4·block .. 4·block + 3 are kept (bit k set: offset 4·block + k kept), from one Philox call:
// the mask dropout_scale draws, packed so that a backward pass can reuse it instead of drawing it again.
VIDLORA_HOST_DEVICE inline std::uint8_t dropout_keep_bits4(std::uint64_t seed, std::uint64_t stream,
                                                           std::uint64_t block, float p) {
  const Philox4x32Result r = random_block(seed, stream, block);
  std::uint8_t bits = 0;
  for (int k = 0; k < 4; ++k) bits |= static_cast<std::uint8_t>(uniform_from_u32(r.v[k]) < p ? 0 : 1) << k;
  return bits;
}

// The factor of element k of a group of four under its keep bits: 0 or 1 / (1 - p), as dropout_scale.
VIDLORA_HOST_DEVICE inline float dropout_factor(std::uint8_t keep_bits, int k, float p) {
  return (keep_bits >> k) & 1u ? 1.0f / (1.0f - p) : 0.0f;
}

// dropout_keep_bits4 for blocks first_block .. first_block + count - 1 into bits[0 .. count) (host only: a CUDA
// thread computes its own block). The blocks are independent, so at -O3 the compiler overlaps or vectorises
// them: about 1.3 ns per element with SSE2 and 0.6 with -march=native, against about 13 for dropout_scale's
// one Philox block per element (benchmarks/bench_lora.cpp, dropout_mask/*).
inline void dropout_keep_bits4_blocks(std::uint64_t seed, std::uint64_t stream, std::uint64_t first_block,
                                      std::uint64_t count, float p, std::uint8_t* bits) {
  for (std::uint64_t q = 0; q < count; ++q) bits[q] = dropout_keep_bits4(seed, stream, first_block + q, p);
}

}  // namespace vidlora::lora
