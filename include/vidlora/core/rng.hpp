#pragma once
// Counter-based RNG (Philox4x32-10, Salmon et al. 2011): the value at (seed, stream, offset) is a
// pure function, so the CPU reference and a CUDA kernel draw the same dropout mask for the same
// seed no matter how the work is split across threads.

#include <cstdint>

#include <vidlora/core/portability.hpp>

namespace vidlora {

struct Philox4x32Result {
  std::uint32_t v[4];
};

// One Philox4x32-10 block: 4 random 32-bit words for a 128-bit counter under a 64-bit key.
VIDLORA_HOST_DEVICE inline Philox4x32Result philox4x32_10(std::uint32_t c0, std::uint32_t c1, std::uint32_t c2,
                                                          std::uint32_t c3, std::uint32_t k0, std::uint32_t k1) {
  constexpr std::uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
  constexpr std::uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = static_cast<std::uint64_t>(kMul0) * c0;
    const std::uint64_t p1 = static_cast<std::uint64_t>(kMul1) * c2;
    const std::uint32_t hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    const std::uint32_t hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    const std::uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return {{c0, c1, c2, c3}};
}

// Words 4·block .. 4·block + 3 of stream `stream` under `seed`: one Philox call (what a kernel that handles
// four consecutive offsets per thread computes once).
VIDLORA_HOST_DEVICE inline Philox4x32Result random_block(std::uint64_t seed, std::uint64_t stream,
                                                         std::uint64_t block) {
  return philox4x32_10(static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
                       static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32),
                       static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32));
}

// The 32-bit word at position `offset` of stream `stream` under `seed`.
VIDLORA_HOST_DEVICE inline std::uint32_t random_u32(std::uint64_t seed, std::uint64_t stream, std::uint64_t offset) {
  return random_block(seed, stream, offset >> 2).v[offset & 3u];
}

// A word's uniform value in [0, 1): its top 24 bits (exactly representable in float).
VIDLORA_HOST_DEVICE inline float uniform_from_u32(std::uint32_t word) {
  return static_cast<float>(word >> 8) * (1.0f / 16777216.0f);
}

// Uniform in [0, 1) with 24 random bits (exactly representable in float).
VIDLORA_HOST_DEVICE inline float random_uniform(std::uint64_t seed, std::uint64_t stream, std::uint64_t offset) {
  return uniform_from_u32(random_u32(seed, stream, offset));
}

// Uniform in [0, 1) with 53 random bits, from two consecutive words.
VIDLORA_HOST_DEVICE inline double random_uniform_double(std::uint64_t seed, std::uint64_t stream,
                                                        std::uint64_t offset) {
  const std::uint64_t hi = random_u32(seed, stream, 2 * offset) >> 5;      // 27 bits
  const std::uint64_t lo = random_u32(seed, stream, 2 * offset + 1) >> 6;  // 26 bits
  return static_cast<double>((hi << 26) | lo) * (1.0 / 9007199254740992.0);
}

// Sequential convenience wrapper over the counter-based stream (host-side initialisation).
class CounterRng {
 public:
  VIDLORA_HOST_DEVICE explicit CounterRng(std::uint64_t seed, std::uint64_t stream = 0)
      : seed_(seed), stream_(stream) {}
  VIDLORA_HOST_DEVICE std::uint32_t next_u32() { return random_u32(seed_, stream_, offset_++); }
  VIDLORA_HOST_DEVICE double uniform() {  // [0, 1)
    const double u = random_uniform_double(seed_, stream_, double_offset_++);
    return u;
  }
  VIDLORA_HOST_DEVICE double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  VIDLORA_HOST_DEVICE std::uint64_t seed() const { return seed_; }
  VIDLORA_HOST_DEVICE std::uint64_t stream() const { return stream_; }

 private:
  std::uint64_t seed_;
  std::uint64_t stream_;
  std::uint64_t offset_ = 0;
  std::uint64_t double_offset_ = std::uint64_t{1} << 40;  // keeps doubles apart from the u32 words
};

}  // namespace vidlora
