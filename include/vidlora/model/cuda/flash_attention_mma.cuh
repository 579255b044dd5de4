#pragma once
// The causal GQA attention forward with its tiles in registers (FlashAttention-2's forward), for 16-bit operands on
// sm_80+ at head dims 64 and 128: model/cuda/flash_attention.cuh's contract (AttentionParams: visibility, scale 1/√d,
// out and lse, fp32 in and out) and its rounding points (Q, K, V rounded to bf16 / fp16 as they enter a tile, P as
// the softmax makes it; scores, softmax statistics and accumulators fp32; l sums P before it is rounded), without
// its shared-memory round trips: each warp owns 16 query rows and keeps their Q fragments, scores S, probabilities P
// and output accumulator O in registers as the mma.sync m16n8k16 fragments of the PTX ISA (the accumulator layout of
// S is the A-operand layout of P, so P never leaves the registers); only the K and V tiles go through shared memory,
// where the four warps of a block share them.
//
//   grid (query tiles of 64 rows, q heads), 128 threads; per key tile of 64: K, V → shared memory (16-bit pairs),
//   S = Q·Kᵀ (mma), scale and mask, the row max over the four lanes of a row (two shuffles), P = 2^(S − m) (the
//   scores in log2 units, as FlashAttention-2), O = O·α + P·V (mma); at the end the row sums over the four lanes,
//   out = O / l and lse = m·ln 2 + ln l.
//
// Sums run in a fixed order (no atomics): two runs give the same bits. Not the bits of the shared-memory kernels
// (other sum orders, exp2 against exp): the backward, which recomputes P from this lse, is checked against the CPU
// with the same tolerances. The body is written once per thread over a policy (`thread()`, `sync()`, `shfl_xor`,
// `mma`: the warp-wide product, `ldmatrix_x4`: the warp-wide fragment load), so a host test runs it on host threads
// with the fragment layouts written from the PTX ISA (tests/cuda_host/simt_block.hpp, ldmatrix_layout.hpp) against
// the CPU attention.
// fmt-free (nvcc compiles it).

#include <cmath>
#include <cstdint>
#include <string>

#include <vidlora/core/cuda/launch.cuh>
#include <vidlora/core/portability.hpp>
#include <vidlora/model/cuda/attention.cuh>
#include <vidlora/model/cuda/flash_operands.cuh>

namespace vidlora::model::cuda {

inline constexpr int kMmaWarps = 4;
inline constexpr int kMmaThreads = 32 * kMmaWarps;
inline constexpr int kMmaQueryRows = 16 * kMmaWarps;  // a block's query tile: 16 rows per warp
inline constexpr int kMmaKeys = 64;                   // a key tile

// The head dims the register-tile forward is compiled for (the decoders' 128, CLIP ViT-L/14's 64).
VIDLORA_HOST_DEVICE constexpr bool flash_mma_head_dim(std::int64_t d) { return d == 64 || d == 128; }

// The keys of a tile each lane of a quad reads (MmaKeyTiles::key_flags): lane t of a quad holds S's columns
// 8n + 2t + b (n < 8, b < 2) of a key tile, so one 16-bit word of flags per t, bit 2n + b.
inline constexpr int kMmaKeyFlagWords = 4;

// Shared memory at head dim D: the K and V tiles, kMmaKeys rows of D 16-bit values as 32-bit words of two, each row
// 4 words longer than its data (a row is then 4 banks from the next: the 8 rows of 16 bytes that an ldmatrix matrix
// reads fall on 32 different banks), and the tile's key flags (inside the sequence and not masked), a word per lane
// of a quad (kMmaKeyFlagWords; the size stays a multiple of 16 bytes, so a second stage is 16-byte aligned).
template <int D>
struct FlashMmaSmem {
  static constexpr int row_words = D / 2 + 4;
  static constexpr int tile_words = kMmaKeys * row_words;
  static_assert(row_words % 4 == 0 && row_words % 32 == 4, "FlashMmaSmem: 16-byte rows 4 banks apart (ldmatrix)");
  static_assert(kMmaKeys == 16 * kMmaKeyFlagWords, "FlashMmaSmem: 16 key flags a word");
  static constexpr int words = 2 * tile_words + kMmaKeyFlagWords;
  static constexpr std::int64_t bytes = std::int64_t{words} * 4;
};

// Two floats as one register of two 16-bit operands, the first in the low half (the PTX ISA's element order),
// rounded to nearest even as the format rounds: on sm_80+ by one cvt.rn.{bf16x2,f16x2}.f32 (its first source goes to
// the upper half; the same bits as io/half.hpp's conversions for every value but NaN, whose payload may differ), else
// by the format's conversion.
template <class F>
VIDLORA_HOST_DEVICE inline std::uint32_t mma_pack(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  std::uint32_t r;
  if constexpr (F::kind == FlashOperands::BF16)
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#else
  return static_cast<std::uint32_t>(F::from_float(lo)) | (static_cast<std::uint32_t>(F::from_float(hi)) << 16);
#endif
}

// The fragments, with g = lane / 4 and t = lane % 4 (the PTX ISA's groupID and threadID_in_group), loaded from a
// tile in shared memory (rows of 16-bit pairs, `rw` words a row) by ldmatrix.sync.aligned.m8n8.x4.b16 (W::ldmatrix_x4):
// the warp loads four 8×8 matrices of 16-bit values; lane l gives the address of row l % 8 of matrix l / 8 (16 bytes,
// 16-byte aligned: rw·4 and the column offsets below are multiples of 16 bytes) and receives in register i two values
// of matrix i, row g, columns 2t and 2t + 1 (the low half first); with .trans the values at rows 2t and 2t + 1 of
// column g. One instruction for two B fragments or one A fragment, where 32-bit loads took four to eight (and a
// transposed B fragment four loads and the shifts that pick its halves). The lane's address: row `r` + its row in the
// matrix, word `w` of that row.
struct MmaLane {
  int g = 0, t = 0;

  VIDLORA_HOST_DEVICE int lane() const { return 4 * g + t; }
  VIDLORA_HOST_DEVICE int matrix() const { return lane() / 8; }
  VIDLORA_HOST_DEVICE const std::uint32_t* row_address(const std::uint32_t* tile, int rw, int r, int w) const {
    return tile + (r + lane() % 8) * rw + w;
  }

  // A operand (16 rows × 16 columns, k-step kk) of rows r0 + [0, 16) of a tile whose rows run along k: registers
  // (g, 2t), (g + 8, 2t), (g, 2t + 8), (g + 8, 2t + 8), two values each: matrices (rows r0, r0 + 8) × (columns 16·kk,
  // 16·kk + 8), rows first.
  VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
  template <class W>
  VIDLORA_HOST_DEVICE void a_of_tile(W& w, std::uint32_t (&a)[4], const std::uint32_t* tile, int rw, int r0,
                                     int kk) const {
    const int m = matrix();
    w.template ldmatrix_x4<false>(a, row_address(tile, rw, r0 + 8 * (m & 1), kk * 8 + 4 * (m >> 1)));
  }
  // The same from accumulators: C fragments of n-tiles 2kk and 2kk + 1 (rows g, g + 8; columns 2t, 2t + 1) are the
  // A fragment of k-step kk, rounded to 16 bits.
  template <class F, int N>
  VIDLORA_HOST_DEVICE void a_of_acc(std::uint32_t (&a)[4], const float (&c)[N][4], int kk) const {
    a[0] = mma_pack<F>(c[2 * kk][0], c[2 * kk][1]);
    a[1] = mma_pack<F>(c[2 * kk][2], c[2 * kk][3]);
    a[2] = mma_pack<F>(c[2 * kk + 1][0], c[2 * kk + 1][1]);
    a[3] = mma_pack<F>(c[2 * kk + 1][2], c[2 * kk + 1][3]);
  }
  // B operands (16 × 8) of n-tiles n0 and n0 + 8 (b0, b1) at k-step kk, k along the rows of a tile (B(k, n) =
  // tile[n0 + n][16·kk + k]): register i of each holds rows 2t, 2t + 1 (+ 8 for i = 1) of column g, i.e. two values of
  // tile row n0 + g (n0 + 8 + g for b1): matrices (rows n0, n0 + 8) × (columns 16·kk, 16·kk + 8), columns first.
  VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
  template <class W>
  VIDLORA_HOST_DEVICE void b_along_rows(W& w, std::uint32_t (&b0)[2], std::uint32_t (&b1)[2], const std::uint32_t* tile,
                                        int rw, int n0, int kk) const {
    const int m = matrix();
    b_pair<false>(w, b0, b1, row_address(tile, rw, n0 + 8 * (m >> 1), kk * 8 + 4 * (m & 1)));
  }
  // The same with k down the tile (B(k, n) = tile[16·kk + k][n0 + n]): the halves at column n0 + g of rows 2t, 2t + 1
  // (+ 8), which .trans gives: matrices (rows 16·kk, 16·kk + 8) × (columns n0, n0 + 8), rows first.
  VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
  template <class W>
  VIDLORA_HOST_DEVICE void b_down_rows(W& w, std::uint32_t (&b0)[2], std::uint32_t (&b1)[2], const std::uint32_t* tile,
                                       int rw, int n0, int kk) const {
    const int m = matrix();
    b_pair<true>(w, b0, b1, row_address(tile, rw, kk * 16 + 8 * (m & 1), n0 / 2 + 4 * (m >> 1)));
  }
  // Two B fragments from one ldmatrix.x4 at this lane's row: matrices 0 and 1 for b0, 2 and 3 for b1.
  VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
  template <bool Trans, class W>
  VIDLORA_HOST_DEVICE static void b_pair(W& w, std::uint32_t (&b0)[2], std::uint32_t (&b1)[2],
                                         const std::uint32_t* row) {
    std::uint32_t r[4];
    w.template ldmatrix_x4<Trans>(r, row);
    b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
  }
};

// One thread's place in a block: its index, warp and fragment position, and the two rows its accumulators hold
// (r0 + 16·warp + g and 8 more: queries, or the dk/dv kernel's keys), each inside [0, n) or not.
struct MmaThread {
  int tid = 0, warp = 0;
  MmaLane ln;
  std::int64_t row[2] = {0, 0};
  bool in[2] = {false, false};
  VIDLORA_HOST_DEVICE MmaThread(int thread, std::int64_t r0, std::int64_t n)
      : tid(thread),
        warp(thread / 32),
        ln{(thread % 32) / 4, thread % 4},
        row{r0 + warp * 16 + ln.g, r0 + warp * 16 + ln.g + 8},
        in{row[0] < n, row[1] < n} {}
};

// Two consecutive 16-bit values (the first at an even index of a 4-byte aligned tensor) as one register, the first
// in the low half.
VIDLORA_HOST_DEVICE inline std::uint32_t mma_pair_bits(const std::uint16_t* x) {
#if defined(__CUDA_ARCH__)
  return *reinterpret_cast<const std::uint32_t*>(x);
#else
  return static_cast<std::uint32_t>(x[0]) | (static_cast<std::uint32_t>(x[1]) << 16);
#endif
}

// Eight 16-bit values (16-byte aligned) as four pair words of a tile (16-byte aligned), or zeros when x is null.
VIDLORA_HOST_DEVICE inline void mma_copy_8(std::uint32_t* tile, const std::uint16_t* x) {
#if defined(__CUDA_ARCH__)
  *reinterpret_cast<uint4*>(tile) = x ? *reinterpret_cast<const uint4*>(x) : make_uint4(0u, 0u, 0u, 0u);
#else
  for (int i = 0; i < 4; ++i) tile[i] = x ? mma_pair_bits(x + 2 * i) : 0u;
#endif
}

// mma_copy_8 started and not waited for: on sm_80+ one cp.async of 16 bytes (zeros when !valid: nothing is read from
// x, which must still be a global address), finished by mma_async_wait; elsewhere (and on the host) done here.
VIDLORA_HOST_DEVICE inline void mma_copy_8_async(std::uint32_t* tile, const std::uint16_t* x, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const auto dst = static_cast<unsigned>(__cvta_generic_to_shared(tile));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(x), "r"(valid ? 16 : 0) : "memory");
#elif defined(VIDLORA_EMULATED_CP_ASYNC_16)  // the CUDA emulation (tests/cuda_emu): in flight until its wait
  VIDLORA_EMULATED_CP_ASYNC_16(tile, x, valid);
#else
  mma_copy_8(tile, valid ? x : nullptr);
#endif
}
// The copies started since the last commit, as one group.
VIDLORA_HOST_DEVICE inline void mma_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#elif defined(VIDLORA_EMULATED_CP_ASYNC_COMMIT)
  VIDLORA_EMULATED_CP_ASYNC_COMMIT();
#endif
}
// Waits until at most N groups of this thread's copies are in flight (the block's barrier then publishes them).
template <int N>
VIDLORA_HOST_DEVICE inline void mma_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#elif defined(VIDLORA_EMULATED_CP_ASYNC_WAIT)
  VIDLORA_EMULATED_CP_ASYNC_WAIT(N);
#endif
}

// Rows [r0, r0 + 64) of head `head` of a [n, heads·D] tensor into a tile of 16-bit pairs (zeros past row n), by the
// block's threads: from its 16-bit patterns x16 when given (AttentionParams::q16 …: eight values a thread a step, as
// they are), else from the fp32 x, rounded here (consecutive threads on consecutive words).
// Async: the 16-bit copies as cp.async (mma_copy_8_async), for the caller to commit and wait for; fp32 inputs are
// always loaded here.
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <int D, class F, bool Async = false>
VIDLORA_HOST_DEVICE void mma_load_tile(int tid, std::uint32_t* tile, const float* x, const std::uint16_t* x16,
                                       std::int64_t r0, std::int64_t n, std::int64_t heads, std::int64_t head) {
  constexpr int rw = FlashMmaSmem<D>::row_words;
  if (x16) {
    constexpr int groups = D / 8;  // of eight values a row
    for (int e = tid; e < kMmaKeys * groups; e += kMmaThreads) {
      const int r = e / groups, g = e % groups;
      const std::int64_t row = r0 + r;
      if constexpr (Async)
        mma_copy_8_async(tile + r * rw + 4 * g, row < n ? x16 + row * heads * D + head * D + 8 * g : x16, row < n);
      else
        mma_copy_8(tile + r * rw + 4 * g, row < n ? x16 + row * heads * D + head * D + 8 * g : nullptr);
    }
    return;
  }
  for (int e = tid; e < kMmaKeys * (D / 2); e += kMmaThreads) {
    const int r = e / (D / 2), cw = e % (D / 2);
    const std::int64_t row = r0 + r, at = row * heads * D + head * D + 2 * cw;
    tile[r * rw + cw] = row < n ? mma_pack<F>(x[at], x[at + 1]) : 0u;
  }
}

// The A fragments of a warp's 16 rows of a [n, heads·D] tensor for every k-step, from global memory (zeros past row
// n): Q in the forward, Q and dO in the backward's dq. From its 16-bit patterns x16 when given, else from the fp32 x.
template <int D, class F>
VIDLORA_HOST_DEVICE void mma_rows_to_a(std::uint32_t (&a)[D / 16][4], const float* x, const std::uint16_t* x16,
                                       const MmaThread& th, std::int64_t heads, std::int64_t head) {
  VIDLORA_UNROLL
  for (int kk = 0; kk < D / 16; ++kk) {
    const int c = kk * 16 + 2 * th.ln.t;
    VIDLORA_UNROLL
    for (int r = 0; r < 2; ++r) {
      const std::int64_t at = (th.in[r] ? th.row[r] : 0) * heads * D + head * D;
      if (x16) {
        a[kk][r] = th.in[r] ? mma_pair_bits(x16 + at + c) : 0u;
        a[kk][r + 2] = th.in[r] ? mma_pair_bits(x16 + at + c + 8) : 0u;
      } else {
        a[kk][r] = th.in[r] ? mma_pack<F>(x[at + c], x[at + c + 1]) : 0u;
        a[kk][r + 2] = th.in[r] ? mma_pack<F>(x[at + c + 8], x[at + c + 9]) : 0u;
      }
    }
  }
}

template <int N>
VIDLORA_HOST_DEVICE void mma_zero(float (&c)[N][4]) {
  VIDLORA_UNROLL
  for (int n = 0; n < N; ++n) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.0f;
}

inline constexpr double kLog2e = 1.4426950408889634;

// 1/√d, and the same in log2 units (exp2f's exponents); an lse in log2 units.
VIDLORA_HOST_DEVICE inline float mma_scale(int d) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
}
VIDLORA_HOST_DEVICE inline float mma_scale_log2(int d) {
  return static_cast<float>(kLog2e / std::sqrt(static_cast<double>(d)));
}
VIDLORA_HOST_DEVICE inline float mma_lse_log2(float lse) {
  return lse == -INFINITY ? -INFINITY : lse * static_cast<float>(kLog2e);
}

// Which keys of a tile a thread's two query rows see, read once per tile: the tile's flags of the lane's columns
// (bit 2n + b for column 8n + 2t + b: inside the sequence and not masked) and, per row, the last column it sees
// (causality) less the lane's first column 2t (-1 - 2t for a row outside the sequence), so that the test of
// accumulator element (n, e) compares with constants once the loops are unrolled.
struct MmaVisibleKeys {
  std::uint32_t flags = 0;
  int reach[2] = {-1, -1};
  VIDLORA_HOST_DEVICE bool operator()(int n, int e) const {
    const int b = 2 * n + (e & 1);
    return ((flags >> b) & 1u) != 0u && 8 * n + (e & 1) <= reach[e / 2];
  }
};

// Which queries of a query tile (rows i0 + [0, 64)) the dk/dv kernel's thread's two keys are seen by, per query tile:
// per key the first column that sees it (causality: q_offset + i >= key; 65 for a key outside the sequence or masked)
// and the columns inside the sequence (below `end`), both less the lane's first column 2t, so that the test of
// accumulator element (n, e) (column 8n + 2t + (e & 1), key e / 2) compares with constants once the loops are
// unrolled.
struct MmaVisibleQueries {
  int first[2] = {kMmaQueryRows + 1, kMmaQueryRows + 1};
  int end = 0;
  // What stays the same over the query tiles: per key the first query that sees it and the queries' end, less 2t.
  struct Keys {
    std::int64_t first[2];
    std::int64_t end;
  };
  VIDLORA_HOST_DEVICE static Keys keys(const AttentionParams& p, const MmaThread& th, const bool (&key_ok)[2]) {
    Keys k;
    VIDLORA_UNROLL
    for (int r = 0; r < 2; ++r) k.first[r] = key_ok[r] ? th.row[r] - p.q_offset - 2 * th.ln.t : p.tq;
    k.end = p.tq - 2 * th.ln.t;
    return k;
  }
  VIDLORA_HOST_DEVICE static MmaVisibleQueries of(const Keys& k, std::int64_t i0) {
    const auto clamp = [](std::int64_t x) {
      return x < -8 ? -8 : x > kMmaQueryRows ? kMmaQueryRows + 1 : static_cast<int>(x);
    };
    MmaVisibleQueries v;
    v.end = clamp(k.end - i0);
    VIDLORA_UNROLL
    for (int r = 0; r < 2; ++r) v.first[r] = clamp(k.first[r] - i0);
    return v;
  }
  VIDLORA_HOST_DEVICE bool operator()(int n, int e) const {
    const int c = 8 * n + (e & 1);
    return c >= first[e / 2] && c < end;
  }
};

// The forward's and the dq kernel's shared memory (FlashMmaSmem<D>): a key tile's K and V as 16-bit pair tiles and
// its key flags (kMmaKeyFlagWords).
template <int D>
struct MmaKeyTiles {
  std::uint32_t* k;
  std::uint32_t* v;
  std::uint32_t* key_flags;
  VIDLORA_HOST_DEVICE explicit MmaKeyTiles(std::uint32_t* smem)
      : k(smem), v(smem + FlashMmaSmem<D>::tile_words), key_flags(v + FlashMmaSmem<D>::tile_words) {}
  // Keys [k0, k0 + 64) of kv head `kvh` (zeros past tk); the caller's barrier publishes them (Async: the 16-bit copies
  // as cp.async, which the caller commits and waits for before it). Threads 0-3 write the key flags of lane t = tid
  // of a quad.
  template <class F, bool Async = false>
  VIDLORA_HOST_DEVICE void load(int tid, const AttentionParams& p, std::int64_t k0, std::int64_t kvh) const {
    mma_load_tile<D, F, Async>(tid, k, p.k, p.k16, k0, p.tk, p.kv_heads, kvh);
    mma_load_tile<D, F, Async>(tid, v, p.v, p.v16, k0, p.tk, p.kv_heads, kvh);
    if (tid < kMmaKeyFlagWords) {
      std::uint32_t flags = 0;
      VIDLORA_UNROLL
      for (int b = 0; b < 16; ++b) {
        const std::int64_t j = k0 + 8 * (b / 2) + 2 * tid + (b & 1);
        if (j < p.tk && (p.key_mask == nullptr || p.key_mask[j] != 0)) flags |= 1u << b;
      }
      key_flags[tid] = flags;
    }
  }
  // What the thread's rows see of the tile at k0 (after the barrier that publishes it).
  VIDLORA_HOST_DEVICE MmaVisibleKeys visible(const AttentionParams& p, const MmaThread& th, std::int64_t k0) const {
    MmaVisibleKeys v;
    v.flags = key_flags[th.ln.t];
    VIDLORA_UNROLL
    for (int r = 0; r < 2; ++r) {
      const std::int64_t last = p.q_offset + th.row[r] - k0;  // the last column row r sees
      const int clamped = last < 0 ? -1 : last >= kMmaKeys ? kMmaKeys - 1 : static_cast<int>(last);
      v.reach[r] = (th.in[r] ? clamped : -1) - 2 * th.ln.t;
    }
    return v;
  }
};

// The key tiles a forward or dq block walks, in Stages sets of FlashMmaSmem<D>::words: one (each tile loaded, then
// used), or two (the next tile's copy in flight while the current one is used: cp.async from 16-bit inputs on sm_80+,
// FlashAttentionOptions::pipelined). Per key tile, in order: next(...) gives the tile, published to the block by its
// barrier. With one set the caller's barrier after the tile's use (needs_release) frees it for the next load; with
// two, next's own barrier does: every thread is past the tile before this one when it starts the next copy into that
// tile's set.
template <int D, int Stages>
struct MmaKeyStages {
  static_assert(Stages == 1 || Stages == 2, "MmaKeyStages: one or two stages");
  std::uint32_t* smem;
  int kt = 0;
  VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
  template <class F, class W>
  VIDLORA_HOST_DEVICE MmaKeyTiles<D> next(W& w, int tid, const AttentionParams& p, std::int64_t k0,
                                          std::int64_t key_end, std::int64_t kvh) {
    constexpr int words = FlashMmaSmem<D>::words;
    const MmaKeyTiles<D> cur(smem + (Stages == 2 ? (kt & 1) : 0) * words);
    if constexpr (Stages == 1) {
      cur.template load<F>(tid, p, k0, kvh);
      w.sync();
    } else {
      if (kt == 0) {
        cur.template load<F, true>(tid, p, k0, kvh);
        mma_async_commit();
      }
      mma_async_wait<0>();            // this thread's copies of this tile are done
      w.sync();                       // ... and everyone's; every thread is done with the tile before this one
      if (k0 + kMmaKeys < key_end) {  // the next tile into the other set (the tile before this one's), in flight
        const MmaKeyTiles<D> after(smem + ((kt + 1) & 1) * words);
        after.template load<F, true>(tid, p, k0 + kMmaKeys, kvh);
        mma_async_commit();
      }
    }
    ++kt;
    return cur;
  }
  // Whether the caller must put a barrier after a tile's use before the next next(): with one set only.
  static constexpr bool needs_release = Stages == 1;
};

// c[n] += a·B at k-step kk for the N n-tiles of a tile whose rows run along k (B(k, n) = tile[8n + n'][16·kk + k]),
// a the warp's A fragment of that k-step, the n-tiles in pairs (one ldmatrix each).
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <int N, class W>
VIDLORA_HOST_DEVICE void mma_rows_step(W& w, const MmaLane& ln, float (&c)[N][4], const std::uint32_t (&a)[4],
                                       const std::uint32_t* tile, int rw, int kk) {
  static_assert(N % 2 == 0, "mma_rows_step: n-tiles in pairs");
  VIDLORA_UNROLL
  for (int n = 0; n < N; n += 2) {
    std::uint32_t b0[2], b1[2];
    ln.b_along_rows(w, b0, b1, tile, rw, n * 8, kk);
    w.mma(c[n], a, b0);
    w.mma(c[n + 1], a, b1);
  }
}

// The same over every k-step, A's fragments for each in registers: S = Q·Kᵀ, dP = dO·Vᵀ. Each c[n] sums its k-steps
// in order.
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <int N, int KD, class W>
VIDLORA_HOST_DEVICE void mma_times_rows(W& w, const MmaLane& ln, float (&c)[N][4], const std::uint32_t (&a)[KD][4],
                                        const std::uint32_t* tile, int rw) {
  VIDLORA_UNROLL
  for (int kk = 0; kk < KD; ++kk) mma_rows_step(w, ln, c, a[kk], tile, rw, kk);
}

// c[n] += A·B with A from accumulators x (n-tiles 2kk and 2kk + 1 are k-step kk, rounded to 16 bits) and B(k, n) =
// tile[16·kk + k][8n + n'], down the tile: O += P·V, dQ += dS·K, dV += Pᵀ·dO, dK += dSᵀ·Q. Each c[n] sums its k-steps
// in order.
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <class F, int N, int X, class W>
VIDLORA_HOST_DEVICE void mma_acc_times_down(W& w, const MmaLane& ln, float (&c)[N][4], const float (&x)[X][4],
                                            const std::uint32_t* tile, int rw) {
  static_assert(N % 2 == 0, "mma_acc_times_down: n-tiles in pairs");
  VIDLORA_UNROLL
  for (int kk = 0; kk < X / 2; ++kk) {
    std::uint32_t a[4];
    ln.a_of_acc<F>(a, x, kk);
    VIDLORA_UNROLL
    for (int n = 0; n < N; n += 2) {
      std::uint32_t b0[2], b1[2];
      ln.b_down_rows(w, b0, b1, tile, rw, n * 8, kk);
      w.mma(c[n], a, b0);
      w.mma(c[n + 1], a, b1);
    }
  }
}

// The thread's two rows of accumulators c (th.row of [n, heads·D], head `head`) into `out`: added (+=), or divided by
// div[r] (the forward's l; 0 writes zeros). Rows outside [0, n) (th.in) are left alone.
template <int D>
VIDLORA_HOST_DEVICE void mma_store_rows(float* out, const float (&c)[D / 8][4], const MmaThread& th, std::int64_t heads,
                                        std::int64_t head, bool add, const float (&div)[2]) {
  VIDLORA_UNROLL
  for (int r = 0; r < 2; ++r) {
    if (!th.in[r]) continue;
    float* at = out + th.row[r] * heads * D + head * D + 2 * th.ln.t;
    VIDLORA_UNROLL
    for (int n = 0; n < D / 8; ++n) {
      VIDLORA_UNROLL
      for (int e = 0; e < 2; ++e) {
        const float v = c[n][2 * r + e];
        if (add)
          at[n * 8 + e] += v;
        else
          at[n * 8 + e] = div[r] > 0.0f ? v / div[r] : 0.0f;
      }
    }
  }
}

// The same rows divided by div[r] (0 writes zeros), rounded to F's 16 bits into out16 (the forward's out16).
template <int D, class F>
VIDLORA_HOST_DEVICE void mma_store_rows_16bit(std::uint16_t* out16, const float (&c)[D / 8][4], const MmaThread& th,
                                              std::int64_t heads, std::int64_t head, const float (&div)[2]) {
  VIDLORA_UNROLL
  for (int r = 0; r < 2; ++r) {
    if (!th.in[r]) continue;
    std::uint16_t* at = out16 + th.row[r] * heads * D + head * D + 2 * th.ln.t;
    VIDLORA_UNROLL
    for (int n = 0; n < D / 8; ++n) {
      VIDLORA_UNROLL
      for (int e = 0; e < 2; ++e) at[n * 8 + e] = F::from_float(div[r] > 0.0f ? c[n][2 * r + e] / div[r] : 0.0f);
    }
  }
}

// The forward of query tile `qt` (rows [64·qt, 64·qt + 64)), query head `h`. `W` provides: `format` (a
// FlashOperandFormat of bf16 or fp16); int thread() (0..127; lane = thread % 32, warp = thread / 32); void sync() (the
// block's barrier); float shfl_xor(float v, int lane_mask) (the warp's butterfly exchange); void mma(float (&c)[4],
// const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) (c += a·b for the warp's 16×16 A and 16×8 B fragments,
// fp32 accumulation: mma.sync.aligned.m16n8k16.row.col). With g = lane / 4 and t = lane % 4 a lane holds: of A (row
// r, column k) rows g and g + 8, columns 2t, 2t + 1 and 8 more (registers: (g, 2t), (g + 8, 2t), (g, 2t + 8),
// (g + 8, 2t + 8), two values each); of B (k, n) rows 2t, 2t + 1 and 8 more of column g; of C rows g and g + 8,
// columns 2t and 2t + 1; template <bool Trans> void ldmatrix_x4(std::uint32_t (&r)[4], const std::uint32_t* row) (the
// warp's ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16 from this lane's row address, MmaLane). `smem` holds
// FlashMmaSmem<D>::words.
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <int D, int Stages = 1, class W>
VIDLORA_HOST_DEVICE void flash_mma_forward_block(W& w, const AttentionParams& p, std::int64_t qt, std::int64_t h,
                                                 std::uint32_t* smem) {
  using F = typename W::format;
  static_assert(F::bytes == 2, "flash_mma_forward_block: 16-bit operands (bf16 or fp16)");
  static_assert(flash_mma_head_dim(D), "flash_mma_forward_block: head dim 64 or 128");
  constexpr int kd = D / 16;        // k-steps of S = Q·Kᵀ over the head dim
  constexpr int ns = kMmaKeys / 8;  // S's n-tiles of 8 keys
  constexpr int no = D / 8;         // O's n-tiles of 8 columns
  constexpr int rw = FlashMmaSmem<D>::row_words;
  MmaKeyStages<D, Stages> stages{smem};
  const std::int64_t i0 = qt * kMmaQueryRows, kvh = kv_head_of(p, h);
  const MmaThread th(w.thread(), i0, p.tq);  // its rows: two query rows
  const MmaLane& ln = th.ln;
  std::uint32_t qf[kd][4];  // Q's fragments for every k-step, once
  mma_rows_to_a<D, F>(qf, p.q, p.q16, th, p.q_heads, h);
  float o[no][4];
  mma_zero(o);
  float m[2] = {-INFINITY, -INFINITY};  // the rows' running max score, in log2 units
  float l[2] = {0.0f, 0.0f};            // this lane's part of the rows' sums of P
  const float scale_log2 = mma_scale_log2(D);
  const std::int64_t key_end = flash_key_end(p, i0, kMmaQueryRows);
  for (std::int64_t k0 = 0; k0 < key_end; k0 += kMmaKeys) {
    const MmaKeyTiles<D> tiles = stages.template next<F>(w, th.tid, p, k0, key_end, kvh);
    float s[ns][4];  // S = Q·Kᵀ
    mma_zero(s);
    mma_times_rows(w, ln, s, qf, tiles.k, rw);
    // Scaled scores in log2 units (-inf where not visible) and the rows' max over the tile (the four lanes of a row
    // differ in t: lane bits 0 and 1).
    float mx[2] = {-INFINITY, -INFINITY};
    const MmaVisibleKeys sees = tiles.visible(p, th, k0);
    VIDLORA_UNROLL
    for (int n = 0; n < ns; ++n) {
      VIDLORA_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const float x = sees(n, e) ? s[n][e] * scale_log2 : -INFINITY;
        s[n][e] = x;
        mx[r] = x > mx[r] ? x : mx[r];
      }
    }
    float alpha[2];
    VIDLORA_UNROLL
    for (int r = 0; r < 2; ++r) {
      const float a = w.shfl_xor(mx[r], 1);
      mx[r] = a > mx[r] ? a : mx[r];
      const float b = w.shfl_xor(mx[r], 2);
      mx[r] = b > mx[r] ? b : mx[r];
      const float mn = m[r] > mx[r] ? m[r] : mx[r];
      alpha[r] = m[r] == -INFINITY ? 1.0f : exp2f(m[r] - mn);  // O and l are 0 until a key is visible
      m[r] = mn;
    }
    float sum[2] = {0.0f, 0.0f};
    VIDLORA_UNROLL
    for (int n = 0; n < ns; ++n) {
      VIDLORA_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        const float pv = s[n][e] == -INFINITY ? 0.0f : exp2f(s[n][e] - m[r]);
        s[n][e] = pv;
        sum[r] += pv;
      }
    }
    VIDLORA_UNROLL
    for (int r = 0; r < 2; ++r) l[r] = l[r] * alpha[r] + sum[r];
    VIDLORA_UNROLL
    for (int n = 0; n < no; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
    mma_acc_times_down<F>(w, ln, o, s, tiles.v, rw);  // O += P·V, P's A fragments from S's accumulators
    // every warp is done with K and V before the next tile overwrites them (two stages: next's barrier)
    if constexpr (MmaKeyStages<D, Stages>::needs_release) w.sync();
  }
  VIDLORA_UNROLL
  for (int r = 0; r < 2; ++r) {
    l[r] += w.shfl_xor(l[r], 1);
    l[r] += w.shfl_xor(l[r], 2);
  }
  mma_store_rows<D>(p.out, o, th, p.q_heads, h, /*add=*/false, l);
  if (p.out16) mma_store_rows_16bit<D, F>(p.out16, o, th, p.q_heads, h, l);
  VIDLORA_UNROLL
  for (int r = 0; r < 2; ++r)
    if (th.in[r] && ln.t == 0 && p.lse)
      p.lse[h * p.tq + th.row[r]] = l[r] > 0.0f ? m[r] * 0.6931471805599453f + logf(l[r]) : -INFINITY;
}

// The backward's probability and score gradient of one pair from its raw score s = q·k and dp = dO·v: P = exp(s/√d −
// lse) (0 where not visible or for a row that saw no key), dS = P·(dp − row_dot)/√d (attention_score_grad).
VIDLORA_HOST_DEVICE inline void mma_prob_and_grad(float& s, float& dp, bool visible, float lse2, float row_dot,
                                                  float scale_log2, float scale) {
  const float prob = visible && lse2 != -INFINITY ? exp2f(s * scale_log2 - lse2) : 0.0f;
  dp = prob != 0.0f ? attention_score_grad(prob, dp, row_dot, scale) : 0.0f;  // an Inf in a hidden pair stays out
  s = prob;
}

// Backward, dq, of query tile `qt`, query head `h`: dq += dS·K over the key tiles, with row_dot [q_heads, tq] given
// (Σ_c dO·O: flash_row_dot_kernel, from AttentionParams::forward_out) and the forward's lse. Per key tile: S = Q·Kᵀ
// and dP = dO·Vᵀ (Q and dO fragments in registers), P and dS in registers, dQ += dS·K. dq is added to p.dq once.
// Shared memory as the forward's (FlashMmaSmem<D>).
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <int D, int Stages = 1, class W>
VIDLORA_HOST_DEVICE void flash_mma_backward_dq_block(W& w, const AttentionParams& p, std::int64_t qt, std::int64_t h,
                                                     std::uint32_t* smem) {
  using F = typename W::format;
  static_assert(F::bytes == 2 && flash_mma_head_dim(D),
                "flash_mma_backward_dq_block: 16-bit operands, head dim 64 / 128");
  constexpr int kd = D / 16, ns = kMmaKeys / 8, no = D / 8;
  constexpr int rw = FlashMmaSmem<D>::row_words;
  MmaKeyStages<D, Stages> stages{smem};
  const std::int64_t i0 = qt * kMmaQueryRows, kvh = kv_head_of(p, h);
  const MmaThread th(w.thread(), i0, p.tq);  // its rows: two query rows
  const MmaLane& ln = th.ln;
  std::uint32_t qf[kd][4], df[kd][4];
  mma_rows_to_a<D, F>(qf, p.q, p.q16, th, p.q_heads, h);
  mma_rows_to_a<D, F>(df, p.d_out, p.d_out16, th, p.q_heads, h);
  float lse2[2], rd[2];
  VIDLORA_UNROLL
  for (int r = 0; r < 2; ++r) {
    lse2[r] = th.in[r] ? mma_lse_log2(p.lse[h * p.tq + th.row[r]]) : -INFINITY;
    rd[r] = th.in[r] ? p.row_dot[h * p.tq + th.row[r]] : 0.0f;
  }
  float dq[no][4];
  mma_zero(dq);
  const float scale = mma_scale(D), scale_log2 = mma_scale_log2(D);
  const std::int64_t key_end = flash_key_end(p, i0, kMmaQueryRows);
  for (std::int64_t k0 = 0; k0 < key_end; k0 += kMmaKeys) {
    const MmaKeyTiles<D> tiles = stages.template next<F>(w, th.tid, p, k0, key_end, kvh);
    float s[ns][4], dp[ns][4];  // S = Q·Kᵀ, dP = dO·Vᵀ
    mma_zero(s);
    mma_zero(dp);
    mma_times_rows(w, ln, s, qf, tiles.k, rw);
    mma_times_rows(w, ln, dp, df, tiles.v, rw);
    const MmaVisibleKeys sees = tiles.visible(p, th, k0);
    VIDLORA_UNROLL
    for (int n = 0; n < ns; ++n) {
      VIDLORA_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int r = e / 2;
        mma_prob_and_grad(s[n][e], dp[n][e], sees(n, e), lse2[r], rd[r], scale_log2, scale);
      }
    }
    mma_acc_times_down<F>(w, ln, dq, dp, tiles.k, rw);  // dQ += dS·K, dS's A fragments from dP's accumulators
    if constexpr (MmaKeyStages<D, Stages>::needs_release) w.sync();
  }
  mma_store_rows<D>(p.dq, dq, th, p.q_heads, h, /*add=*/true, {1.0f, 1.0f});
}

// Shared memory of the dk/dv kernel at head dim D: K and V (the block's 64 keys) as 16-bit pair tiles, then per stage
// a query tile's Q and dO (64 rows) as 16-bit pair tiles and its lse (log2 units) and row_dot. Two stages
// (FlashAttentionOptions::pipelined): 103 KiB at head dim 128, more than sm_86 / sm_89 give a block (99 KiB), and
// only one block of it on an A100's multiprocessor (dkv_stages decides).
template <int D, int Stages = 1>
struct FlashMmaDkvSmem {
  static_assert(Stages == 1 || Stages == 2, "FlashMmaDkvSmem: one or two stages");
  static constexpr int tile_words = FlashMmaSmem<D>::tile_words;
  static constexpr int stage_words = 2 * tile_words + 2 * kMmaQueryRows;
  static constexpr int words = 2 * tile_words + Stages * stage_words;
  static constexpr std::int64_t bytes = std::int64_t{words} * 4;
};

// A query tile of the dk/dv kernel in shared memory (a stage of FlashMmaDkvSmem): Q and dO as 16-bit pair tiles, lse
// in log2 units and row_dot as float bits.
template <int D>
struct MmaQueryTile {
  std::uint32_t* q;
  std::uint32_t* d_out;
  std::uint32_t* lse;
  std::uint32_t* row_dot;
  VIDLORA_HOST_DEVICE explicit MmaQueryTile(std::uint32_t* stage)
      : q(stage),
        d_out(stage + FlashMmaSmem<D>::tile_words),
        lse(stage + 2 * FlashMmaSmem<D>::tile_words),
        row_dot(lse + kMmaQueryRows) {}
  // Rows [i0, i0 + 64) of query head h (zeros past tq); the caller's barrier publishes them (Async: as cp.async,
  // which the caller commits and waits for before it).
  VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
  template <class F, bool Async = false>
  VIDLORA_HOST_DEVICE void load_tiles(int tid, const AttentionParams& p, std::int64_t i0, std::int64_t h) const {
    mma_load_tile<D, F, Async>(tid, q, p.q, p.q16, i0, p.tq, p.q_heads, h);
    mma_load_tile<D, F, Async>(tid, d_out, p.d_out, p.d_out16, i0, p.tq, p.q_heads, h);
  }
  // Row e's lse (log2 units; -inf past tq) and row_dot (0 past tq) as the tile holds them (float bits): thread e of the
  // block reads them (kMmaQueryRows <= kMmaThreads), and may store them later (put).
  struct RowStats {
    std::uint32_t lse = 0, row_dot = 0;
  };
  VIDLORA_HOST_DEVICE static RowStats row_stats(const AttentionParams& p, std::int64_t i0, std::int64_t h, int e) {
    const std::int64_t i = i0 + e;
    return {io::detail::float_bits(i < p.tq ? mma_lse_log2(p.lse[h * p.tq + i]) : -INFINITY),
            io::detail::float_bits(i < p.tq ? p.row_dot[h * p.tq + i] : 0.0f)};
  }
  VIDLORA_HOST_DEVICE void put(int e, const RowStats& r) const {
    lse[e] = r.lse;
    row_dot[e] = r.row_dot;
  }
};
static_assert(kMmaQueryRows <= kMmaThreads, "MmaQueryTile: one thread per query row's lse and row_dot");

// Backward, dk and dv, of key tile `kt` (keys [64·kt, 64·kt + 64)), kv head `kvh`: over the group's query heads and
// the query tiles that see the keys, each warp's 16 keys: Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ (K and V fragments from shared
// memory), Pᵀ and dSᵀ in registers, dV += Pᵀ·dO and dK += dSᵀ·Q; added to p.dk, p.dv once. Fixed order: heads, then
// query tiles. With two stages (FlashAttentionOptions::pipelined) the next query tile's copy (cp.async from the 16-bit
// inputs on sm_80+) is in flight while the current one is used, as MmaKeyStages does for the key tiles: the same
// arithmetic in the same order. `smem` holds FlashMmaDkvSmem<D, Stages>::words.
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <int D, int Stages = 1, class W>
VIDLORA_HOST_DEVICE void flash_mma_backward_dkv_block(W& w, const AttentionParams& p, std::int64_t kt, std::int64_t kvh,
                                                      std::uint32_t* smem) {
  using F = typename W::format;
  static_assert(F::bytes == 2 && flash_mma_head_dim(D),
                "flash_mma_backward_dkv_block: 16-bit operands, head dim 64 / 128");
  constexpr int kd = D / 16, nq = kMmaQueryRows / 8, no = D / 8;
  constexpr int rw = FlashMmaSmem<D>::row_words, tw = FlashMmaSmem<D>::tile_words;
  std::uint32_t* ks = smem;
  std::uint32_t* vs = smem + tw;
  const std::int64_t j0 = kt * kMmaKeys;
  const MmaThread th(w.thread(), j0, p.tk);  // its rows: two keys
  const MmaLane& ln = th.ln;
  const int tid = th.tid;
  bool key_ok[2];  // inside the sequence and not masked
  VIDLORA_UNROLL
  for (int r = 0; r < 2; ++r) key_ok[r] = th.in[r] && (p.key_mask == nullptr || p.key_mask[th.row[r]] != 0);
  const MmaVisibleQueries::Keys keys_seen = MmaVisibleQueries::keys(p, th, key_ok);
  mma_load_tile<D, F>(tid, ks, p.k, p.k16, j0, p.tk, p.kv_heads, kvh);
  mma_load_tile<D, F>(tid, vs, p.v, p.v16, j0, p.tk, p.kv_heads, kvh);
  float dk[no][4], dv[no][4];
  mma_zero(dk);
  mma_zero(dv);
  const float scale = mma_scale(D), scale_log2 = mma_scale_log2(D);
  const std::int64_t group = p.q_heads / p.kv_heads;
  const std::int64_t first_query = attention_first_query(p, j0), qt0 = first_query / kMmaQueryRows;
  // The work items in order: the group's query heads, and in each the query tiles that see the keys.
  const std::int64_t query_tiles = (p.tq + kMmaQueryRows - 1) / kMmaQueryRows;
  const std::int64_t per_head = query_tiles > qt0 ? query_tiles - qt0 : 0, items = group * per_head;
  const auto head_of = [&](std::int64_t item) { return kvh * group + item / per_head; };
  const auto rows_of = [&](std::int64_t item) { return (qt0 + item % per_head) * kMmaQueryRows; };
  const auto stage_of = [smem](std::int64_t item) {  // the stage's set an item's query tile goes to
    return MmaQueryTile<D>(smem + 2 * tw + (Stages == 2 ? (item & 1) : 0) * FlashMmaDkvSmem<D, Stages>::stage_words);
  };
  for (std::int64_t item = 0; item < items; ++item) {
    const std::int64_t i0 = rows_of(item);
    const MmaQueryTile<D> tile = stage_of(item);
    // Two stages: the next item's lse and row_dot, read into registers now and stored into its set after this item's
    // products (the set is free: every thread was done with it at this item's barrier), so the loads' latency hides.
    typename MmaQueryTile<D>::RowStats next_stats;
    const bool next_stats_here = Stages == 2 && item + 1 < items && tid < kMmaQueryRows;
    if constexpr (Stages == 1) {
      tile.template load_tiles<F>(tid, p, i0, head_of(item));
      if (tid < kMmaQueryRows) tile.put(tid, MmaQueryTile<D>::row_stats(p, i0, head_of(item), tid));
      w.sync();
    } else {
      if (item == 0) {
        tile.template load_tiles<F, true>(tid, p, i0, head_of(item));
        mma_async_commit();
        if (tid < kMmaQueryRows) tile.put(tid, MmaQueryTile<D>::row_stats(p, i0, head_of(item), tid));
      }
      mma_async_wait<0>();     // this thread's copies of this tile are done
      w.sync();                // ... and everyone's; every thread is done with the item before this one
      if (item + 1 < items) {  // the next item's tiles into the other set (the item before this one's), in flight
        stage_of(item + 1).template load_tiles<F, true>(tid, p, rows_of(item + 1), head_of(item + 1));
        mma_async_commit();
        if (next_stats_here) next_stats = MmaQueryTile<D>::row_stats(p, rows_of(item + 1), head_of(item + 1), tid);
      }
    }
    const std::uint32_t* qs = tile.q;
    const std::uint32_t* dos = tile.d_out;
    const std::uint32_t* lse_s = tile.lse;
    const std::uint32_t* rd_s = tile.row_dot;
    float st[nq][4], dpt[nq][4];  // Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ: rows the warp's keys, columns the tile's queries
    mma_zero(st);
    mma_zero(dpt);
    VIDLORA_UNROLL
    for (int kk = 0; kk < kd; ++kk) {
      std::uint32_t a[4];
      ln.a_of_tile(w, a, ks, rw, th.warp * 16, kk);
      mma_rows_step(w, ln, st, a, qs, rw, kk);
      ln.a_of_tile(w, a, vs, rw, th.warp * 16, kk);
      mma_rows_step(w, ln, dpt, a, dos, rw, kk);
    }
    const MmaVisibleQueries seen = MmaVisibleQueries::of(keys_seen, i0);
    VIDLORA_UNROLL
    for (int n = 0; n < nq; ++n) {
      VIDLORA_UNROLL
      for (int e = 0; e < 4; ++e) {
        const int c = n * 8 + 2 * ln.t + (e & 1);
        mma_prob_and_grad(st[n][e], dpt[n][e], seen(n, e), io::detail::bits_float(lse_s[c]),
                          io::detail::bits_float(rd_s[c]), scale_log2, scale);
      }
    }
    mma_acc_times_down<F>(w, ln, dv, st, dos, rw);                 // dV += Pᵀ·dO
    mma_acc_times_down<F>(w, ln, dk, dpt, qs, rw);                 // dK += dSᵀ·Q
    if (next_stats_here) stage_of(item + 1).put(tid, next_stats);  // published by the next item's barrier
    // before the next query tile overwrites Q, dO, lse and row_dot (two stages: the next item's barrier)
    if constexpr (Stages == 1) w.sync();
  }
  mma_store_rows<D>(p.dk, dk, th, p.kv_heads, kvh, /*add=*/true, {1.0f, 1.0f});
  mma_store_rows<D>(p.dv, dv, th, p.kv_heads, kvh, /*add=*/true, {1.0f, 1.0f});
}

}  // namespace vidlora::model::cuda

#if VIDLORA_KERNELS
#include <cstdlib>

#include <vidlora/core/cuda/status.cuh>

namespace vidlora::model::cuda {
namespace detail {

template <FlashOperands K>
struct FlashMmaDeviceWarp {
  using format = FlashOperandFormat<K>;
  __device__ int thread() const { return static_cast<int>(threadIdx.x); }
  __device__ void sync() { __syncthreads(); }
  __device__ float shfl_xor(float v, int lane_mask) { return __shfl_xor_sync(0xffffffffu, v, lane_mask); }
  __device__ void mma(float (&c)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if constexpr (K == FlashOperands::BF16)
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
          "{%0, %1, %2, %3};\n"
          : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
      asm volatile(
          "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
          "{%0, %1, %2, %3};\n"
          : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(VIDLORA_EMULATED_MMA_M16N8K16)
    VIDLORA_EMULATED_MMA_M16N8K16(c, a, b, K == FlashOperands::BF16);  // the CUDA emulation's warp (tests/cuda_emu)
#else
    (void)c, (void)a, (void)b;
    __trap();  // never launched: flash_mma_takes checks the kernel's architecture
#endif
  }
  template <bool Trans>
  __device__ void ldmatrix_x4(std::uint32_t (&r)[4], const std::uint32_t* row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const auto at = static_cast<unsigned>(__cvta_generic_to_shared(row));
    if constexpr (Trans)
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                   : "r"(at)
                   : "memory");
    else
      asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                   : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                   : "r"(at)
                   : "memory");
#elif defined(VIDLORA_EMULATED_LDMATRIX_X4)
    VIDLORA_EMULATED_LDMATRIX_X4(r, row, Trans);                       // the CUDA emulation's warp (tests/cuda_emu)
#else
    (void)r, (void)row;
    __trap();  // never launched, as mma
#endif
  }
};

// body(smem) over the key-tile sets of a forward or dq block: one (static shared memory) or two (68.5 KiB at head dim
// 128: dynamic).
template <int D, int Stages, class Body>
__device__ void with_key_stages(Body&& body) {
  if constexpr (Stages == 1) {
    VIDLORA_STATIC_SHARED(16, std::uint32_t, smem, [FlashMmaSmem<D>::words]);
    body(smem);
  } else {
    VIDLORA_DYNAMIC_SHARED(16, std::uint32_t, flash_mma_smem);
    body(flash_mma_smem);
  }
}

template <int D, FlashOperands K, int Stages>
__global__ void __launch_bounds__(kMmaThreads) flash_mma_forward_kernel(AttentionParams p) {
  FlashMmaDeviceWarp<K> w;
  with_key_stages<D, Stages>(
      [&](std::uint32_t* smem) { flash_mma_forward_block<D, Stages>(w, p, blockIdx.x, blockIdx.y, smem); });
}

template <int D, FlashOperands K, int Stages>
__global__ void __launch_bounds__(kMmaThreads) flash_mma_backward_dq_kernel(AttentionParams p) {
  FlashMmaDeviceWarp<K> w;
  with_key_stages<D, Stages>(
      [&](std::uint32_t* smem) { flash_mma_backward_dq_block<D, Stages>(w, p, blockIdx.x, blockIdx.y, smem); });
}

template <int D, FlashOperands K, int Stages>
__global__ void __launch_bounds__(kMmaThreads) flash_mma_backward_dkv_kernel(AttentionParams p) {
  VIDLORA_DYNAMIC_SHARED(16, std::uint32_t, flash_mma_smem);
  FlashMmaDeviceWarp<K> w;
  flash_mma_backward_dkv_block<D, Stages>(w, p, blockIdx.x, blockIdx.y, flash_mma_smem);
}

// Whether the kernels were compiled for sm_80+ (mma.sync m16n8k16 with bf16 / fp16 operands): a binary built for an
// older architecture and JIT-compiled for this one runs the older architecture's code.
template <int D, FlashOperands K>
bool flash_mma_kernel_built() {
  static const bool built = [] {
    cudaFuncAttributes a{};
    return cudaFuncGetAttributes(&a, flash_mma_forward_kernel<D, K, 1>) == cudaSuccess && a.ptxVersion >= 80;
  }();
  return built;
}

// A launch of `kernel` with `bytes` of dynamic shared memory: the attribute above 48 KiB, set per launch (it belongs
// to the device current at the call). The launch itself is the caller's, so that the kernel keeps its name in the
// emulation's launch report.
template <class Kernel>
void allow_dynamic_shared(Kernel kernel, int bytes) {
  if (bytes > 48 * 1024)
    VIDLORA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
}

// The blocks of `kernel` (kMmaThreads threads, `bytes` of dynamic shared memory) a multiprocessor of the current
// device holds at once: 0 where it cannot run one.
template <class Kernel>
int resident_blocks(Kernel kernel, int bytes) {
  int device = 0, optin = 0, blocks = 0;
  VIDLORA_CUDA_CHECK(cudaGetDevice(&device));
  VIDLORA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (bytes > optin) return 0;
  allow_dynamic_shared(kernel, bytes);
  VIDLORA_CUDA_CHECK(
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, kMmaThreads, static_cast<std::size_t>(bytes)));
  return blocks;
}

// The dk/dv kernel's query-tile stages when FlashAttentionOptions::pipelined asks for two: two where the card gives a
// block their shared memory and they leave as many blocks resident on a multiprocessor as one stage (by ptxas's 255
// registers and the cards' shared memory, not yet run: H100 / H200;
// at head dim 128 not the A100, where 103 KiB a block leave room for one instead of two, nor sm_86 / sm_89, which
// give a block 99 KiB), else one.
template <int D, FlashOperands K>
int dkv_stages(bool pipelined) {
  if (!pipelined) return 1;
  const int two =
      resident_blocks(flash_mma_backward_dkv_kernel<D, K, 2>, static_cast<int>(FlashMmaDkvSmem<D, 2>::bytes));
  const int one = resident_blocks(flash_mma_backward_dkv_kernel<D, K, 1>, static_cast<int>(FlashMmaDkvSmem<D>::bytes));
  return two > 0 && two >= one ? 2 : 1;
}

template <int D, FlashOperands K>
void launch_flash_mma_as(int which, const AttentionParams& p, cudaStream_t stream, bool pipelined) {
  const auto query_tiles = static_cast<unsigned>((p.tq + kMmaQueryRows - 1) / kMmaQueryRows);
  const dim3 query_grid(query_tiles, static_cast<unsigned>(p.q_heads));
  constexpr auto two_stages = static_cast<int>(2 * FlashMmaSmem<D>::bytes);
  if (which == 0) {
    if (pipelined) {
      allow_dynamic_shared(flash_mma_forward_kernel<D, K, 2>, two_stages);
      VIDLORA_LAUNCH(query_grid, kMmaThreads, static_cast<std::size_t>(two_stages), stream,
                     flash_mma_forward_kernel<D, K, 2>)
      (p);
    } else {
      VIDLORA_LAUNCH(query_grid, kMmaThreads, 0, stream, flash_mma_forward_kernel<D, K, 1>)(p);
    }
    VIDLORA_CUDA_CHECK_LAUNCH("cuda::flash_mma_forward");
  } else if (which == 1) {
    if (pipelined) {
      allow_dynamic_shared(flash_mma_backward_dq_kernel<D, K, 2>, two_stages);
      VIDLORA_LAUNCH(query_grid, kMmaThreads, static_cast<std::size_t>(two_stages), stream,
                     flash_mma_backward_dq_kernel<D, K, 2>)
      (p);
    } else {
      VIDLORA_LAUNCH(query_grid, kMmaThreads, 0, stream, flash_mma_backward_dq_kernel<D, K, 1>)(p);
    }
    VIDLORA_CUDA_CHECK_LAUNCH("cuda::flash_mma_backward (dq)");
  } else {
    const dim3 key_grid(static_cast<unsigned>((p.tk + kMmaKeys - 1) / kMmaKeys), static_cast<unsigned>(p.kv_heads));
    constexpr auto one = static_cast<int>(FlashMmaDkvSmem<D>::bytes),
                   two = static_cast<int>(FlashMmaDkvSmem<D, 2>::bytes);
    if (dkv_stages<D, K>(pipelined) == 2) {
      allow_dynamic_shared(flash_mma_backward_dkv_kernel<D, K, 2>, two);
      VIDLORA_LAUNCH(key_grid, kMmaThreads, static_cast<std::size_t>(two), stream,
                     flash_mma_backward_dkv_kernel<D, K, 2>)
      (p);
    } else {
      allow_dynamic_shared(flash_mma_backward_dkv_kernel<D, K, 1>, one);
      VIDLORA_LAUNCH(key_grid, kMmaThreads, static_cast<std::size_t>(one), stream,
                     flash_mma_backward_dkv_kernel<D, K, 1>)
      (p);
    }
    VIDLORA_CUDA_CHECK_LAUNCH("cuda::flash_mma_backward (dk/dv)");
  }
}

inline void launch_flash_mma(int which, const AttentionParams& p, FlashOperands k, cudaStream_t stream,
                             bool pipelined = false) {
  const bool bf16 = k == FlashOperands::BF16;
  if (p.head_dim == 64)
    bf16 ? launch_flash_mma_as<64, FlashOperands::BF16>(which, p, stream, pipelined)
         : launch_flash_mma_as<64, FlashOperands::F16>(which, p, stream, pipelined);
  else
    bf16 ? launch_flash_mma_as<128, FlashOperands::BF16>(which, p, stream, pipelined)
         : launch_flash_mma_as<128, FlashOperands::F16>(which, p, stream, pipelined);
}

inline void check_flash_mma(const AttentionParams& p, FlashOperands k, const char* who);

}  // namespace detail

// VIDLORA_ATTENTION_REGISTER_TILES=0 in the environment turns the register-tile kernels off for the process (what
// FlashAttentionOptions::register_tiles = false does per call): a diagnostic switch for a GPU where they fail, which
// tools/gpu-check.sh sets when their test fails, so that the rest of its run measures the shared-memory kernels. Unset
// or 1: on; any other value is refused.
inline bool register_tiles_allowed() {
  static const bool allowed = [] {
    const char* v = std::getenv("VIDLORA_ATTENTION_REGISTER_TILES");
    const std::string value = v ? v : "1";
    vidlora::cuda::check_arg(value == "0" || value == "1", "cuda::flash_mma_takes",
                             "VIDLORA_ATTENTION_REGISTER_TILES is \"" + value + "\": 0 (off) or 1 (on)");
    return value == "1";
  }();
  return allowed;
}

// Whether the register-tile kernels take this problem on the current device: 16-bit operands, head dim 64 or 128, a
// GPU of compute capability 8.0 or newer and the kernels built for one (and VIDLORA_ATTENTION_REGISTER_TILES not 0).
inline bool flash_mma_takes(const AttentionParams& p, FlashOperands k) {
  if (k == FlashOperands::F32 || !flash_mma_head_dim(p.head_dim) || !register_tiles_allowed()) return false;
  int device = 0, major = 0;
  VIDLORA_CUDA_CHECK(cudaGetDevice(&device));
  VIDLORA_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  if (major < 8) return false;
  const bool bf16 = k == FlashOperands::BF16;
  if (p.head_dim == 64)
    return bf16 ? detail::flash_mma_kernel_built<64, FlashOperands::BF16>()
                : detail::flash_mma_kernel_built<64, FlashOperands::F16>();
  return bf16 ? detail::flash_mma_kernel_built<128, FlashOperands::BF16>()
              : detail::flash_mma_kernel_built<128, FlashOperands::F16>();
}

// The query-tile stages the register-tile dk/dv kernel runs with for `p` on the current device: 1, or 2 where
// `pipelined` asks for them and they cost no resident block (detail::dkv_stages).
inline int flash_mma_dkv_stages(const AttentionParams& p, FlashOperands k, bool pipelined) {
  const bool bf16 = k == FlashOperands::BF16;
  if (p.head_dim == 64)
    return bf16 ? detail::dkv_stages<64, FlashOperands::BF16>(pipelined)
                : detail::dkv_stages<64, FlashOperands::F16>(pipelined);
  return bf16 ? detail::dkv_stages<128, FlashOperands::BF16>(pipelined)
              : detail::dkv_stages<128, FlashOperands::F16>(pipelined);
}

namespace detail {
// The 16-bit inputs the register-tile kernels read sixteen bytes at a time (AttentionParams::q16 …): aligned.
inline void check_flash_mma_inputs(const AttentionParams& p, const char* who) {
  const auto check = [who](const std::uint16_t* x, const char* name) {
    vidlora::cuda::check_arg(reinterpret_cast<std::uintptr_t>(x) % 16 == 0, who,
                             std::string(name) + " (16-bit input) is not 16-byte aligned");
  };
  check(p.q16, "q16");
  check(p.k16, "k16");
  check(p.v16, "v16");
  check(p.d_out16, "d_out16");
}

inline void check_flash_mma(const AttentionParams& p, FlashOperands k, const char* who) {
  vidlora::cuda::check_arg(p.tq > 0 && p.tk > 0 && p.q_heads > 0 && p.kv_heads > 0 && p.q_heads % p.kv_heads == 0, who,
                           "needs tq, tk > 0 and q_heads a multiple of kv_heads");
  check_flash_mma_inputs(p, who);
  vidlora::cuda::check_arg(flash_mma_takes(p, k), who,
                           "takes bf16 / fp16 operands at head dim 64 or 128 on sm_80+ (got " +
                               std::string(flash_operands_name(k)) + ", head dim " + std::to_string(p.head_dim) +
                               "): use flash_attention_forward / flash_attention_backward");
}
}  // namespace detail

// The forward: out [tq, q_heads·d] and lse [q_heads, tq], as flash_attention_forward, where flash_mma_takes.
// pipelined: FlashAttentionOptions::pipelined.
inline void flash_mma_forward(const AttentionParams& p, FlashOperands k, cudaStream_t stream = nullptr,
                              bool pipelined = false) {
  vidlora::cuda::check_arg(p.q && p.k && p.v && p.out, "cuda::flash_mma_forward", "needs q, k, v and out");
  detail::check_flash_mma(p, k, "cuda::flash_mma_forward");
  detail::launch_flash_mma(0, p, k, stream, pipelined);
}

// The backward's dq and dk/dv kernels (accumulated, +=), where flash_mma_takes: they need the forward's lse and
// row_dot [q_heads, tq] already holding Σ_c dO·O (flash_attention_backward computes it from
// AttentionParams::forward_out first).
inline void flash_mma_backward(const AttentionParams& p, FlashOperands k, cudaStream_t stream = nullptr,
                               bool pipelined = false) {
  vidlora::cuda::check_arg(p.q && p.k && p.v && p.lse && p.d_out && p.dq && p.dk && p.dv && p.row_dot,
                           "cuda::flash_mma_backward", "needs q, k, v, lse, d_out, dq, dk, dv and row_dot");
  detail::check_flash_mma(p, k, "cuda::flash_mma_backward");
  detail::launch_flash_mma(1, p, k, stream, pipelined);
  detail::launch_flash_mma(2, p, k, stream, pipelined);
}

}  // namespace vidlora::model::cuda
#endif
