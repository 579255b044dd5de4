// The tiled (flash-style) attention kernels' block bodies (model/cuda/flash_attention.cuh), run by the sequential
// host block over the whole grid, against the CPU attention (model::attention_forward / attention_backward): the
// online softmax across key tiles, the causal tile bounds, GQA, the key mask, the tails of sequences that are not a
// tile multiple, the two-pass dq and the dk/dv accumulation. What the device adds is the thread split of for_each and
// the tile products (FMA loops, or TF32 tensor cores), which tests/cuda/test_model.cu checks on a GPU.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <span>
#include <stdexcept>
#include <vector>

#include <vidlora/core/rng.hpp>
#include <vidlora/io/half.hpp>
#include <vidlora/model/attention.hpp>
#include <vidlora/model/cuda/flash_attention.cuh>
#include <vidlora/model/cuda/flash_attention_mma.cuh>

#include "simt_block.hpp"

using namespace vidlora;

namespace {

constexpr float kFlashGuard = 12345.0f;  // written after every output: a write past the end changes it

struct FlashCase {
  std::int64_t tq = 37, tk = 37, q_heads = 4, kv_heads = 2, head_dim = 16, q_offset = 0;
  std::vector<int> key_mask;  // empty: all keys
  std::uint64_t seed = 1;
};

Matrix flash_random(Eigen::Index r, Eigen::Index c, std::uint64_t seed) {
  Matrix m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = 2.0f * (random_uniform(seed, 17, static_cast<std::uint64_t>(i)) - 0.5f);
  return m;
}

// A buffer of n floats and a guard after it.
struct Guarded {
  std::vector<float> v;
  std::int64_t n = 0;
  Guarded(std::int64_t count, float fill) : v(static_cast<std::size_t>(count + 16), kFlashGuard), n(count) {
    std::fill(v.begin(), v.begin() + count, fill);
  }
  float* data() { return v.data(); }
  bool guard_intact() const {
    for (std::size_t i = static_cast<std::size_t>(n); i < v.size(); ++i)
      if (v[i] != kFlashGuard) return false;
    return true;
  }
  Matrix matrix(Eigen::Index rows, Eigen::Index cols) const { return Eigen::Map<const Matrix>(v.data(), rows, cols); }
};

float flash_normwise(const Matrix& got, const Matrix& want) {
  const float scale = want.cwiseAbs().maxCoeff();
  return (got - want).cwiseAbs().maxCoeff() / (scale > 0 ? scale : 1.0f);
}

// The operands as the kernels' tiles hold them (rounded to bf16 / fp16, or as they are).
Matrix flash_rounded(const Matrix& m, model::cuda::FlashOperands k) {
  Matrix r = m;
  if (k == model::cuda::FlashOperands::BF16)
    for (Eigen::Index i = 0; i < r.size(); ++i) r.data()[i] = io::round_to_bf16(r.data()[i]);
  if (k == model::cuda::FlashOperands::F16)
    for (Eigen::Index i = 0; i < r.size(); ++i) r.data()[i] = io::round_to_fp16(r.data()[i]);
  return r;
}

// lse = log Σ exp(score) over the visible keys, from the scores of the rounded q and k in double: the largest
// difference from `lse` (a row that sees no key must hold -inf).
float flash_lse_error(const FlashCase& c, const model::cuda::AttentionParams& p, const Matrix& qr, const Matrix& kr,
                      const Guarded& lse) {
  const std::int64_t d = c.head_dim;
  float lse_err = 0.0f;
  for (std::int64_t h = 0; h < c.q_heads; ++h)
    for (std::int64_t i = 0; i < c.tq; ++i) {
      const std::int64_t g = h / (c.q_heads / c.kv_heads);
      double m = -std::numeric_limits<double>::infinity(), sum = 0.0;
      std::vector<double> s;
      for (std::int64_t j = 0; j < c.tk; ++j) {
        if (!model::cuda::attention_visible(p, i, j)) continue;
        double acc = 0.0;
        for (std::int64_t e = 0; e < d; ++e) acc += static_cast<double>(qr(i, h * d + e)) * kr(j, g * d + e);
        s.push_back(acc / std::sqrt(static_cast<double>(d)));
        m = std::max(m, s.back());
      }
      for (double x : s) sum += std::exp(x - m);
      const float want = s.empty() ? -std::numeric_limits<float>::infinity() : static_cast<float>(m + std::log(sum));
      const float got = lse.v[static_cast<std::size_t>(h * c.tq + i)];
      if (std::isinf(want)) {
        CHECK(got == want);
      } else {
        lse_err = std::max(lse_err, std::fabs(got - want));
      }
    }
  return lse_err;
}

struct FlashBounds {
  float rounded = 1e-5f;  // out, dq, dk, dv against the CPU attention of the rounded inputs
  float fp32 = 1e-5f;     // ... and of the inputs as they are
};

// A case's inputs and the CPU attention's results: of the inputs as they are, and of the inputs rounded as operands K
// hold them (the `_r` ones). The gradients start at grad_start, as the kernels' outputs do (they add, +=).
struct FlashReference {
  std::int64_t qf = 0, kvf = 0;
  Matrix q, k, v, d_out, qr, kr, vr, d_out_r;
  Matrix want_out, want_dq, want_dk, want_dv, want_out_r, want_dq_r, want_dk_r, want_dv_r;
  FlashReference(const FlashCase& c, model::cuda::FlashOperands K, float grad_start)
      : qf(c.q_heads * c.head_dim),
        kvf(c.kv_heads * c.head_dim),
        q(flash_random(c.tq, qf, c.seed)),
        k(flash_random(c.tk, kvf, c.seed + 1)),
        v(flash_random(c.tk, kvf, c.seed + 2)),
        d_out(flash_random(c.tq, qf, c.seed + 3)),
        qr(flash_rounded(q, K)),
        kr(flash_rounded(k, K)),
        vr(flash_rounded(v, K)),
        d_out_r(flash_rounded(d_out, K)) {
    const model::AttentionShape shape{c.q_heads, c.kv_heads, c.head_dim};
    const auto run = [&](const Matrix& qi, const Matrix& ki, const Matrix& vi, const Matrix& doi, Matrix& out,
                         Matrix& dq, Matrix& dk, Matrix& dv) {
      Matrix probs;
      out = model::attention_forward<float>(qi, ki, vi, shape, c.q_offset, c.key_mask, &probs);
      dq = Matrix::Constant(c.tq, qf, grad_start);
      dk = Matrix::Constant(c.tk, kvf, grad_start);
      dv = Matrix::Constant(c.tk, kvf, grad_start);
      model::attention_backward<float>(qi, ki, vi, shape, probs, doi, dq, dk, dv);
    };
    run(q, k, v, d_out, want_out, want_dq, want_dk, want_dv);
    run(qr, kr, vr, d_out_r, want_out_r, want_dq_r, want_dk_r, want_dv_r);
  }
};

// The kernels' outputs, each followed by a guard: out and lse NaN, row_dot 0, the gradients grad_start.
struct FlashOutputs {
  Guarded out, lse, row_dot, dq, dk, dv;
  FlashOutputs(const FlashCase& c, std::int64_t qf, std::int64_t kvf, float grad_start)
      : out(c.tq * qf, std::nanf("")),
        lse(c.q_heads * c.tq, std::nanf("")),
        row_dot(c.q_heads * c.tq, 0.0f),
        dq(c.tq * qf, grad_start),
        dk(c.tk * kvf, grad_start),
        dv(c.tk * kvf, grad_start) {}
  // The case's problem over the reference's fp32 inputs and these outputs.
  model::cuda::AttentionParams params(const FlashCase& c, const FlashReference& r) {
    model::cuda::AttentionParams p;
    p.q = r.q.data();
    p.k = r.k.data();
    p.v = r.v.data();
    p.key_mask = c.key_mask.empty() ? nullptr : c.key_mask.data();
    p.out = out.data();
    p.lse = lse.data();
    p.d_out = r.d_out.data();
    p.dq = dq.data();
    p.dk = dk.data();
    p.dv = dv.data();
    p.row_dot = row_dot.data();
    p.tq = c.tq;
    p.tk = c.tk;
    p.q_heads = c.q_heads;
    p.kv_heads = c.kv_heads;
    p.head_dim = c.head_dim;
    p.q_offset = c.q_offset;
    return p;
  }
};

// The kernels' bodies over the grid with operands K, against the CPU attention. With 16-bit operands the CPU runs on
// the inputs rounded as the tiles hold them, so what remains is the rounding of P and dS (bounds.rounded); lse and
// row_dot come from fp32 scores and probabilities and stay at 1e-5. Each kernel's shared memory is exactly
// FlashSmem's bytes, followed by a guard. row_dot_from_out: the backward as the decoder runs it, row_dot from the
// forward's output (flash_row_dot, AttentionParams::forward_out) and one pass of the dq body.
template <model::cuda::FlashOperands K = model::cuda::FlashOperands::F32>
void check_flash(const FlashCase& c, int tile, FlashBounds bounds = {}, bool row_dot_from_out = false) {
  INFO("tq " << c.tq << " tk " << c.tk << " heads " << c.q_heads << "/" << c.kv_heads << " d " << c.head_dim
             << " offset " << c.q_offset << " masked " << !c.key_mask.empty() << " tile " << tile << " operands "
             << model::cuda::flash_operands_name(K) << (row_dot_from_out ? ", row_dot from the output" : ""));
  const std::int64_t d = c.head_dim;
  // The references: of the inputs as they are, and as the tiles hold them.
  const FlashReference ref(c, K, 0.0f);
  const std::int64_t qf = ref.qf, kvf = ref.kvf;
  const Matrix &d_out_r = ref.d_out_r, &qr = ref.qr, &kr = ref.kr, &want_out = ref.want_out,
               &want_out_r = ref.want_out_r;
  // The tiled kernels' bodies over the grid.
  FlashOutputs o(c, qf, kvf, 0.0f);
  Guarded &out = o.out, &lse = o.lse, &row_dot = o.row_dot, &dq = o.dq, &dk = o.dk, &dv = o.dv;
  model::cuda::AttentionParams p = o.params(c, ref);
  REQUIRE(model::cuda::flash_attention_takes(p));
  model::cuda::check_flash_attention(p, tile, "test");
  using Block = model::cuda::FlashHostBlock<K>;
  const model::cuda::FlashSmem lay{tile, tile, static_cast<int>(d), Block::format::bytes};
  Block blk;
  const auto smem_of = [](std::int64_t bytes) {
    REQUIRE(bytes % 32 == 0);
    return Guarded(bytes / 4, std::nanf(""));
  };
  Guarded smem = smem_of(lay.forward_bytes());
  for (std::int64_t qt = 0; qt * tile < c.tq; ++qt)
    for (std::int64_t h = 0; h < c.q_heads; ++h)
      model::cuda::flash_forward_block(blk, p, tile, tile, qt, h, smem.data());
  CHECK(smem.guard_intact());
  CHECK(flash_normwise(out.matrix(c.tq, qf), want_out_r) < bounds.rounded);
  CHECK(flash_normwise(out.matrix(c.tq, qf), want_out) < bounds.fp32);
  CHECK(flash_lse_error(c, p, qr, kr, lse) < 1e-5f);

  Guarded dq_smem = smem_of(lay.dq_bytes()), dkv_smem = smem_of(lay.dkv_bytes());
  if (row_dot_from_out) {
    p.forward_out = out.data();
    for (std::int64_t h = 0; h < c.q_heads; ++h)
      for (std::int64_t i = 0; i < c.tq; ++i)
        row_dot.v[static_cast<std::size_t>(h * c.tq + i)] = model::cuda::flash_row_dot<typename Block::format>(p, h, i);
  }
  for (std::int64_t qt = 0; qt * tile < c.tq; ++qt)
    for (std::int64_t h = 0; h < c.q_heads; ++h)
      model::cuda::flash_backward_dq_block(blk, p, tile, tile, qt, h, dq_smem.data());
  for (std::int64_t kt = 0; kt * tile < c.tk; ++kt)
    for (std::int64_t g = 0; g < c.kv_heads; ++g)
      model::cuda::flash_backward_dkv_block(blk, p, tile, tile, kt, g, dkv_smem.data());
  CHECK(dq_smem.guard_intact());
  CHECK(dkv_smem.guard_intact());
  CHECK(flash_normwise(dq.matrix(c.tq, qf), ref.want_dq_r) < bounds.rounded);
  CHECK(flash_normwise(dk.matrix(c.tk, kvf), ref.want_dk_r) < bounds.rounded);
  CHECK(flash_normwise(dv.matrix(c.tk, kvf), ref.want_dv_r) < bounds.rounded);
  CHECK(flash_normwise(dq.matrix(c.tq, qf), ref.want_dq) < bounds.fp32);
  CHECK(flash_normwise(dk.matrix(c.tk, kvf), ref.want_dk) < bounds.fp32);
  CHECK(flash_normwise(dv.matrix(c.tk, kvf), ref.want_dv) < bounds.fp32);
  // row_dot = Σ_j p·dp = Σ_c dO·O per (head, row): p from the fp32 scores, dp from the rounded dO and V; from the
  // output, the rounded dO times the kernels' own output
  const Matrix out_m = out.matrix(c.tq, qf);
  const Matrix& o_for_row_dot = row_dot_from_out ? out_m : want_out_r;
  float rd_err = 0.0f, rd_scale = 0.0f;
  for (std::int64_t h = 0; h < c.q_heads; ++h)
    for (std::int64_t i = 0; i < c.tq; ++i) {
      const float want = d_out_r.row(i).segment(h * d, d).dot(o_for_row_dot.row(i).segment(h * d, d));
      rd_err = std::max(rd_err, std::fabs(row_dot.v[static_cast<std::size_t>(h * c.tq + i)] - want));
      rd_scale = std::max(rd_scale, std::fabs(want));
    }
  CHECK(rd_err <= 1e-5f * std::max(rd_scale, 1.0f));
  for (const Guarded* b : {&out, &lse, &row_dot, &dq, &dk, &dv}) CHECK(b->guard_intact());
  if (row_dot_from_out) {  // the dq body reads the given row_dot (no pass of its own): a wrong one changes dq
    const Matrix dq_given = dq.matrix(c.tq, qf);
    for (std::int64_t e = 0; e < row_dot.n; ++e) row_dot.v[static_cast<std::size_t>(e)] += 0.5f;
    std::fill(dq.v.begin(), dq.v.begin() + dq.n, 0.0f);
    for (std::int64_t qt = 0; qt * tile < c.tq; ++qt)
      for (std::int64_t h = 0; h < c.q_heads; ++h)
        model::cuda::flash_backward_dq_block(blk, p, tile, tile, qt, h, dq_smem.data());
    CHECK(flash_normwise(dq.matrix(c.tq, qf), dq_given) > 1e-3f);
  }
  if constexpr (K != model::cuda::FlashOperands::F32) {  // the operands were rounded: not the fp32 result
    CHECK(flash_normwise(out.matrix(c.tq, qf), want_out) > 0.0f);
    CHECK(flash_normwise(dk.matrix(c.tk, kvf), ref.want_dk) > 0.0f);
  }
}

}  // namespace

TEST_CASE("tiled attention bodies equal the CPU attention: GQA, tails that are not a tile multiple",
          "[cuda_host][model]") {
  for (const int tile : {16, 32}) {
    FlashCase c;
    check_flash(c, tile);
    c.head_dim = 32;
    c.tq = c.tk = 70;
    c.q_heads = c.kv_heads = 2;
    c.seed = 5;
    check_flash(c, tile);
  }
}

TEST_CASE("tiled attention bodies equal the CPU attention: key padding and a masked key", "[cuda_host][model]") {
  for (const int tile : {16, 32}) {
    FlashCase c;
    c.tq = c.tk = 45;
    c.key_mask.assign(45, 1);
    for (int j = 40; j < 45; ++j) c.key_mask[static_cast<std::size_t>(j)] = 0;  // right padding
    c.key_mask[17] = 0;
    c.seed = 9;
    check_flash(c, tile);
    c.key_mask[0] = 0;  // query 0 sees no key: out 0, lse -inf, no gradient
    check_flash(c, tile);
  }
}

TEST_CASE("tiled attention bodies equal the CPU attention: queries after a prefix (q_offset)", "[cuda_host][model]") {
  for (const int tile : {16, 32}) {
    FlashCase c;
    c.tq = 7;
    c.tk = 40;
    c.q_offset = 33;
    c.seed = 13;
    check_flash(c, tile);
  }
}

TEST_CASE("tiled attention bodies with bf16 and fp16 operands: the rounding of P and dS, nothing else",
          "[cuda_host][model]") {
  // Against the CPU attention of the rounded inputs, only the 16-bit P and dS remain (bf16: 8 bits, fp16: 11); against
  // the fp32 inputs, what FlashAttention-2 in bf16 / fp16 gives. lse and row_dot stay at 1e-5 (fp32 scores). The
  // bounds are about 2.5x the largest error seen over these cases (bf16 2.3e-3 / 3.6e-3, fp16 2.9e-4 / 5.2e-4).
  using model::cuda::FlashOperands;
  for (const int tile : {16, 32, 64}) {
    FlashCase c;
    c.head_dim = 64;
    c.tq = c.tk = 75;
    c.seed = 21;
    check_flash<FlashOperands::BF16>(c, tile, {6e-3f, 1e-2f});
    check_flash<FlashOperands::F16>(c, tile, {8e-4f, 1.5e-3f});
    c.key_mask.assign(75, 1);
    for (int j = 70; j < 75; ++j) c.key_mask[static_cast<std::size_t>(j)] = 0;
    c.key_mask[0] = 0;  // query 0 sees no key
    c.tq = 9;
    c.q_offset = 66;
    c.q_heads = 6;
    c.kv_heads = 3;
    c.head_dim = 32;
    check_flash<FlashOperands::BF16>(c, tile, {6e-3f, 1e-2f});
    check_flash<FlashOperands::F16>(c, tile, {8e-4f, 1.5e-3f});
  }
}

TEST_CASE("tiled attention backward with row_dot from the forward's output: one dq pass, the same results",
          "[cuda_host][model]") {
  // FlashAttention-2's D = Σ_c dO·O instead of the dq body's first pass over the keys (Σ_j p·dp): fp32 to the CPU's
  // 1e-5, 16-bit within the bounds above; padding, a masked key, a row that sees no key, GQA, a query offset.
  using model::cuda::FlashOperands;
  for (const int tile : {16, 32, 64}) {
    FlashCase c;
    check_flash(c, tile, {}, true);
    c.tq = c.tk = 45;
    c.key_mask.assign(45, 1);
    for (int j = 40; j < 45; ++j) c.key_mask[static_cast<std::size_t>(j)] = 0;
    c.key_mask[0] = 0;
    c.seed = 9;
    check_flash(c, tile, {}, true);
    check_flash<FlashOperands::BF16>(c, tile, {6e-3f, 1e-2f}, true);
    check_flash<FlashOperands::F16>(c, tile, {8e-4f, 1.5e-3f}, true);
    FlashCase off;
    off.tq = 7;
    off.tk = 40;
    off.q_offset = 33;
    off.q_heads = 6;
    off.kv_heads = 3;
    off.seed = 13;
    check_flash(off, tile, {}, true);
  }
}

TEST_CASE("tiled attention bodies take 64-row tiles with fp32 operands too", "[cuda_host][model]") {
  FlashCase c;
  c.tq = c.tk = 130;
  c.head_dim = 32;
  c.seed = 3;
  check_flash(c, 64);
}

TEST_CASE("the tiled attention's shared memory and the problems it takes", "[cuda_host][model]") {
  using model::cuda::FlashSmem;
  // fp32 operands: P and dS over S and dP; every tile row 16 bytes longer than its data (4 floats)
  const FlashSmem at32{32, 32, 128}, at16{16, 16, 128};
  CHECK(at32.ld_op() == 132);
  CHECK(at32.ld_s() == 36);
  CHECK(at32.ld_p() == 36);
  CHECK(at32.forward_bytes() == 4 * (3 * 32 * 132 + 32 * 132 + 32 * 36 + 4 * 32));
  CHECK(at32.dkv_bytes() == 110'848);  // 108 KiB: sm_80 / sm_90; at 16 under 64 KiB: every card
  CHECK(at16.dkv_bytes() <= 64 * 1024);
  // 16-bit operands (head dim 128; rows 8 halves longer): the tiles each card gives. T4 (64 KiB): forward and dq at
  // 32, dk/dv at 16; L4 (99 KiB): 32 each; A100 (163 KiB): forward and dq at 64, dk/dv at 32; H100 / H200
  // (227 KiB): 64 each.
  const FlashSmem h64{64, 64, 128, 2}, h32{32, 32, 128, 2}, h16{16, 16, 128, 2};
  CHECK(h64.ld_op() == 136);
  CHECK(h64.ld_p() == 72);
  CHECK(h64.ld_acc() == 132);
  CHECK(h64.forward_bytes() == 113'664);
  CHECK(h64.dq_bytes() == 148'224);
  CHECK(h64.dkv_bytes() == 190'976);
  CHECK(h32.forward_bytes() == 50'688);
  CHECK(h32.dq_bytes() == 63'872);
  CHECK(h32.dkv_bytes() == 83'200);
  CHECK(h16.dkv_bytes() == 38'528);
  for (const FlashSmem& l : {at32, at16, h64, h32, h16}) {
    for (const std::int64_t b : {l.forward_bytes(), l.dq_bytes(), l.dkv_bytes()})
      CHECK(b % 32 == 0);  // 32-byte pieces for the WMMA loads
    // 16 rows of every tile, and 16 elements of a row, are whole multiples of 32 bytes (the fragment pointers)
    CHECK(16 * l.ld_op() * l.op_bytes % 32 == 0);
    CHECK(16 * l.ld_p() * l.op_bytes % 32 == 0);
    CHECK(16 * l.ld_acc() * 4 % 32 == 0);
    CHECK(16 * l.ld_s() * 4 % 32 == 0);
  }
  model::cuda::AttentionParams p;
  p.tq = p.tk = 8;
  p.q_heads = p.kv_heads = 1;
  for (const std::int64_t d : {16, 64, 128, 256}) {
    p.head_dim = d;
    CHECK(model::cuda::flash_attention_takes(p));
  }
  for (const std::int64_t d : {8, 40, 100, 512}) {
    p.head_dim = d;
    CHECK_FALSE(model::cuda::flash_attention_takes(p));
    CHECK_THROWS_WITH(model::cuda::check_flash_attention(p, 16, "who"), Catch::Contains("multiple of 16"));
  }
  p.head_dim = 64;
  CHECK_THROWS_WITH(model::cuda::check_flash_attention(p, 24, "who"), Catch::Contains("must be 16, 32 or 64"));
}

namespace {

// The register-tile kernels' bodies (model/cuda/flash_attention_mma.cuh) over their grids, each block on 128 host
// threads with the PTX ISA's mma fragments (simt_block.hpp), against the CPU attention: of the rounded inputs within
// the rounding of P and dS (bounds.rounded), of the inputs as they are within what 16-bit operands give
// (bounds.fp32); lse from the rounded scores to 1e-5; a row that sees no key 0 and -inf; the backward as the decoder
// runs it (row_dot = Σ dO·O from the forward's output, flash_row_dot), dq, dk and dv added to what they held; nothing
// written past the outputs or the shared memory.
template <model::cuda::FlashOperands K, int D>
void check_flash_mma(const FlashCase& c, FlashBounds bounds) {
  INFO("register tiles: tq " << c.tq << " tk " << c.tk << " heads " << c.q_heads << "/" << c.kv_heads << " d " << D
                             << " offset " << c.q_offset << " masked " << !c.key_mask.empty() << " operands "
                             << model::cuda::flash_operands_name(K));
  REQUIRE(c.head_dim == D);
  // The backward's references are added to gradients that start at 1 (the kernels add, +=).
  const FlashReference ref(c, K, 1.0f);
  const std::int64_t qf = ref.qf, kvf = ref.kvf;
  const Matrix &want_out = ref.want_out, &want_out_r = ref.want_out_r;
  FlashOutputs o(c, qf, kvf, 1.0f);
  Guarded &out = o.out, &lse = o.lse, &row_dot = o.row_dot, &dq = o.dq, &dk = o.dk, &dv = o.dv;
  model::cuda::AttentionParams p = o.params(c, ref);
  p.forward_out = out.data();
  using Format = model::cuda::FlashOperandFormat<K>;
  constexpr std::uint32_t kGuardWord = 0x5a5a5a5au;
  constexpr auto words = static_cast<std::size_t>(model::cuda::FlashMmaSmem<D>::words);
  constexpr auto dkv_words = static_cast<std::size_t>(model::cuda::FlashMmaDkvSmem<D>::words);
  constexpr auto dkv2_words = static_cast<std::size_t>(model::cuda::FlashMmaDkvSmem<D, 2>::words);
  // smem2: the forward's and dq's two key-tile sets, dkv2_smem dk/dv's two query-tile sets
  // (FlashAttentionOptions::pipelined)
  std::vector<std::uint32_t> smem(words + 16, kGuardWord), smem2(2 * words + 16, kGuardWord),
      dkv_smem(dkv_words + 16, kGuardWord), dkv2_smem(dkv2_words + 16, kGuardWord);
  test::SimtBlock<Format> block(model::cuda::kMmaThreads);
  const auto forward = [&](const model::cuda::AttentionParams& pr, int stages = 1) {
    for (std::int64_t qt = 0; qt * model::cuda::kMmaQueryRows < c.tq; ++qt)
      for (std::int64_t h = 0; h < c.q_heads; ++h)
        block.run([&](auto& thread) {
          if (stages == 2)
            model::cuda::flash_mma_forward_block<D, 2>(thread, pr, qt, h, smem2.data());
          else
            model::cuda::flash_mma_forward_block<D>(thread, pr, qt, h, smem.data());
        });
  };
  // The backward: row_dot from the forward's output, then the dq and dk/dv bodies.
  const auto backward = [&](const model::cuda::AttentionParams& pr, int stages = 1) {
    for (std::int64_t h = 0; h < c.q_heads; ++h)
      for (std::int64_t i = 0; i < c.tq; ++i) pr.row_dot[h * c.tq + i] = model::cuda::flash_row_dot<Format>(pr, h, i);
    for (std::int64_t qt = 0; qt * model::cuda::kMmaQueryRows < c.tq; ++qt)
      for (std::int64_t h = 0; h < c.q_heads; ++h)
        block.run([&](auto& thread) {
          if (stages == 2)
            model::cuda::flash_mma_backward_dq_block<D, 2>(thread, pr, qt, h, smem2.data());
          else
            model::cuda::flash_mma_backward_dq_block<D>(thread, pr, qt, h, smem.data());
        });
    for (std::int64_t kt = 0; kt * model::cuda::kMmaKeys < c.tk; ++kt)
      for (std::int64_t g = 0; g < c.kv_heads; ++g)
        block.run([&](auto& thread) {
          if (stages == 2)
            model::cuda::flash_mma_backward_dkv_block<D, 2>(thread, pr, kt, g, dkv2_smem.data());
          else
            model::cuda::flash_mma_backward_dkv_block<D>(thread, pr, kt, g, dkv_smem.data());
        });
  };
  forward(p);
  CHECK(std::all_of(smem.begin() + static_cast<std::ptrdiff_t>(words), smem.end(),
                    [](std::uint32_t w) { return w == kGuardWord; }));
  CHECK(out.guard_intact());
  CHECK(lse.guard_intact());
  const Matrix got = out.matrix(c.tq, qf);
  CHECK(got.allFinite());
  CHECK(flash_normwise(got, want_out_r) < bounds.rounded);
  CHECK(flash_normwise(got, want_out) < bounds.fp32);
  CHECK(flash_normwise(got, want_out) > 0.0f);  // the operands were rounded: not the fp32 result
  CHECK(flash_lse_error(c, p, ref.qr, ref.kr, lse) < 1e-5f);
  for (std::int64_t h = 0; h < c.q_heads; ++h)  // a row that sees no key: output 0
    for (std::int64_t i = 0; i < c.tq; ++i)
      if (std::isinf(lse.v[static_cast<std::size_t>(h * c.tq + i)])) CHECK(got.row(i).segment(h * D, D).isZero(0.0f));

  backward(p);
  CHECK(std::all_of(smem.begin() + static_cast<std::ptrdiff_t>(words), smem.end(),
                    [](std::uint32_t w) { return w == kGuardWord; }));
  CHECK(std::all_of(dkv_smem.begin() + static_cast<std::ptrdiff_t>(dkv_words), dkv_smem.end(),
                    [](std::uint32_t w) { return w == kGuardWord; }));
  for (const Guarded* b : {&row_dot, &dq, &dk, &dv}) CHECK(b->guard_intact());
  // what the kernels added, against the CPU's gradients (the 1 they started from taken off both)
  const auto added = [](const Matrix& m) { return Matrix(m.array() - 1.0f); };
  CHECK(flash_normwise(added(dq.matrix(c.tq, qf)), added(ref.want_dq_r)) < bounds.rounded);
  CHECK(flash_normwise(added(dk.matrix(c.tk, kvf)), added(ref.want_dk_r)) < bounds.rounded);
  CHECK(flash_normwise(added(dv.matrix(c.tk, kvf)), added(ref.want_dv_r)) < bounds.rounded);
  CHECK(flash_normwise(added(dq.matrix(c.tq, qf)), added(ref.want_dq)) < bounds.fp32);
  CHECK(flash_normwise(added(dk.matrix(c.tk, kvf)), added(ref.want_dk)) < bounds.fp32);
  CHECK(flash_normwise(added(dv.matrix(c.tk, kvf)), added(ref.want_dv)) < bounds.fp32);

  // Again from the inputs' 16-bit patterns (AttentionParams::q16, k16, v16, d_out16: what a caller rounds once for
  // the kernels): the same bits everywhere, as the kernels round the fp32 values to the same patterns themselves.
  const auto patterns = [](const Matrix& m) {
    std::vector<std::uint16_t> b(static_cast<std::size_t>(m.size()));
    for (Eigen::Index i = 0; i < m.size(); ++i) b[static_cast<std::size_t>(i)] = Format::from_float(m.data()[i]);
    return b;
  };
  const std::vector<std::uint16_t> q16 = patterns(ref.q), k16 = patterns(ref.k), v16 = patterns(ref.v),
                                   d_out16 = patterns(ref.d_out);
  FlashOutputs o16(c, qf, kvf, 1.0f);
  model::cuda::AttentionParams p16 = o16.params(c, ref);
  p16.forward_out = o16.out.data();
  p16.q16 = q16.data();
  p16.k16 = k16.data();
  p16.v16 = v16.data();
  p16.d_out16 = d_out16.data();
  std::vector<std::uint16_t> out16(static_cast<std::size_t>(c.tq * qf), 0xFFFF);  // the forward's 16-bit copy of out
  p16.out16 = out16.data();
  // ... and with the forward's and dq's two key-tile sets (the next tile's copy in flight on the device), from the
  // fp32 inputs and from the 16-bit ones: the same bits again.
  FlashOutputs o2(c, qf, kvf, 1.0f), o16x2(c, qf, kvf, 1.0f);
  model::cuda::AttentionParams p2 = o2.params(c, ref), p16x2 = o16x2.params(c, ref);
  p2.forward_out = o2.out.data();
  p16x2.forward_out = o16x2.out.data();
  p16x2.q16 = q16.data();
  p16x2.k16 = k16.data();
  p16x2.v16 = v16.data();
  p16x2.d_out16 = d_out16.data();
  forward(p16);
  backward(p16);
  forward(p2, 2);
  backward(p2, 2);
  forward(p16x2, 2);
  backward(p16x2, 2);
  const auto same_bits = [](const Guarded& a, const Guarded& b) {
    return a.v.size() == b.v.size() && std::memcmp(a.v.data(), b.v.data(), a.v.size() * sizeof(float)) == 0;
  };
  CHECK(out16 == patterns(out.matrix(c.tq, qf)));  // out's values rounded as the format rounds them
  for (const FlashOutputs* run : {&o16, &o2, &o16x2}) {
    CHECK(same_bits(run->out, out));
    CHECK(same_bits(run->lse, lse));
    CHECK(same_bits(run->row_dot, row_dot));
    CHECK(same_bits(run->dq, dq));
    CHECK(same_bits(run->dk, dk));
    CHECK(same_bits(run->dv, dv));
  }
  CHECK(std::all_of(smem2.begin() + static_cast<std::ptrdiff_t>(2 * words), smem2.end(),
                    [](std::uint32_t w) { return w == kGuardWord; }));
  CHECK(std::all_of(dkv2_smem.begin() + static_cast<std::ptrdiff_t>(dkv2_words), dkv2_smem.end(),
                    [](std::uint32_t w) { return w == kGuardWord; }));
}

}  // namespace

TEST_CASE("register-tile attention forward on the PTX fragments equals the CPU attention, GQA, tails, several tiles",
          "[cuda_host][model]") {
  // Query tiles of 64 rows, key tiles of 64: 75 and 130 rows cross tile boundaries (the online softmax rescales O
  // and l when a later key tile raises a row's max); bounds as the shared-memory kernels' (the rounding of P).
  using model::cuda::FlashOperands;
  FlashCase c;
  c.head_dim = 64;
  c.tq = c.tk = 75;
  c.seed = 21;
  check_flash_mma<FlashOperands::BF16, 64>(c, {6e-3f, 1e-2f});
  check_flash_mma<FlashOperands::F16, 64>(c, {8e-4f, 1.5e-3f});
  c.tq = c.tk = 130;
  c.q_heads = c.kv_heads = 1;
  c.seed = 3;
  check_flash_mma<FlashOperands::BF16, 64>(c, {6e-3f, 1e-2f});
}

TEST_CASE("register-tile attention forward at head dim 128, key padding, a row that sees no key, a query offset",
          "[cuda_host][model]") {
  using model::cuda::FlashOperands;
  FlashCase c;
  c.head_dim = 128;
  c.tq = c.tk = 70;
  c.q_heads = 2;
  c.kv_heads = 1;
  c.key_mask.assign(70, 1);
  for (int j = 65; j < 70; ++j) c.key_mask[static_cast<std::size_t>(j)] = 0;  // right padding
  c.key_mask[0] = 0;                                                          // query 0 sees no key
  c.key_mask[17] = 0;
  c.seed = 9;
  check_flash_mma<FlashOperands::BF16, 128>(c, {6e-3f, 1e-2f});
  check_flash_mma<FlashOperands::F16, 128>(c, {8e-4f, 1.5e-3f});
  FlashCase off;  // generation's shape: a few queries after a cached prefix, GQA 6/3
  off.head_dim = 64;
  off.tq = 9;
  off.tk = 75;
  off.q_offset = 66;
  off.q_heads = 6;
  off.kv_heads = 3;
  off.key_mask.assign(75, 1);
  off.key_mask[0] = 0;
  off.seed = 13;
  check_flash_mma<FlashOperands::F16, 64>(off, {8e-4f, 1.5e-3f});
  check_flash_mma<FlashOperands::BF16, 64>(off, {6e-3f, 1e-2f});
  FlashCase past;      // more than one warp's rows after an offset that is not a tile multiple: the key range of the
  past.head_dim = 64;  // tile's last row, not its first warp's
  past.tq = 40;
  past.tk = 70;
  past.q_offset = 30;
  past.q_heads = 2;
  past.kv_heads = 1;
  past.seed = 31;
  check_flash_mma<FlashOperands::BF16, 64>(past, {6e-3f, 1e-2f});
}

TEST_CASE("register-tile attention: the visibility a thread reads once per tile (key flags, causal reach)",
          "[cuda_host][model]") {
  // Every thread of the block, every key tile of every problem below: MmaVisibleKeys (the flags of the lane's
  // columns, written by threads 0-3, and the rows' reach) says for each accumulator element (n, e) exactly what the
  // definition says: key j = k0 + 8n + 2t + (e & 1) is inside the sequence and not masked, and query row i of the
  // element (g or g + 8 of the warp's 16) is inside the sequence and j <= q_offset + i.
  using model::cuda::kMmaKeys;
  using model::cuda::kMmaQueryRows;
  using model::cuda::kMmaThreads;
  struct Problem {
    std::int64_t tq, tk, q_offset;
    bool masked;
  };
  const Problem problems[] = {{64, 64, 0, false},   {40, 70, 30, true},    {130, 200, 70, true},
                              {17, 300, 283, true}, {70, 3, 0, false},     {64, 129, 65, false},
                              {200, 200, 0, true},  {5, 4000, 3995, true}, {3, 70, 5000000000, true}};
  std::uint32_t smem[model::cuda::FlashMmaSmem<64>::words];
  for (const Problem& pr : problems) {
    std::vector<int> mask(static_cast<std::size_t>(pr.tk), 1);
    if (pr.masked) {
      for (std::int64_t j = 0; j < pr.tk; ++j) mask[static_cast<std::size_t>(j)] = (j * 7 + 3) % 5 == 0 ? 0 : 1;
      mask[0] = 0;
      mask[static_cast<std::size_t>(pr.tk - 1)] = 0;
    }
    model::cuda::AttentionParams p;
    p.head_dim = 64;
    p.tq = pr.tq;
    p.tk = pr.tk;
    p.q_offset = pr.q_offset;
    p.key_mask = pr.masked ? mask.data() : nullptr;
    const std::vector<float> kv(static_cast<std::size_t>(pr.tk * 64), 0.5f);
    p.k = p.v = kv.data();
    p.q_heads = p.kv_heads = 1;
    const model::cuda::MmaKeyTiles<64> tiles(smem);
    int checked = 0, seen = 0, wrong = 0;
    for (std::int64_t qt = 0; qt * kMmaQueryRows < pr.tq; ++qt)
      for (std::int64_t k0 = 0; k0 < pr.tk; k0 += kMmaKeys) {
        std::fill(std::begin(smem), std::end(smem), 0xdeadbeefu);  // stale flags would show
        for (int tid = 0; tid < kMmaThreads; ++tid)
          tiles.load<model::cuda::FlashOperandFormat<model::cuda::FlashOperands::BF16>>(tid, p, k0, 0);
        for (int tid = 0; tid < kMmaThreads; ++tid) {
          const model::cuda::MmaThread th(tid, qt * kMmaQueryRows, pr.tq);
          const model::cuda::MmaVisibleKeys sees = tiles.visible(p, th, k0);
          for (int n = 0; n < kMmaKeys / 8; ++n)
            for (int e = 0; e < 4; ++e) {
              const std::int64_t j = k0 + 8 * n + 2 * th.ln.t + (e & 1), i = th.row[e / 2];
              const bool expected = i < pr.tq && j < pr.tk && (!pr.masked || mask[static_cast<std::size_t>(j)] != 0) &&
                                    j <= pr.q_offset + i;
              ++checked;
              seen += expected ? 1 : 0;
              wrong += sees(n, e) != expected ? 1 : 0;
            }
        }
      }
    INFO("tq " << pr.tq << " tk " << pr.tk << " offset " << pr.q_offset << " masked " << pr.masked);
    CHECK(wrong == 0);
    CHECK(seen > 0);
    CHECK(seen < checked);
    // The dk/dv kernel's side: its thread's rows are two keys of key tile kt, its columns the queries of a query
    // tile; MmaVisibleQueries, from the keys' flags as the kernel computes them, against the same definition.
    int dkv_checked = 0, dkv_seen = 0, dkv_wrong = 0;
    for (std::int64_t kt = 0; kt * kMmaKeys < pr.tk; ++kt)
      for (int tid = 0; tid < kMmaThreads; ++tid) {
        const model::cuda::MmaThread th(tid, kt * kMmaKeys, pr.tk);
        bool key_ok[2];
        for (int r = 0; r < 2; ++r)
          key_ok[r] = th.in[r] && (!pr.masked || mask[static_cast<std::size_t>(th.row[r])] != 0);
        for (std::int64_t i0 = 0; i0 < pr.tq; i0 += kMmaQueryRows) {
          const auto by = model::cuda::MmaVisibleQueries::of(model::cuda::MmaVisibleQueries::keys(p, th, key_ok), i0);
          for (int n = 0; n < kMmaQueryRows / 8; ++n)
            for (int e = 0; e < 4; ++e) {
              const std::int64_t i = i0 + 8 * n + 2 * th.ln.t + (e & 1), j = th.row[e / 2];
              const bool expected = i < pr.tq && j < pr.tk && (!pr.masked || mask[static_cast<std::size_t>(j)] != 0) &&
                                    j <= pr.q_offset + i;
              ++dkv_checked;
              dkv_seen += expected ? 1 : 0;
              dkv_wrong += by(n, e) != expected ? 1 : 0;
            }
        }
      }
    CHECK(dkv_wrong == 0);
    CHECK(dkv_seen == seen);  // the same (query, key) pairs, from the other side
    CHECK(dkv_seen < dkv_checked);
  }
}

TEST_CASE("register-tile attention forward, its shared memory and the problems it takes", "[cuda_host][model]") {
  using model::cuda::FlashMmaSmem;
  // K and V tiles of 64 keys, rows 4 words longer than their data, 16 key flags a word: under the 48 KiB of static
  // shared memory a block gets on every card, a multiple of 16 bytes (a second stage's cp.async rows stay aligned)
  CHECK(FlashMmaSmem<128>::bytes == 4 * (2 * 64 * (64 + 4) + 4));
  CHECK(FlashMmaSmem<64>::bytes == 4 * (2 * 64 * (32 + 4) + 4));
  CHECK(FlashMmaSmem<64>::bytes % 16 == 0);
  CHECK(FlashMmaSmem<128>::bytes % 16 == 0);
  CHECK(FlashMmaSmem<128>::bytes <= 48 * 1024);
  // dk/dv: K and V, then per stage Q, dO, lse and row_dot; two stages at head dim 128 above sm_86 / sm_89's 99 KiB a
  // block, within sm_80's 163 and sm_90's 227
  using model::cuda::FlashMmaDkvSmem;
  CHECK(FlashMmaDkvSmem<128>::bytes == 4 * (4 * 64 * (64 + 4) + 2 * 64));
  CHECK(FlashMmaDkvSmem<128, 2>::bytes == 4 * (6 * 64 * (64 + 4) + 4 * 64));
  CHECK(FlashMmaDkvSmem<128, 2>::bytes > 99 * 1024);
  CHECK(FlashMmaDkvSmem<128, 2>::bytes <= 163 * 1024);
  CHECK(FlashMmaDkvSmem<64, 2>::bytes <= 99 * 1024);
  // a row is 4 banks from the next: the K fragment's 8 rows × 4 lanes on 32 banks
  std::vector<int> banks;
  for (int g = 0; g < 8; ++g)
    for (int t = 0; t < 4; ++t) banks.push_back((g * FlashMmaSmem<128>::row_words + t) % 32);
  std::sort(banks.begin(), banks.end());
  CHECK(std::unique(banks.begin(), banks.end()) == banks.end());
  CHECK(model::cuda::flash_mma_head_dim(64));
  CHECK(model::cuda::flash_mma_head_dim(128));
  CHECK_FALSE(model::cuda::flash_mma_head_dim(96));
  CHECK_FALSE(model::cuda::flash_mma_head_dim(32));
}

TEST_CASE("the host block's fibers: a barrier orders every thread, a skipped barrier and a thrown exception are errors",
          "[cuda_host][model]") {
  using Format = model::cuda::FlashOperandFormat<model::cuda::FlashOperands::BF16>;
  test::SimtBlock<Format> block(64);
  // Each thread writes its slot, waits at the block's barrier, then reads its neighbours' (what a missing barrier
  // would read stale), twice over, with a butterfly shuffle inside each warp.
  std::vector<int> slots(64, -1), seen(64, -1);
  std::vector<float> xor_one(64, 0.0f);
  for (int round = 0; round < 2; ++round) {
    block.run([&](auto& thread) {
      const int t = thread.thread();
      slots[static_cast<std::size_t>(t)] = 100 * round + t;
      thread.sync();
      seen[static_cast<std::size_t>(t)] = slots[static_cast<std::size_t>((t + 33) % 64)];
      xor_one[static_cast<std::size_t>(t)] = thread.shfl_xor(static_cast<float>(t), 1);
    });
    for (int t = 0; t < 64; ++t) {
      CHECK(seen[static_cast<std::size_t>(t)] == 100 * round + (t + 33) % 64);
      CHECK(xor_one[static_cast<std::size_t>(t)] == static_cast<float>(t ^ 1));
    }
  }
  // A thread that ends without the barrier the others wait at: a hang on a GPU, an error here.
  CHECK_THROWS_WITH(block.run([&](auto& thread) {
    if (thread.thread() != 5) thread.sync();
  }),
                    Catch::Contains("63 threads wait at a barrier"));
  // An exception out of one thread's body is rethrown by run(), the others stopped. (Not under AddressSanitizer, which
  // the fiber switches are not announced to: unwinding a fiber's stack would read as a stack-use-after-scope.)
#if !defined(__SANITIZE_ADDRESS__)
  CHECK_THROWS_WITH(block.run([&](auto& thread) {
    if (thread.thread() == 7) throw std::runtime_error("thread 7 failed");
    thread.sync();
  }),
                    Catch::Contains("thread 7 failed"));
#endif
  // The block runs again after both.
  block.run([&](auto& thread) {
    thread.sync();
    seen[static_cast<std::size_t>(thread.thread())] = thread.thread();
  });
  CHECK(seen[63] == 63);
}

TEST_CASE("the host warp's mma is the PTX ISA's m16n8k16: fragments laid out by the ISA's tables give A·B + C",
          "[cuda_host][model]") {
  // The ISA's mapping from (lane, element i) to (row, column), written here as its tables give it (apart from the
  // inverse that simt_block.hpp computes): A a_i at row groupID (i in 0, 1, 4, 5) or groupID + 8, column
  // threadID_in_group·2 + (i & 1) (+ 8 for i >= 4); B b_i at row threadID_in_group·2 + (i & 1) (+ 8 for i >= 2),
  // column groupID; C c_i at row groupID (i < 2) or groupID + 8, column threadID_in_group·2 + (i & 1). Distinct
  // bf16-exact values, so a swapped element shows.
  using Format = model::cuda::FlashOperandFormat<model::cuda::FlashOperands::BF16>;
  float a[16][16], b[16][8], c[16][8];
  for (int r = 0; r < 16; ++r)
    for (int k = 0; k < 16; ++k) a[r][k] = static_cast<float>((r * 16 + k) % 29 - 14) / 8.0f;
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 8; ++n) b[k][n] = static_cast<float>((k * 8 + n) % 23 - 11) / 4.0f;
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) c[r][n] = static_cast<float>(r - n);
  float got[16][8] = {};
  test::SimtBlock<Format> block(32);
  block.run([&](auto& thread) {
    const int lane = thread.thread(), group = lane >> 2, in_group = lane % 4;
    std::uint16_t ae[8], be[4];
    for (int i = 0; i < 8; ++i) {
      const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
      const int col = in_group * 2 + (i & 1) + (i >= 4 ? 8 : 0);
      ae[i] = Format::from_float(a[row][col]);
    }
    for (int i = 0; i < 4; ++i) be[i] = Format::from_float(b[in_group * 2 + (i & 1) + (i >= 2 ? 8 : 0)][group]);
    const std::uint32_t ar[4] = {ae[0] | (std::uint32_t{ae[1]} << 16), ae[2] | (std::uint32_t{ae[3]} << 16),
                                 ae[4] | (std::uint32_t{ae[5]} << 16), ae[6] | (std::uint32_t{ae[7]} << 16)};
    const std::uint32_t br[2] = {be[0] | (std::uint32_t{be[1]} << 16), be[2] | (std::uint32_t{be[3]} << 16)};
    float cr[4];
    for (int i = 0; i < 4; ++i) cr[i] = c[i < 2 ? group : group + 8][in_group * 2 + (i & 1)];
    thread.mma(cr, ar, br);
    for (int i = 0; i < 4; ++i) got[i < 2 ? group : group + 8][in_group * 2 + (i & 1)] = cr[i];
  });
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      double want = c[r][n];
      for (int k = 0; k < 16; ++k) want += static_cast<double>(a[r][k]) * b[k][n];
      INFO("row " << r << " column " << n);
      CHECK(got[r][n] == static_cast<float>(want));  // small exact values: the sum is exact in float
    }
}

TEST_CASE("the register tiles' ldmatrix loads give each lane the mma.sync operands the ISA lays out",
          "[cuda_host][model]") {
  // model::cuda::MmaLane over a head-dim-128 tile (rows of 68 words) whose 16-bit values say where they are (row·128 +
  // column), on a host warp whose ldmatrix is the ISA's (simt_block.hpp): every lane's registers against the m16n8k16
  // operand layouts, written out here (A a_i: row groupID for i in {0, 1, 4, 5}, else groupID + 8, column
  // threadID_in_group·2 + (i & 1), + 8 for i >= 4; B b_i: row threadID_in_group·2 + (i & 1), + 8 for i >= 2, column
  // groupID; register j holds elements 2j and 2j + 1, the first in the low half), for tiles whose rows run along k (K
  // in S = Q·Kᵀ; K and V as A in the dk/dv kernel) and down k (V in O += P·V).
  using Format = model::cuda::FlashOperandFormat<model::cuda::FlashOperands::BF16>;
  constexpr int rw = model::cuda::FlashMmaSmem<128>::row_words;
  std::vector<std::uint32_t> tile(static_cast<std::size_t>(64 * rw), 0xFFFFFFFFu);
  for (int r = 0; r < 64; ++r)
    for (int c = 0; c < 128; c += 2)
      tile[static_cast<std::size_t>(r * rw + c / 2)] =
          static_cast<std::uint32_t>(r * 128 + c) | (static_cast<std::uint32_t>(r * 128 + c + 1) << 16);
  const auto value = [](int r, int c) { return static_cast<std::uint32_t>(r * 128 + c); };
  const auto pair = [](std::uint32_t lo, std::uint32_t hi) { return lo | (hi << 16); };
  std::atomic<int> mismatches{0}, checked{0};  // counted by the warp's 32 threads
  const auto expect = [&](std::uint32_t got, std::uint32_t want) {
    ++checked;
    if (got != want) ++mismatches;
  };
  test::SimtBlock<Format> warp(32);
  warp.run([&](auto& thread) {
    const int lane = thread.thread(), g = lane / 4, t = lane % 4;
    const model::cuda::MmaLane ln{g, t};
    const auto a_row = [&](int i) { return (i < 2 || (i >= 4 && i < 6)) ? g : g + 8; };
    const auto a_col = [&](int i) { return t * 2 + (i & 1) + (i >= 4 ? 8 : 0); };
    const auto b_k = [&](int i) { return t * 2 + (i & 1) + (i >= 2 ? 8 : 0); };
    for (const int r0 : {0, 16, 48})
      for (int kk = 0; kk < 8; ++kk) {
        std::uint32_t a[4];  // A(row, k) = tile[r0 + row][16·kk + k]
        ln.a_of_tile(thread, a, tile.data(), rw, r0, kk);
        for (int j = 0; j < 4; ++j)
          expect(a[j], pair(value(r0 + a_row(2 * j), 16 * kk + a_col(2 * j)),
                            value(r0 + a_row(2 * j + 1), 16 * kk + a_col(2 * j + 1))));
      }
    for (const int n0 : {0, 16, 48})
      for (int kk = 0; kk < 8; ++kk) {
        std::uint32_t b0[2], b1[2];  // B(k, n) = tile[n0 + n][16·kk + k], then n0 + 8
        ln.b_along_rows(thread, b0, b1, tile.data(), rw, n0, kk);
        for (int j = 0; j < 2; ++j) {
          expect(b0[j], pair(value(n0 + g, 16 * kk + b_k(2 * j)), value(n0 + g, 16 * kk + b_k(2 * j + 1))));
          expect(b1[j], pair(value(n0 + 8 + g, 16 * kk + b_k(2 * j)), value(n0 + 8 + g, 16 * kk + b_k(2 * j + 1))));
        }
      }
    for (const int n0 : {0, 16, 112})
      for (int kk = 0; kk < 4; ++kk) {
        std::uint32_t b0[2], b1[2];  // B(k, n) = tile[16·kk + k][n0 + n], then n0 + 8
        ln.b_down_rows(thread, b0, b1, tile.data(), rw, n0, kk);
        for (int j = 0; j < 2; ++j) {
          expect(b0[j], pair(value(16 * kk + b_k(2 * j), n0 + g), value(16 * kk + b_k(2 * j + 1), n0 + g)));
          expect(b1[j], pair(value(16 * kk + b_k(2 * j), n0 + 8 + g), value(16 * kk + b_k(2 * j + 1), n0 + 8 + g)));
        }
      }
  });
  CHECK(checked == 32 * (3 * 8 * 4 + 3 * 8 * 4 + 3 * 4 * 4));
  CHECK(mismatches == 0);
}
