// The tiled (flash-style) attention kernels' block bodies (model/cuda/flash_attention.cuh), run by the sequential
// host block over the whole grid, against the CPU attention (model::attention_forward / attention_backward): the
// online softmax across key tiles, the causal tile bounds, GQA, the key mask, the tails of sequences that are not a
// tile multiple, the two-pass dq and the dk/dv accumulation. What the device adds is the thread split of for_each and
// the tile products (FMA loops, or TF32 tensor cores), which tests/cuda/test_model.cu checks on a GPU.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

#include <vidlora/core/rng.hpp>
#include <vidlora/model/attention.hpp>
#include <vidlora/model/cuda/flash_attention.cuh>

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

void check_flash(const FlashCase& c, int tile) {
  INFO("tq " << c.tq << " tk " << c.tk << " heads " << c.q_heads << "/" << c.kv_heads << " d " << c.head_dim
             << " offset " << c.q_offset << " masked " << !c.key_mask.empty() << " tile " << tile);
  const std::int64_t d = c.head_dim, qf = c.q_heads * d, kvf = c.kv_heads * d;
  const Matrix q = flash_random(c.tq, qf, c.seed), k = flash_random(c.tk, kvf, c.seed + 1),
               v = flash_random(c.tk, kvf, c.seed + 2), d_out = flash_random(c.tq, qf, c.seed + 3);
  // The reference.
  const model::AttentionShape shape{c.q_heads, c.kv_heads, d};
  Matrix probs;
  const Matrix want_out = model::attention_forward<float>(q, k, v, shape, c.q_offset, c.key_mask, &probs);
  Matrix want_dq = Matrix::Zero(c.tq, qf), want_dk = Matrix::Zero(c.tk, kvf), want_dv = Matrix::Zero(c.tk, kvf);
  model::attention_backward<float>(q, k, v, shape, probs, d_out, want_dq, want_dk, want_dv);

  // The tiled kernels' bodies over the grid.
  Guarded out(c.tq * qf, std::nanf("")), lse(c.q_heads * c.tq, std::nanf("")), row_dot(c.q_heads * c.tq, 0.0f),
      dq(c.tq * qf, 0.0f), dk(c.tk * kvf, 0.0f), dv(c.tk * kvf, 0.0f);
  model::cuda::AttentionParams p;
  p.q = q.data();
  p.k = k.data();
  p.v = v.data();
  p.key_mask = c.key_mask.empty() ? nullptr : c.key_mask.data();
  p.out = out.data();
  p.lse = lse.data();
  p.d_out = d_out.data();
  p.dq = dq.data();
  p.dk = dk.data();
  p.dv = dv.data();
  p.row_dot = row_dot.data();
  p.tq = c.tq;
  p.tk = c.tk;
  p.q_heads = c.q_heads;
  p.kv_heads = c.kv_heads;
  p.head_dim = d;
  p.q_offset = c.q_offset;
  REQUIRE(model::cuda::flash_attention_takes(p));
  model::cuda::check_flash_attention(p, tile, "test");
  const model::cuda::FlashSmem lay{tile, tile, static_cast<int>(d)};
  model::cuda::FlashHostBlock blk;
  std::vector<float> smem(static_cast<std::size_t>(lay.forward_floats()), std::nanf(""));
  for (std::int64_t qt = 0; qt * tile < c.tq; ++qt)
    for (std::int64_t h = 0; h < c.q_heads; ++h)
      model::cuda::flash_forward_block(blk, p, tile, tile, qt, h, smem.data());
  CHECK(flash_normwise(out.matrix(c.tq, qf), want_out) < 1e-5f);
  // lse = log Σ exp(score) over the visible keys, from the reference's scores in double
  float lse_err = 0.0f;
  for (std::int64_t h = 0; h < c.q_heads; ++h)
    for (std::int64_t i = 0; i < c.tq; ++i) {
      const std::int64_t g = h / (c.q_heads / c.kv_heads);
      double m = -std::numeric_limits<double>::infinity(), sum = 0.0;
      std::vector<double> s;
      for (std::int64_t j = 0; j < c.tk; ++j) {
        if (!model::cuda::attention_visible(p, i, j)) continue;
        double acc = 0.0;
        for (std::int64_t e = 0; e < d; ++e) acc += static_cast<double>(q(i, h * d + e)) * k(j, g * d + e);
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
  CHECK(lse_err < 1e-5f);

  std::vector<float> dq_smem(static_cast<std::size_t>(lay.dq_floats()), std::nanf("")),
      dkv_smem(static_cast<std::size_t>(lay.dkv_floats()), std::nanf(""));
  for (std::int64_t qt = 0; qt * tile < c.tq; ++qt)
    for (std::int64_t h = 0; h < c.q_heads; ++h)
      model::cuda::flash_backward_dq_block(blk, p, tile, tile, qt, h, dq_smem.data());
  for (std::int64_t kt = 0; kt * tile < c.tk; ++kt)
    for (std::int64_t g = 0; g < c.kv_heads; ++g)
      model::cuda::flash_backward_dkv_block(blk, p, tile, tile, kt, g, dkv_smem.data());
  CHECK(flash_normwise(dq.matrix(c.tq, qf), want_dq) < 1e-5f);
  CHECK(flash_normwise(dk.matrix(c.tk, kvf), want_dk) < 1e-5f);
  CHECK(flash_normwise(dv.matrix(c.tk, kvf), want_dv) < 1e-5f);
  // row_dot = Σ_j p·dp = Σ_c dO·O per (head, row)
  float rd_err = 0.0f, rd_scale = 0.0f;
  for (std::int64_t h = 0; h < c.q_heads; ++h)
    for (std::int64_t i = 0; i < c.tq; ++i) {
      const float want = d_out.row(i).segment(h * d, d).dot(want_out.row(i).segment(h * d, d));
      rd_err = std::max(rd_err, std::fabs(row_dot.v[static_cast<std::size_t>(h * c.tq + i)] - want));
      rd_scale = std::max(rd_scale, std::fabs(want));
    }
  CHECK(rd_err <= 1e-5f * std::max(rd_scale, 1.0f));
  for (const Guarded* b : {&out, &lse, &row_dot, &dq, &dk, &dv}) CHECK(b->guard_intact());
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

TEST_CASE("the tiled attention's shared memory and the problems it takes", "[cuda_host][model]") {
  const model::cuda::FlashSmem at32{32, 32, 128}, at16{16, 16, 128};
  CHECK(at32.forward_floats() == 2 * 32 * 128 + 2 * 32 * 128 + 32 * 32 + 3 * 32);
  CHECK(at32.dkv_floats() * 4 == 106'752);  // 104 KiB: sm_80 / sm_90; at 16 under half of it: every card
  CHECK(at16.dkv_floats() * 4 <= 64 * 1024);
  for (const int floats : {at32.forward_floats(), at32.dq_floats(), at32.dkv_floats(), at16.forward_floats()})
    CHECK(floats % 8 == 0);  // 32-byte pieces for the WMMA loads
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
  CHECK_THROWS_WITH(model::cuda::check_flash_attention(p, 24, "who"), Catch::Contains("must be 16 or 32"));
}
