#pragma once
// Tiled (flash-style) causal GQA attention of one sequence, forward and backward, fp32 in and out: the same
// contract as model/cuda/attention.cuh (AttentionParams: visibility, scale 1/√d, lse per (head, row), dq/dk/dv
// accumulated), without its [keys] score row per query: a block holds a tile of BQ query rows and walks the keys
// in tiles of BK, with an online softmax (FlashAttention-2's order), so the keys are not limited by shared memory
// and each key tile is read once per query tile instead of once per query row.
//
//   forward      grid (query tiles, q heads):  S = Q·Kᵀ, online max / sum, O = O·α + P·V; out = O / l, lse = m + log l
//   backward dq  grid (query tiles, q heads):  two passes over the key tiles: row_dot = Σ_j p·dp, then
//                dq += dS·K with dS = p·(dp − row_dot)·scale (row_dot written for the dk/dv kernel); given the
//                forward's output (AttentionParams::forward_out), row_dot = Σ_c dO·O comes first from a small kernel
//                (FlashAttention-2's D) and the dq kernel makes the second pass only
//   backward dkv grid (key tiles, kv heads):   over the group's q heads and the query tiles that see the keys:
//                dv += Pᵀ·dO, dk += dSᵀ·Q
// Every sum runs in a fixed order (no atomics): two runs give the same bits.
//
// The kernel bodies are written once over a block policy (`for_each(n, f)`: f(0..n-1) over the block's threads;
// `sync()`; `gemm(...)`: a small matrix product on shared-memory tiles; `format`: the tile products' operand type),
// so the host test runs the same bodies with a sequential policy against model::attention_forward /
// attention_backward (tests/cuda_host). The operands (Q, K, V, dO as they enter a tile; P and dS as the softmax
// writes them) are fp32, or rounded to bf16 / fp16 (FlashOperands; FlashAttention-2's precision: fp32 scores,
// softmax statistics and accumulators, 16-bit products). On the device the tile products are fp32 FMA loops (the
// CPU's results to 1e-5), TF32 tensor cores (WMMA m16n16k8, sm_80+) when FlashAttentionOptions::tf32 asks for them,
// or 16-bit tensor cores (WMMA m16n16k16 with fp32 accumulation: fp16 on every supported card, bf16 on sm_80+;
// FMA loops over the same rounded operands elsewhere) when FlashAttentionOptions::operands is BF16 / F16 (the decoder
// executor sets it from its frozen GEMMs' operands, i.e. the preset's precision). 16-bit operand tiles take half
// the shared memory, so those kernels also take 64-row tiles where the card gives the bytes.
// fmt-free (nvcc compiles it). Head dims: multiples of 16 (the WMMA tiles), up to 256.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>

#include <vidlora/core/cuda/status.cuh>
#include <vidlora/core/portability.hpp>
#include <vidlora/io/half.hpp>
#include <vidlora/model/cuda/attention.cuh>
#include <vidlora/model/cuda/flash_attention_mma.cuh>
#include <vidlora/model/cuda/flash_operands.cuh>

namespace vidlora::model::cuda {

inline constexpr std::int64_t kFlashMaxHeadDim = 256;

// One operand of a tile product: element (r, c) of the logical matrix at p[r·ld + c], or at p[c·ld + r] when
// transposed (a row-major tile read as its transpose).
template <class T>
struct FlashOperand {
  const T* p = nullptr;
  int ld = 0;
  bool transposed = false;
  VIDLORA_HOST_DEVICE T at(int r, int c) const { return transposed ? p[c * ld + r] : p[r * ld + c]; }
};

// Shared-memory layout of the three kernels for tiles of bq query rows and bk keys at head dim d, with operands of
// op_bytes (4: fp32, 2: bf16 / fp16): the operand tiles (Q, K, V, dO; with 16-bit operands also P and dS) and the
// fp32 pieces (the accumulators O, dQ, dK, dV, the scores S and dP, and per row m, l, α or lse, row_dot, and a tile's
// row max or sum, padded to 8). With fp32 operands P and dS are written over S and dP. Each tile row is padded by 16
// bytes (ld_*), so the rows of a WMMA fragment load fall on different banks; every piece, and every fragment
// pointer (rows and columns in steps of 16, or 8 for TF32's k), stays a multiple of 32 bytes.
struct FlashSmem {
  int bq = 0, bk = 0, d = 0;
  int op_bytes = 4;
  VIDLORA_HOST_DEVICE bool probs_apart() const { return op_bytes != 4; }
  VIDLORA_HOST_DEVICE int rows_pad() const { return (bq + 7) / 8 * 8; }
  VIDLORA_HOST_DEVICE int ld_op() const { return d + 16 / op_bytes; }  // operand tiles of d columns
  VIDLORA_HOST_DEVICE int ld_acc() const { return d + 4; }             // fp32 accumulators of d columns
  VIDLORA_HOST_DEVICE int ld_s() const { return bk + 4; }              // fp32 S, dP of bk columns
  VIDLORA_HOST_DEVICE int ld_p() const { return probs_apart() ? bk + 16 / op_bytes : ld_s(); }  // P, dS operands
  VIDLORA_HOST_DEVICE std::int64_t probs() const { return probs_apart() ? std::int64_t{bq} * ld_p() : 0; }
  // forward: Q, K, V (, P); O, S, m, l, α, a row's tile max or sum
  VIDLORA_HOST_DEVICE std::int64_t forward_bytes() const {
    return bytes(op_rows(bq + 2 * bk) + probs(), acc_rows(bq) + s_rows(1) + 4 * rows_pad());
  }
  // backward dq: Q, dO, K, V (, dS); dQ, S, dP, lse, row_dot, a row's tile sum
  VIDLORA_HOST_DEVICE std::int64_t dq_bytes() const {
    return bytes(op_rows(2 * bq + 2 * bk) + probs(), acc_rows(bq) + s_rows(2) + 3 * rows_pad());
  }
  // backward dk/dv: K, V, Q, dO (, P, dS); dK, dV, S, dP, lse, row_dot
  VIDLORA_HOST_DEVICE std::int64_t dkv_bytes() const {
    return bytes(op_rows(2 * bk + 2 * bq) + 2 * probs(), acc_rows(2 * bk) + s_rows(2) + 2 * rows_pad());
  }

 private:
  VIDLORA_HOST_DEVICE std::int64_t op_rows(int rows) const { return std::int64_t{rows} * ld_op(); }
  VIDLORA_HOST_DEVICE std::int64_t acc_rows(int rows) const { return std::int64_t{rows} * ld_acc(); }
  VIDLORA_HOST_DEVICE std::int64_t s_rows(int tiles) const { return std::int64_t{tiles} * bq * ld_s(); }
  VIDLORA_HOST_DEVICE std::int64_t bytes(std::int64_t operands, std::int64_t floats) const {
    return operands * op_bytes + floats * static_cast<std::int64_t>(sizeof(float));
  }
};

// Hands out consecutive pieces of a block's shared memory.
struct FlashCarve {
  unsigned char* at = nullptr;
  template <class U>
  VIDLORA_HOST_DEVICE U* take(std::int64_t n) {
    U* p = reinterpret_cast<U*>(at);
    at += n * static_cast<std::int64_t>(sizeof(U));
    return p;
  }
};

// Whether the tiled kernels take this problem (else model/cuda/attention.cuh's kernels do).
VIDLORA_HOST_DEVICE inline bool flash_attention_takes(const AttentionParams& p) {
  return p.head_dim > 0 && p.head_dim % 16 == 0 && p.head_dim <= kFlashMaxHeadDim;
}

inline void check_flash_attention(const AttentionParams& p, int tile, const char* who) {
  vidlora::cuda::check_arg(
      p.tq > 0 && p.tk > 0 && p.head_dim > 0 && p.q_heads > 0 && p.kv_heads > 0 && p.q_heads % p.kv_heads == 0, who,
      "needs tq, tk, head_dim > 0 and q_heads a multiple of kv_heads");
  vidlora::cuda::check_arg(flash_attention_takes(p), who,
                           "head_dim " + std::to_string(p.head_dim) + " must be a multiple of 16, at most " +
                               std::to_string(kFlashMaxHeadDim));
  vidlora::cuda::check_arg(tile == 16 || tile == 32 || tile == 64, who,
                           "tile " + std::to_string(tile) + " must be 16, 32 or 64");
}

// Rows [r0, r0 + rows) of head `head` of two [n, heads·d] tensors into two [rows, d] operand tiles of row stride ld,
// zeros past row n.
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <class B, class T>
VIDLORA_HOST_DEVICE void flash_load_rows(B& blk, T* a_tile, const float* a, T* b_tile, const float* b, std::int64_t r0,
                                         int rows, std::int64_t n, std::int64_t heads, std::int64_t head, int d,
                                         int ld) {
  using F = typename B::format;
  blk.for_each(rows * d, [&](int e) {
    const int rr = e / d, c = e % d;
    const std::int64_t r = r0 + rr, at = r * heads * d + head * d + c;
    a_tile[rr * ld + c] = F::from_float(r < n ? a[at] : 0.0f);
    b_tile[rr * ld + c] = F::from_float(r < n ? b[at] : 0.0f);
  });
}

// The block bodies. `B` provides: `format` (a FlashOperandFormat: the operand tiles' type T and its conversions);
// void for_each(int n, F f) (f(0..n-1) spread over the block's threads, then a barrier); void sync(); void
// row_max / row_sum(const float* x, int rows, int cols, int ld, float* out) (out[r] = max / Σ of row r of x [rows ×
// cols], row stride ld, then a barrier: the device gives each row a warp, its lanes on consecutive columns); void gemm(float* c, int ldc,
// int m, int n, int k, FlashOperand<T> a, FlashOperand<T> b, bool accumulate) (c[m×n] (+)= a[m×k]·b[k×n] in fp32,
// then a barrier). `smem` holds FlashSmem's bytes for format::bytes. Every pass over a tile walks its elements in
// order across the threads (no thread walks a row: rows of 16-64 floats would put a warp's reads on one bank).

// Forward of query tile `qt`, query head `h`.
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <class B>
VIDLORA_HOST_DEVICE void flash_forward_block(B& blk, const AttentionParams& p, int bq, int bk, std::int64_t qt,
                                             std::int64_t h, void* smem) {
  using F = typename B::format;
  using T = typename F::type;
  const int d = static_cast<int>(p.head_dim);
  const FlashSmem lay{bq, bk, d, F::bytes};
  const int ldo = lay.ld_op(), lda = lay.ld_acc(), lds = lay.ld_s(), ldp = lay.ld_p();
  FlashCarve carve{static_cast<unsigned char*>(smem)};
  T* qs = carve.take<T>(bq * ldo);
  T* ks = carve.take<T>(bk * ldo);
  T* vs = carve.take<T>(bk * ldo);
  float* os = carve.take<float>(bq * lda);
  float* s = carve.take<float>(bq * lds);
  float* m = carve.take<float>(lay.rows_pad());
  float* l = carve.take<float>(lay.rows_pad());
  float* alpha = carve.take<float>(lay.rows_pad());
  float* row = carve.take<float>(lay.rows_pad());  // the tile's row max, then its row sum
  T* ps = nullptr;  // P as an operand: its own 16-bit tile, or S itself with fp32 operands
  if constexpr (std::is_same_v<T, float>)
    ps = s;
  else
    ps = carve.take<T>(lay.probs());
  const std::int64_t g = kv_head_of(p, h), i0 = qt * bq, qstride = p.q_heads * p.head_dim;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.head_dim)));
  blk.for_each(bq * d, [&](int e) {
    const int r = e / d, c = e % d;
    const std::int64_t i = i0 + r;
    qs[r * ldo + c] = F::from_float(i < p.tq ? p.q[i * qstride + h * p.head_dim + c] : 0.0f);
    os[r * lda + c] = 0.0f;
  });
  blk.for_each(bq, [&](int r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
  });
  const std::int64_t key_end = flash_key_end(p, i0, bq);
  for (std::int64_t k0 = 0; k0 < key_end; k0 += bk) {
    flash_load_rows(blk, ks, p.k, vs, p.v, k0, bk, p.tk, p.kv_heads, g, d, ldo);
    blk.gemm(s, lds, bq, bk, d, FlashOperand<T>{qs, ldo, false}, FlashOperand<T>{ks, ldo, true}, false);  // S = Q·Kᵀ
    // The online softmax over this key tile: scaled scores (-inf where not visible), the new row max, P, its row sum
    // (l sums P before rounding).
    blk.for_each(bq * bk, [&](int e) {
      const int r = e / bk, c = e % bk;
      const std::int64_t i = i0 + r;
      s[r * lds + c] = i < p.tq && attention_visible(p, i, k0 + c) ? s[r * lds + c] * scale : -INFINITY;
    });
    blk.row_max(s, bq, bk, lds, row);
    blk.for_each(bq, [&](int r) {
      const float mx = row[r] > m[r] ? row[r] : m[r];
      alpha[r] = m[r] == -INFINITY ? 1.0f : std::exp(m[r] - mx);  // O and l are 0 until a key is visible
      m[r] = mx;
    });
    blk.for_each(bq * bk, [&](int e) {
      const int r = e / bk, c = e % bk;
      const float v = s[r * lds + c];
      const float e_v = v == -INFINITY ? 0.0f : std::exp(v - m[r]);
      s[r * lds + c] = e_v;
      ps[r * ldp + c] = F::from_float(e_v);
    });
    blk.row_sum(s, bq, bk, lds, row);
    blk.for_each(bq * d, [&](int e) {
      const int r = e / d, c = e % d;
      os[r * lda + c] *= alpha[r];
      if (c == 0) l[r] = l[r] * alpha[r] + row[r];
    });
    blk.gemm(os, lda, bq, d, bk, FlashOperand<T>{ps, ldp, false}, FlashOperand<T>{vs, ldo, false}, true);  // O += P·V
  }
  blk.for_each(bq * d, [&](int e) {
    const int r = e / d, c = e % d;
    const std::int64_t i = i0 + r;
    if (i < p.tq) p.out[i * qstride + h * p.head_dim + c] = l[r] > 0.0f ? os[r * lda + c] / l[r] : 0.0f;
  });
  blk.for_each(bq, [&](int r) {
    const std::int64_t i = i0 + r;
    if (i < p.tq && p.lse) p.lse[h * p.tq + i] = l[r] > 0.0f ? m[r] + std::log(l[r]) : -INFINITY;
  });
}

// row_dot of query row i, head h from the forward's output: Σ_c dO·O (= Σ_j p·dp, as O = Σ_j p·V), in column order,
// dO rounded as the operand tiles hold it (format F), as dp's dO is.
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <class F>
VIDLORA_HOST_DEVICE float flash_row_dot(const AttentionParams& p, std::int64_t h, std::int64_t i) {
  const std::int64_t at = i * p.q_heads * p.head_dim + h * p.head_dim;
  float acc = 0.0f;
  for (std::int64_t c = 0; c < p.head_dim; ++c)
    acc += F::to_float(F::from_float(p.d_out[at + c])) * p.forward_out[at + c];
  return acc;
}

// The probability of a visible pair from the forward's lse (0 otherwise, and for a row that saw no key).
VIDLORA_HOST_DEVICE inline float flash_prob(const AttentionParams& p, std::int64_t i, std::int64_t j, float raw,
                                            float lse, float scale) {
  if (i >= p.tq || !attention_visible(p, i, j) || lse == -INFINITY) return 0.0f;
  return std::exp(raw * scale - lse);
}

// Backward, dq side, of query tile `qt`, query head `h`; writes row_dot [q_heads, tq] for the dk/dv kernel, or, with
// p.forward_out, reads it (flash_row_dot's, computed before) and skips the first pass.
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <class B>
VIDLORA_HOST_DEVICE void flash_backward_dq_block(B& blk, const AttentionParams& p, int bq, int bk, std::int64_t qt,
                                                 std::int64_t h, void* smem) {
  using F = typename B::format;
  using T = typename F::type;
  const int d = static_cast<int>(p.head_dim);
  const FlashSmem lay{bq, bk, d, F::bytes};
  const int ldo = lay.ld_op(), lda = lay.ld_acc(), lds = lay.ld_s(), ldp = lay.ld_p();
  FlashCarve carve{static_cast<unsigned char*>(smem)};
  T* qs = carve.take<T>(bq * ldo);
  T* dos = carve.take<T>(bq * ldo);
  T* ks = carve.take<T>(bk * ldo);
  T* vs = carve.take<T>(bk * ldo);
  float* dqs = carve.take<float>(bq * lda);
  float* s = carve.take<float>(bq * lds);
  float* ds = carve.take<float>(bq * lds);
  float* lse = carve.take<float>(lay.rows_pad());
  float* rd = carve.take<float>(lay.rows_pad());
  float* row = carve.take<float>(lay.rows_pad());  // a tile's row sums of p·dp
  T* dss = nullptr;                                // dS as an operand: its own 16-bit tile, or dP's with fp32 operands
  if constexpr (std::is_same_v<T, float>)
    dss = ds;
  else
    dss = carve.take<T>(lay.probs());
  const std::int64_t g = kv_head_of(p, h), i0 = qt * bq, qstride = p.q_heads * p.head_dim;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.head_dim)));
  flash_load_rows(blk, qs, p.q, dos, p.d_out, i0, bq, p.tq, p.q_heads, h, d, ldo);
  blk.for_each(bq * d, [&](int e) { dqs[e / d * lda + e % d] = 0.0f; });
  const bool row_dot_given = p.forward_out != nullptr;
  blk.for_each(bq, [&](int r) {
    const std::int64_t i = i0 + r;
    lse[r] = i < p.tq ? p.lse[h * p.tq + i] : -INFINITY;
    rd[r] = row_dot_given && i < p.tq ? p.row_dot[h * p.tq + i] : 0.0f;
  });
  const std::int64_t key_end = flash_key_end(p, i0, bq);
  for (int pass = row_dot_given ? 1 : 0; pass < 2; ++pass) {  // 0: row_dot = Σ_j p·dp; 1: dq
    for (std::int64_t k0 = 0; k0 < key_end; k0 += bk) {
      flash_load_rows(blk, ks, p.k, vs, p.v, k0, bk, p.tk, p.kv_heads, g, d, ldo);
      blk.gemm(s, lds, bq, bk, d, FlashOperand<T>{qs, ldo, false}, FlashOperand<T>{ks, ldo, true}, false);  // S = Q·Kᵀ
      blk.gemm(ds, lds, bq, bk, d, FlashOperand<T>{dos, ldo, false}, FlashOperand<T>{vs, ldo, true},
               false);  // dP = dO·Vᵀ
      if (pass == 0) {
        blk.for_each(bq * bk, [&](int e) {
          const int r = e / bk, c = e % bk;
          s[r * lds + c] = flash_prob(p, i0 + r, k0 + c, s[r * lds + c], lse[r], scale) * ds[r * lds + c];
        });
        blk.row_sum(s, bq, bk, lds, row);
        blk.for_each(bq, [&](int r) { rd[r] += row[r]; });
      } else {
        blk.for_each(bq * bk, [&](int e) {
          const int r = e / bk, c = e % bk;
          const float prob = flash_prob(p, i0 + r, k0 + c, s[r * lds + c], lse[r], scale);
          dss[r * ldp + c] =
              F::from_float(prob == 0.0f ? 0.0f : attention_score_grad(prob, ds[r * lds + c], rd[r], scale));
        });
        blk.gemm(dqs, lda, bq, d, bk, FlashOperand<T>{dss, ldp, false}, FlashOperand<T>{ks, ldo, false},
                 true);  // dQ += dS·K
      }
    }
  }
  blk.for_each(bq * d, [&](int e) {
    const int r = e / d, c = e % d;
    const std::int64_t i = i0 + r;
    if (i < p.tq) p.dq[i * qstride + h * p.head_dim + c] += dqs[r * lda + c];
  });
  if (!row_dot_given)
    blk.for_each(bq, [&](int r) {
      const std::int64_t i = i0 + r;
      if (i < p.tq) p.row_dot[h * p.tq + i] = rd[r];
    });
}

// Backward, dk/dv side, of key tile `kt`, kv head `g` (reads the dq kernel's row_dot).
VIDLORA_HD_TEMPLATE_EXEC_CHECK_DISABLE
template <class B>
VIDLORA_HOST_DEVICE void flash_backward_dkv_block(B& blk, const AttentionParams& p, int bq, int bk, std::int64_t kt,
                                                  std::int64_t g, void* smem) {
  using F = typename B::format;
  using T = typename F::type;
  const int d = static_cast<int>(p.head_dim);
  const FlashSmem lay{bq, bk, d, F::bytes};
  const int ldo = lay.ld_op(), lda = lay.ld_acc(), lds = lay.ld_s(), ldp = lay.ld_p();
  FlashCarve carve{static_cast<unsigned char*>(smem)};
  T* ks = carve.take<T>(bk * ldo);
  T* vs = carve.take<T>(bk * ldo);
  T* qs = carve.take<T>(bq * ldo);
  T* dos = carve.take<T>(bq * ldo);
  float* dks = carve.take<float>(bk * lda);
  float* dvs = carve.take<float>(bk * lda);
  float* s = carve.take<float>(bq * lds);
  float* ds = carve.take<float>(bq * lds);
  float* lse = carve.take<float>(lay.rows_pad());
  float* rd = carve.take<float>(lay.rows_pad());
  T* ps = nullptr;  // P and dS as operands: 16-bit tiles of their own, or S's and dP's with fp32 operands
  T* dss = nullptr;
  if constexpr (std::is_same_v<T, float>) {
    ps = s;
    dss = ds;
  } else {
    ps = carve.take<T>(lay.probs());
    dss = carve.take<T>(lay.probs());
  }
  const std::int64_t j0 = kt * bk, kstride = p.kv_heads * p.head_dim;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(p.head_dim)));
  flash_load_rows(blk, ks, p.k, vs, p.v, j0, bk, p.tk, p.kv_heads, g, d, ldo);
  blk.for_each(bk * d, [&](int e) {
    const int r = e / d, c = e % d;
    dks[r * lda + c] = 0.0f;
    dvs[r * lda + c] = 0.0f;
  });
  const std::int64_t group = p.q_heads / p.kv_heads;
  const std::int64_t first = attention_first_query(p, j0);  // no earlier query sees this tile's keys
  for (std::int64_t h = g * group; h < (g + 1) * group; ++h) {
    for (std::int64_t i0 = first / bq * bq; i0 < p.tq; i0 += bq) {
      flash_load_rows(blk, qs, p.q, dos, p.d_out, i0, bq, p.tq, p.q_heads, h, d, ldo);
      blk.for_each(bq, [&](int r) {
        const std::int64_t i = i0 + r;
        lse[r] = i < p.tq ? p.lse[h * p.tq + i] : -INFINITY;
        rd[r] = i < p.tq ? p.row_dot[h * p.tq + i] : 0.0f;
      });
      blk.gemm(s, lds, bq, bk, d, FlashOperand<T>{qs, ldo, false}, FlashOperand<T>{ks, ldo, true}, false);  // S = Q·Kᵀ
      blk.gemm(ds, lds, bq, bk, d, FlashOperand<T>{dos, ldo, false}, FlashOperand<T>{vs, ldo, true},
               false);  // dP = dO·Vᵀ
      blk.for_each(bq * bk, [&](int e) {
        const int r = e / bk, c = e % bk;
        const float prob = flash_prob(p, i0 + r, j0 + c, s[r * lds + c], lse[r], scale);
        const float grad = prob == 0.0f ? 0.0f : attention_score_grad(prob, ds[r * lds + c], rd[r], scale);
        ps[r * ldp + c] = F::from_float(prob);
        dss[r * ldp + c] = F::from_float(grad);
      });
      blk.gemm(dvs, lda, bk, d, bq, FlashOperand<T>{ps, ldp, true}, FlashOperand<T>{dos, ldo, false},
               true);  // dV += Pᵀ·dO
      blk.gemm(dks, lda, bk, d, bq, FlashOperand<T>{dss, ldp, true}, FlashOperand<T>{qs, ldo, false},
               true);  // dK += dSᵀ·Q
    }
  }
  blk.for_each(bk * d, [&](int e) {
    const int r = e / d, c = e % d;
    const std::int64_t j = j0 + r;
    if (j < p.tk) {
      p.dk[j * kstride + g * p.head_dim + c] += dks[r * lda + c];
      p.dv[j * kstride + g * p.head_dim + c] += dvs[r * lda + c];
    }
  });
}

// The sequential block: what the host tests run (one thread; the gemm in the device FMA path's order, over the same
// rounded operands).
template <FlashOperands K = FlashOperands::F32>
struct FlashHostBlock {
  using format = FlashOperandFormat<K>;
  template <class F>
  void for_each(int n, F&& f) {
    for (int e = 0; e < n; ++e) f(e);
  }
  void sync() {}
  void row_max(const float* x, int rows, int cols, int ld, float* out) {
    for (int r = 0; r < rows; ++r) {
      float v = -INFINITY;
      for (int c = 0; c < cols; ++c) v = x[r * ld + c] > v ? x[r * ld + c] : v;
      out[r] = v;
    }
  }
  void row_sum(const float* x, int rows, int cols, int ld, float* out) {
    for (int r = 0; r < rows; ++r) {
      float v = 0.0f;
      for (int c = 0; c < cols; ++c) v += x[r * ld + c];
      out[r] = v;
    }
  }
  void gemm(float* c, int ldc, int m, int n, int k, FlashOperand<typename format::type> a,
            FlashOperand<typename format::type> b, bool accumulate) {
    for (int e = 0; e < m * n; ++e) {
      const int r = e / n, col = e % n;
      float acc = accumulate ? c[r * ldc + col] : 0.0f;
      for (int t = 0; t < k; ++t) acc += format::to_float(a.at(r, t)) * format::to_float(b.at(t, col));
      c[r * ldc + col] = acc;
    }
  }
};

}  // namespace vidlora::model::cuda

#if VIDLORA_KERNELS
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

namespace vidlora::model::cuda {

struct FlashAttentionOptions {
  bool tf32 = false;  // fp32 operands: the tile products on TF32 tensor cores (sm_80+; fp32 FMA elsewhere)
  int tile = 0;       // query / key rows per tile, 16, 32 or 64; 0: per kernel, the largest whose shared memory the
                      // device gives (at most 32 with fp32 operands, 64 with 16-bit ones)
  FlashOperands operands = FlashOperands::F32;  // BF16 / F16: 16-bit tensor cores (FMA where the card has none)
  // With BF16 / F16 operands and no tile asked for: the forward, and the backward when it is given the forward's
  // output (AttentionParams::forward_out, as the decoder executor gives it), keep their tiles in registers where
  // flash_mma_takes (model/cuda/flash_attention_mma.cuh: sm_80+, head dims 64 and 128).
  bool register_tiles = true;
  // The register-tile forward and dq with two key-tile sets in shared memory (68.5 KiB at head dim 128 instead of 34),
  // and dk/dv with two query-tile sets (103 KiB instead of 68.5; only where they cost no resident block, not at head
  // dim 128 on an A100 or sm_86 / sm_89: flash_mma_dkv_stages): the next tile's copy in flight while the current one
  // is used (cp.async from the 16-bit
  // inputs, AttentionParams::q16 …, on sm_80+; fp32 inputs are still loaded before the tile is used). The same
  // results, bit for bit; off by default until a GPU run has timed it (bench_cuda_attention's kernel 8).
  bool pipelined = false;
};

namespace detail {

inline constexpr int kFlashThreads = 128;  // four warps

template <FlashOperands K>
struct FlashDeviceBlock {
  using format = FlashOperandFormat<K>;
  using T = typename format::type;
  bool tf32 = false;
  template <class F>
  __device__ void for_each(int n, F&& f) {
    for (int e = static_cast<int>(threadIdx.x); e < n; e += kFlashThreads) f(e);
    __syncthreads();
  }
  __device__ void sync() { __syncthreads(); }
  // One warp per row, its lanes on consecutive columns (no bank conflicts), a fixed butterfly: the same bits each run.
  __device__ void row_max(const float* x, int rows, int cols, int ld, float* out) {
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    for (int r = warp; r < rows; r += kFlashThreads / 32) {
      float v = -INFINITY;
      for (int c = lane; c < cols; c += 32) v = fmaxf(v, x[r * ld + c]);
      for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
      if (lane == 0) out[r] = v;
    }
    __syncthreads();
  }
  __device__ void row_sum(const float* x, int rows, int cols, int ld, float* out) {
    const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
    for (int r = warp; r < rows; r += kFlashThreads / 32) {
      float v = 0.0f;
      for (int c = lane; c < cols; c += 32) v += x[r * ld + c];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) out[r] = v;
    }
    __syncthreads();
  }
  __device__ void gemm(float* c, int ldc, int m, int n, int k, FlashOperand<T> a, FlashOperand<T> b, bool accumulate) {
    if constexpr (K == FlashOperands::F32) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
      if (tf32) {
        gemm_tf32(c, ldc, m, n, k, a, b, accumulate);
        __syncthreads();
        return;
      }
#endif
    } else if constexpr (K == FlashOperands::F16) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
      gemm_16bit<__half>(c, ldc, m, n, k, a, b, accumulate);
      __syncthreads();
      return;
#endif
    } else {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
      gemm_16bit<__nv_bfloat16>(c, ldc, m, n, k, a, b, accumulate);
      __syncthreads();
      return;
#endif
    }
    for (int e = static_cast<int>(threadIdx.x); e < m * n; e += kFlashThreads) {
      const int r = e / n, col = e % n;
      float acc = accumulate ? c[r * ldc + col] : 0.0f;
      for (int t = 0; t < k; ++t) acc += format::to_float(a.at(r, t)) * format::to_float(b.at(t, col));
      c[r * ldc + col] = acc;
    }
    __syncthreads();
  }

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  // 16×16 output tiles spread over the warps; k in steps of 8 (m, n, k multiples of 16: the tiles are).
  __device__ void gemm_tf32(float* c, int ldc, int m, int n, int k, FlashOperand<T> a, FlashOperand<T> b,
                            bool accumulate) {
    using namespace nvcuda;
    const int warp = static_cast<int>(threadIdx.x) / 32, tiles_n = n / 16, tiles = (m / 16) * tiles_n;
    for (int t = warp; t < tiles; t += kFlashThreads / 32) {
      const int r0 = (t / tiles_n) * 16, c0 = (t % tiles_n) * 16;
      wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc;
      if (accumulate)
        wmma::load_matrix_sync(acc, c + r0 * ldc + c0, static_cast<unsigned>(ldc), wmma::mem_row_major);
      else
        wmma::fill_fragment(acc, 0.0f);
      for (int k0 = 0; k0 < k; k0 += 8) {
        if (a.transposed) {
          wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fa;
          wmma::load_matrix_sync(fa, a.p + k0 * a.ld + r0, static_cast<unsigned>(a.ld));
          for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
          mma_b_tf32(acc, fa, b, k0, c0);
        } else {
          wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fa;
          wmma::load_matrix_sync(fa, a.p + r0 * a.ld + k0, static_cast<unsigned>(a.ld));
          for (int i = 0; i < fa.num_elements; ++i) fa.x[i] = wmma::__float_to_tf32(fa.x[i]);
          mma_b_tf32(acc, fa, b, k0, c0);
        }
      }
      wmma::store_matrix_sync(c + r0 * ldc + c0, acc, static_cast<unsigned>(ldc), wmma::mem_row_major);
    }
  }
  template <class FragA>
  __device__ static void mma_b_tf32(nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float>& acc,
                                    const FragA& fa, FlashOperand<T> b, int k0, int c0) {
    using namespace nvcuda;
    if (b.transposed) {  // element (k, n) at p[n·ld + k]: column-major
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::col_major> fb;
      wmma::load_matrix_sync(fb, b.p + c0 * b.ld + k0, static_cast<unsigned>(b.ld));
      for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
      wmma::mma_sync(acc, fa, fb, acc);
    } else {
      wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> fb;
      wmma::load_matrix_sync(fb, b.p + k0 * b.ld + c0, static_cast<unsigned>(b.ld));
      for (int i = 0; i < fb.num_elements; ++i) fb.x[i] = wmma::__float_to_tf32(fb.x[i]);
      wmma::mma_sync(acc, fa, fb, acc);
    }
  }
#endif

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  // The same split over 16-bit operands (H: __half or __nv_bfloat16, the tiles' bit patterns read as H): WMMA
  // m16n16k16, fp32 accumulation. Every fragment pointer is 32-byte aligned: r0, c0, k0 are multiples of 16 and
  // every ld a multiple of 16 bytes (FlashSmem: 8 halves or 4 floats past a multiple of 16), so 16 rows of any ld
  // and 16 columns of any element are multiples of 32 bytes; WMMA's ldm (a multiple of 8 halves, 4 floats) holds.
  template <class H>
  __device__ void gemm_16bit(float* c, int ldc, int m, int n, int k, FlashOperand<T> a, FlashOperand<T> b,
                             bool accumulate) {
    using namespace nvcuda;
    const H* ap = reinterpret_cast<const H*>(a.p);
    const H* bp = reinterpret_cast<const H*>(b.p);
    const int warp = static_cast<int>(threadIdx.x) / 32, tiles_n = n / 16, tiles = (m / 16) * tiles_n;
    for (int t = warp; t < tiles; t += kFlashThreads / 32) {
      const int r0 = (t / tiles_n) * 16, c0 = (t % tiles_n) * 16;
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      if (accumulate)
        wmma::load_matrix_sync(acc, c + r0 * ldc + c0, static_cast<unsigned>(ldc), wmma::mem_row_major);
      else
        wmma::fill_fragment(acc, 0.0f);
      for (int k0 = 0; k0 < k; k0 += 16) {
        if (a.transposed) {  // element (r, k) at p[k·ld + r]: column-major
          wmma::fragment<wmma::matrix_a, 16, 16, 16, H, wmma::col_major> fa;
          wmma::load_matrix_sync(fa, ap + k0 * a.ld + r0, static_cast<unsigned>(a.ld));
          mma_b_16bit<H>(acc, fa, bp, b, k0, c0);
        } else {
          wmma::fragment<wmma::matrix_a, 16, 16, 16, H, wmma::row_major> fa;
          wmma::load_matrix_sync(fa, ap + r0 * a.ld + k0, static_cast<unsigned>(a.ld));
          mma_b_16bit<H>(acc, fa, bp, b, k0, c0);
        }
      }
      wmma::store_matrix_sync(c + r0 * ldc + c0, acc, static_cast<unsigned>(ldc), wmma::mem_row_major);
    }
  }
  template <class H, class FragA>
  __device__ static void mma_b_16bit(nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>& acc,
                                     const FragA& fa, const H* bp, FlashOperand<T> b, int k0, int c0) {
    using namespace nvcuda;
    if (b.transposed) {  // element (k, n) at p[n·ld + k]: column-major
      wmma::fragment<wmma::matrix_b, 16, 16, 16, H, wmma::col_major> fb;
      wmma::load_matrix_sync(fb, bp + c0 * b.ld + k0, static_cast<unsigned>(b.ld));
      wmma::mma_sync(acc, fa, fb, acc);
    } else {
      wmma::fragment<wmma::matrix_b, 16, 16, 16, H, wmma::row_major> fb;
      wmma::load_matrix_sync(fb, bp + k0 * b.ld + c0, static_cast<unsigned>(b.ld));
      wmma::mma_sync(acc, fa, fb, acc);
    }
  }
#endif
};

// row_dot = Σ_c dO·O for every (head, row), one warp each: lanes on consecutive columns, a fixed butterfly; dO rounded
// as the operand tiles of format K hold it.
template <FlashOperands K>
__global__ void flash_row_dot_kernel(AttentionParams p) {
  using F = FlashOperandFormat<K>;
  const std::int64_t warp = (static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x % 32);
  if (warp >= p.tq * p.q_heads) return;  // whole warps: the bound is per warp
  const std::int64_t h = warp / p.tq, i = warp % p.tq, at = i * p.q_heads * p.head_dim + h * p.head_dim;
  float acc = 0.0f;
  for (std::int64_t c = lane; c < p.head_dim; c += 32)
    acc += F::to_float(F::from_float(p.d_out[at + c])) * p.forward_out[at + c];
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (lane == 0) p.row_dot[h * p.tq + i] = acc;
}

template <int Which, FlashOperands K>  // Which: 0 forward, 1 backward dq, 2 backward dk/dv
__global__ void flash_attention_kernel(AttentionParams p, int tile, bool tf32) {
  VIDLORA_DYNAMIC_SHARED(32, unsigned char, flash_smem);
  FlashDeviceBlock<K> blk{tf32};
  if constexpr (Which == 0)
    flash_forward_block(blk, p, tile, tile, blockIdx.x, blockIdx.y, flash_smem);
  else if constexpr (Which == 1)
    flash_backward_dq_block(blk, p, tile, tile, blockIdx.x, blockIdx.y, flash_smem);
  else
    flash_backward_dkv_block(blk, p, tile, tile, blockIdx.x, blockIdx.y, flash_smem);
}

inline int flash_operand_bytes(FlashOperands k) { return k == FlashOperands::F32 ? 4 : 2; }

// Shared memory of kernel `which` (0 forward, 1 dq, 2 dk/dv).
inline std::int64_t flash_kernel_bytes(int which, int tile, std::int64_t head_dim, FlashOperands k) {
  const FlashSmem lay{tile, tile, static_cast<int>(head_dim), flash_operand_bytes(k)};
  return which == 0 ? lay.forward_bytes() : which == 1 ? lay.dq_bytes() : lay.dkv_bytes();
}

inline int flash_smem_limit() {
  int device = 0, limit = 0;
  VIDLORA_CUDA_CHECK(cudaGetDevice(&device));
  VIDLORA_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return limit;
}

}  // namespace detail

// Whether the current device gives a block the shared memory of all three kernels at this tile, head dim and
// operand type.
inline bool flash_tile_fits(int tile, std::int64_t head_dim, FlashOperands operands = FlashOperands::F32) {
  const int limit = detail::flash_smem_limit();
  for (int which = 0; which < 3; ++which)
    if (detail::flash_kernel_bytes(which, tile, head_dim, operands) > limit) return false;
  return true;
}

// Whether the tiled kernels take this problem on the current device with these options: a head dim they take
// (flash_attention_takes) whose smallest tile (or the requested one) the card gives the shared memory of all three
// kernels. Not always at head dim 256: fp32 dk/dv at tile 16 needs 100 KiB (more than sm_86 / sm_89 give), and
// sm_75's 64 KiB stop fp32 from head dim 160 and 16-bit from 240. Callers route elsewhere to
// model/cuda/attention.cuh's kernels.
inline bool flash_attention_fits(const AttentionParams& p, const FlashAttentionOptions& o = {}) {
  return flash_attention_takes(p) && flash_tile_fits(o.tile ? o.tile : 16, p.head_dim, o.operands);
}

// Whether flash_attention_forward, and flash_attention_backward given the forward's output, run the register-tile
// kernels for this problem with these options, which read AttentionParams::q16, k16, v16 and d_out16 where given: a
// caller that has them, or rounds its fp32 tensors for them (io::cuda::round_to_16bit), asks this first.
inline bool flash_attention_on_register_tiles(const AttentionParams& p, const FlashAttentionOptions& o = {}) {
  return o.register_tiles && o.tile == 0 && flash_mma_takes(p, o.operands);
}

namespace detail {
// Kernel `which`'s tile: the requested one, else the largest that fits (64 with 16-bit operands where the card gives
// the bytes; 32, else 16: 52 KiB for fp32 dk/dv at head dim 128, which every card allows; not every card gives 16 at
// head dim 256, see flash_attention_fits).
inline int flash_tile_for(int which, std::int64_t head_dim, const FlashAttentionOptions& o) {
  const int limit = flash_smem_limit();
  if (o.tile) {
    vidlora::cuda::check_arg(flash_kernel_bytes(which, o.tile, head_dim, o.operands) <= limit, "cuda::flash_attention",
                             "tile " + std::to_string(o.tile) + " at head_dim " + std::to_string(head_dim) + " with " +
                                 flash_operands_name(o.operands) +
                                 " operands needs more shared memory per block than this GPU gives");
    return o.tile;
  }
  for (const int tile : {64, 32})
    if ((tile < 64 || o.operands != FlashOperands::F32) &&
        flash_kernel_bytes(which, tile, head_dim, o.operands) <= limit)
      return tile;
  vidlora::cuda::check_arg(flash_kernel_bytes(which, 16, head_dim, o.operands) <= limit, "cuda::flash_attention", [&] {
    return "head_dim " + std::to_string(head_dim) + " with " + flash_operands_name(o.operands) + " operands needs " +
           std::to_string(flash_kernel_bytes(which, 16, head_dim, o.operands)) +
           " bytes of shared memory per block even at tile 16; this GPU gives " + std::to_string(limit) +
           " (flash_attention_fits says so: use model/cuda/attention.cuh's kernels)";
  });
  return 16;
}

template <int Which, FlashOperands K>
void launch_flash_as(const AttentionParams& p, const FlashAttentionOptions& o, std::int64_t blocks_x,
                     std::int64_t blocks_y, std::int64_t bytes, int tile, cudaStream_t stream, const char* name) {
  if (bytes > 48 * 1024)
    VIDLORA_CUDA_CHECK(cudaFuncSetAttribute(flash_attention_kernel<Which, K>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(blocks_y));
  VIDLORA_LAUNCH(grid, kFlashThreads, static_cast<std::size_t>(bytes), stream, flash_attention_kernel<Which, K>)
  (p, tile, o.tf32);
  VIDLORA_CUDA_CHECK_LAUNCH(name);
}

// Kernel `Which` over its grid at `tile`: query tiles × q heads (forward, dq), key tiles × kv heads (dk/dv).
template <int Which>
void launch_flash(const AttentionParams& p, const FlashAttentionOptions& o, int tile, cudaStream_t stream,
                  const char* name) {
  check_flash_attention(p, tile, name);
  const std::int64_t bytes = flash_kernel_bytes(Which, tile, p.head_dim, o.operands);
  const std::int64_t blocks_x = Which == 2 ? (p.tk + tile - 1) / tile : (p.tq + tile - 1) / tile;
  const std::int64_t blocks_y = Which == 2 ? p.kv_heads : p.q_heads;
  switch (o.operands) {
    case FlashOperands::F32:
      return launch_flash_as<Which, FlashOperands::F32>(p, o, blocks_x, blocks_y, bytes, tile, stream, name);
    case FlashOperands::BF16:
      return launch_flash_as<Which, FlashOperands::BF16>(p, o, blocks_x, blocks_y, bytes, tile, stream, name);
    case FlashOperands::F16:
      return launch_flash_as<Which, FlashOperands::F16>(p, o, blocks_x, blocks_y, bytes, tile, stream, name);
  }
}

}  // namespace detail

// The forward: out [tq, q_heads·d] and lse [q_heads, tq], as cuda::attention_forward; with 16-bit operands on sm_80+
// at head dims 64 and 128 by the register-tile kernel (FlashAttentionOptions::register_tiles), which reads q16, k16 and
// v16 instead of q, k and v when given (flash_attention_on_register_tiles).
inline void flash_attention_forward(const AttentionParams& p, const FlashAttentionOptions& o = {},
                                    cudaStream_t stream = nullptr) {
  vidlora::cuda::check_arg(p.q && p.k && p.v && p.out, "cuda::flash_attention_forward", "needs q, k, v and out");
  if (flash_attention_on_register_tiles(p, o)) {  // checked here: not again per launch
    check_flash_attention(p, kMmaKeys, "cuda::flash_attention_forward");
    detail::check_flash_mma_inputs(p, "cuda::flash_attention_forward");
    return detail::launch_flash_mma(0, p, o.operands, stream, o.pipelined);
  }
  vidlora::cuda::check_arg(p.out16 == nullptr, "cuda::flash_attention_forward",
                           "writes out16 only on the register tiles (16-bit operands, sm_80+, head dim 64 or 128)");
  detail::launch_flash<0>(p, o, detail::flash_tile_for(0, p.head_dim, o), stream, "cuda::flash_attention_forward");
}

// The backward: dq, dk, dv accumulated (+=), deterministic; needs the forward's lse and a row_dot scratch
// [q_heads, tq] (written here: Σ_j p·dp by the dq kernel's first pass over the keys, or, given p.forward_out, Σ_c dO·O
// by a small kernel first, and the dq kernel makes one pass; then, with 16-bit operands on sm_80+ at head dims 64 and
// 128, the register-tile kernels run: FlashAttentionOptions::register_tiles).
inline void flash_attention_backward(const AttentionParams& p, const FlashAttentionOptions& o = {},
                                     cudaStream_t stream = nullptr) {
  vidlora::cuda::check_arg(p.q && p.k && p.v && p.lse && p.d_out && p.dq && p.dk && p.dv && p.row_dot,
                           "cuda::flash_attention_backward", "needs q, k, v, lse, d_out, dq, dk, dv and row_dot");
  // Both tiles first: a dk/dv kernel that cannot launch must not leave dq already accumulated.
  const int dq_tile = detail::flash_tile_for(1, p.head_dim, o), dkv_tile = detail::flash_tile_for(2, p.head_dim, o);
  if (p.forward_out) {  // FlashAttention-2's D: the dq kernel then walks the keys once
    check_flash_attention(p, dq_tile, "cuda::flash_attention_backward");  // before the row_dot kernel reads p
    const bool register_tiles = flash_attention_on_register_tiles(p, o);
    if (register_tiles) detail::check_flash_mma_inputs(p, "cuda::flash_attention_backward");
    const auto blocks = static_cast<unsigned>((p.tq * p.q_heads + 7) / 8);  // 8 warps a block
    if (o.operands == FlashOperands::BF16)
      VIDLORA_LAUNCH(blocks, 256, 0, stream, detail::flash_row_dot_kernel<FlashOperands::BF16>)(p);
    else if (o.operands == FlashOperands::F16)
      VIDLORA_LAUNCH(blocks, 256, 0, stream, detail::flash_row_dot_kernel<FlashOperands::F16>)(p);
    else
      VIDLORA_LAUNCH(blocks, 256, 0, stream, detail::flash_row_dot_kernel<FlashOperands::F32>)(p);
    VIDLORA_CUDA_CHECK_LAUNCH("cuda::flash_attention_backward (row_dot)");
    if (register_tiles) {  // the register-tile dq and dk/dv
      detail::launch_flash_mma(1, p, o.operands, stream, o.pipelined);
      return detail::launch_flash_mma(2, p, o.operands, stream, o.pipelined);
    }
  }
  detail::launch_flash<1>(p, o, dq_tile, stream, "cuda::flash_attention_backward (dq)");
  detail::launch_flash<2>(p, o, dkv_tile, stream, "cuda::flash_attention_backward (dk/dv)");
}

}  // namespace vidlora::model::cuda
#endif
