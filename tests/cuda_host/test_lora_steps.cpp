// The CUDA LoraLinear's forward/backward step sequence (GEMM problems, alphas/betas, dropout passes) run by a
// host executor and compared with lora::LoraLinear: everything but cuBLASLt and the kernels themselves.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include <vidlora/lora/cuda/lora_linear.cuh>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/lora/lora_linear.hpp>
#include <vidlora/quant/quantized_weight.hpp>
#include <vidlora/quant/quantizer.hpp>

#include "host_gemm.hpp"

using namespace vidlora;
using lora::cuda::BaseKind;
using lora::cuda::LoraLinearParams;
using lora::cuda::LoraWorkspace;

namespace {
Matrix random_matrix(Eigen::Index r, Eigen::Index c, std::uint64_t seed) {
  Matrix m(r, c);
  for (Eigen::Index i = 0; i < m.size(); ++i)
    m.data()[i] = random_uniform(seed, 9, static_cast<std::uint64_t>(i)) - 0.5f;
  return m;
}

struct HostExec {
  int gemms = 0, dropouts = 0, masks_applied = 0, expansions = 0, rebuilt = 0;
  void gemm(const cuda::GemmProblem& g, const void* a, const void* b, void* c, float alpha, float beta,
            const void* bias) {
    ++gemms;
    vidlora_test::run_row_major(g, static_cast<const float*>(a), static_cast<const float*>(b), static_cast<float*>(c),
                                alpha, beta, static_cast<const float*>(bias));
  }
  // The kernels' per-group logic: keep bits from one Philox block, stored, then applied.
  void dropout(const float* src, float* dst, std::int64_t n, const LoraLinearParams& p, std::uint8_t* mask) {
    ++dropouts;
    for (std::int64_t q = 0; q < (n + 3) / 4; ++q) {
      const std::uint8_t bits = lora::dropout_keep_bits4(p.seed, p.stream, static_cast<std::uint64_t>(q), p.dropout);
      mask[q] = bits;
      for (int k = 0; k < 4 && 4 * q + k < n; ++k) {
        const std::int64_t i = 4 * q + k;
        dst[i] = src[i] * lora::dropout_factor(bits, k, p.dropout);
        // ... which is the element the CPU layer's mask gives
        REQUIRE(dst[i] ==
                lora::cuda::dropout_element(src[i], p.seed, p.stream, static_cast<std::uint64_t>(i), p.dropout));
      }
    }
  }
  // apply_mask_kernel's per-group logic: the stored bits, no drawing.
  void reapply_dropout(const float* src, float* dst, std::int64_t n, float p, const std::uint8_t* mask) {
    ++rebuilt;
    for (std::int64_t i = 0; i < n; ++i)
      dst[i] = src[i] * lora::dropout_factor(mask[i / 4], static_cast<int>(i % 4), p);
  }
  // The fused expansion kernel's element function over every output.
  void expand(const lora::cuda::LowRankExpandParams& e) {
    ++expansions;
    masks_applied += e.keep_bits != nullptr;
    const auto* l = static_cast<const float*>(e.l);
    const auto* r = static_cast<const float*>(e.r);
    auto* out = static_cast<float*>(e.out);
    for (std::int64_t t = 0; t < e.rows; ++t)
      for (std::int64_t n = 0; n < e.cols; ++n)
        out[t * e.cols + n] = lora::cuda::low_rank_expand_element(e, l, r, t, n);
  }
  const float* base_weight(const LoraLinearParams& p, const LoraWorkspace<float>& ws) {
    if (p.base == BaseKind::Dense) return static_cast<const float*>(p.w);
    const auto t = quant::cuda::make_decode_tables<quant::NF4>();
    for (std::int64_t j = 0; j < (p.qw.numel + 1) / 2; ++j)
      quant::cuda::dequantize_byte(p.qw, t.code, t.dynamic_map, j, ws.w_dense[2 * j], ws.w_dense[2 * j + 1]);
    return ws.w_dense;
  }
};

template <class Layer>
void compare_with_layer(Layer& layer, const Matrix& x, const Matrix& dy, LoraLinearParams p, float tol,
                        bool rebuild = false) {
  const Eigen::Index tokens = x.rows();
  p.tokens = tokens;
  p.in = layer.in_features();
  p.out = layer.out_features();
  p.rank = layer.lora_A().rows();
  p.scaling = layer.scaling();
  p.dropout = static_cast<float>(layer.options().dropout);
  p.seed = layer.options().seed;
  p.stream = lora::dropout_stream(layer.options().layer, 0);
  p.a = layer.lora_A().data();
  p.b = layer.lora_B().data();
  Matrix grad_a = Matrix::Zero(p.rank, p.in), grad_b = Matrix::Zero(p.out, p.rank);
  p.grad_a = grad_a.data();
  p.grad_b = grad_b.data();
  const auto sizes = lora::cuda::lora_workspace_sizes<float>(p);
  std::vector<float> storage(static_cast<std::size_t>(sizes.total()) + 1, std::nanf(""));
  const auto ws = LoraWorkspace<float>::carve(storage.data(), sizes);
  Matrix y = Matrix::Constant(tokens, p.out, std::nanf("")), dx = Matrix::Constant(tokens, p.in, std::nanf(""));
  HostExec exec;
  lora::cuda::lora_forward_steps<float>(exec, p, ws, x.data(), y.data(), cuda::DType::F32);
  // rebuild_dropout_input: what the forward left in xd is not read (poisoned here), only its keep bits
  p.rebuild_dropout_input = rebuild;
  if (rebuild && ws.xd) std::fill(ws.xd, ws.xd + sizes.xd, std::nanf(""));
  lora::cuda::lora_backward_steps<float>(exec, p, ws, x.data(), dy.data(), dx.data(), cuda::DType::F32);
  CHECK(exec.gemms == 2 + 4);                                 // h, the frozen forward; g, the frozen dx, grad_A, grad_B
  CHECK(exec.expansions == 1 + 1);                            // scaling·h·Bᵀ and mask ⊙ (g·A)
  CHECK(exec.dropouts == (p.dropout > 0 ? 1 : 0));            // the mask is drawn once, in forward ...
  CHECK(exec.masks_applied == exec.dropouts);                 // ... and the backward reuses its stored bits
  CHECK(exec.rebuilt == (rebuild && p.dropout > 0 ? 1 : 0));  // for dropout(x) too, when it was not kept

  const Matrix want_y = layer.forward(x, true);
  const Matrix want_dx = layer.backward(dy);
  CHECK((y - want_y).cwiseAbs().maxCoeff() < tol);
  CHECK((dx - want_dx).cwiseAbs().maxCoeff() < tol);
  CHECK((grad_a - layer.grad_A()).cwiseAbs().maxCoeff() < tol);
  CHECK((grad_b - layer.grad_B()).cwiseAbs().maxCoeff() < tol);
}
}  // namespace

TEST_CASE("cuda lora step sequence on a dense base with dropout equals LoraLinear", "[cuda_host][lora]") {
  const Eigen::Index tokens = 7, in = 24, out = 10;
  const Matrix w = random_matrix(out, in, 1), bias = random_matrix(1, out, 2);
  lora::LoraOptions o;
  o.dropout = 0.25;
  o.seed = 42;
  o.layer = 3;
  lora::LoraLinear<4, 8, lora::DenseWeight> layer(w, bias.row(0).transpose(), o);
  layer.lora_B() = random_matrix(out, 4, 3);
  const Matrix x = random_matrix(tokens, in, 4), dy = random_matrix(tokens, out, 5);
  LoraLinearParams p;
  p.base = BaseKind::Dense;
  p.w = w.data();
  p.bias = bias.data();
  compare_with_layer(layer, x, dy, p, 1e-5f);
}

TEST_CASE("cuda lora step sequence rebuilding dropout(x) in the backward equals LoraLinear", "[cuda_host][lora]") {
  // The decoder block executor keeps only the keep bits and hands the backward x: the same gradients.
  const Eigen::Index tokens = 9, in = 23, out = 10;  // an odd element count: the last keep-bit group is partial
  const Matrix w = random_matrix(out, in, 31);
  lora::LoraOptions o;
  o.dropout = 0.3;
  o.seed = 17;
  o.layer = 5;
  lora::LoraLinear<4, 8, lora::DenseWeight> layer(w, o);
  layer.lora_B() = random_matrix(out, 4, 32);
  LoraLinearParams p;
  p.w = w.data();
  compare_with_layer(layer, random_matrix(tokens, in, 33), random_matrix(tokens, out, 34), p, 1e-5f, true);
  // Without dropout there is nothing to rebuild: x is read as it is.
  lora::LoraLinear<4, 8, lora::DenseWeight> plain(w);
  plain.lora_B() = random_matrix(out, 4, 35);
  compare_with_layer(plain, random_matrix(tokens, in, 36), random_matrix(tokens, out, 37), p, 1e-5f, true);
  // Asking for it without an xd to write into is an error naming the option.
  p.tokens = tokens;
  p.in = in;
  p.out = out;
  p.rank = 4;
  p.dropout = 0.3f;
  p.a = w.data();
  p.b = w.data();
  p.rebuild_dropout_input = true;
  Matrix ga = Matrix::Zero(4, in), gb = Matrix::Zero(out, 4), dx(tokens, in), g(tokens, 4);
  p.grad_a = ga.data();
  p.grad_b = gb.data();
  LoraWorkspace<float> ws;
  std::vector<std::uint8_t> mask(static_cast<std::size_t>((tokens * in + 3) / 4));
  ws.mask = mask.data();
  ws.g = g.data();
  HostExec exec;
  const Matrix x = random_matrix(tokens, in, 38), dy = random_matrix(tokens, out, 39);
  CHECK_THROWS_WITH(
      lora::cuda::lora_backward_steps<float>(exec, p, ws, x.data(), dy.data(), dx.data(), cuda::DType::F32),
      Catch::Contains("rebuild_dropout_input needs"));
}

TEST_CASE("cuda lora step sequence without dropout equals LoraLinear", "[cuda_host][lora]") {
  const Matrix w = random_matrix(6, 5, 11);
  lora::LoraLinear<2, 4, lora::DenseWeight> layer(w);
  layer.lora_B() = random_matrix(6, 2, 12);
  LoraLinearParams p;
  p.w = w.data();
  compare_with_layer(layer, random_matrix(3, 5, 13), random_matrix(3, 6, 14), p, 1e-5f);
}

TEST_CASE("cuda lora step sequence on an NF4 base equals QLoRA LoraLinear", "[cuda_host][lora]") {
  const Eigen::Index in = 128, out = 6;
  const Matrix w = random_matrix(out, in, 21);
  lora::LoraOptions o;
  o.dropout = 0.1;
  o.seed = 5;
  lora::LoraLinear<4, 8, quant::NF4Weight> layer(w, o);
  layer.lora_B() = random_matrix(out, 4, 22);
  const auto q = quant::Quantizer<quant::NF4, 64>::quantize(std::span<const float>(w.data(), w.size()), true);
  LoraLinearParams p;
  p.base = BaseKind::NF4;
  p.qw = {q.packed.data(), nullptr, q.qabsmax.data(), q.nested_absmax.data(), q.absmax_offset, out * in, 6};
  compare_with_layer(layer, random_matrix(5, in, 23), random_matrix(5, out, 24), p, 1e-4f);
}

TEST_CASE("lora workspace sizes and checks", "[cuda_host][lora]") {
  LoraLinearParams p;
  p.tokens = 8;
  p.in = 16;
  p.out = 4;
  p.rank = 2;
  float dummy = 0;
  p.w = p.a = p.b = &dummy;
  auto s = lora::cuda::lora_workspace_sizes<float>(p);
  CHECK(s.xd == 0);
  CHECK(s.mask == 0);
  CHECK(s.h == 64);  // 16 floats padded to 256 bytes
  CHECK(s.total() == 128);
  p.dropout = 0.1f;
  p.base = BaseKind::NF4;
  const std::uint8_t packed[32] = {};
  const float absmax[1] = {1};
  p.qw = {packed, absmax, nullptr, nullptr, 0.0f, 64, 6};
  s = lora::cuda::lora_workspace_sizes<float>(p);
  CHECK(s.xd == 128);
  CHECK(s.mask == 64);                          // 32 bytes of keep bits, padded to 256
  CHECK(s.total() == 128 + 64 + 64 + 64 + 64);  // xd, mask, h, g, dequantized W (the backward masks dx in place)
  CHECK_NOTHROW(lora::cuda::check_lora(p));
  p.qw.numel = 63;
  CHECK_THROWS_WITH(lora::cuda::check_lora(p), Catch::Contains("holds 63 elements, the layer needs 64"));
  p.qw.numel = 64;
  p.dropout = 1.0f;
  CHECK_THROWS_WITH(lora::cuda::check_lora(p), Catch::Contains("outside [0, 1)"));
  p.dropout = 0.0f;
  p.rank = 0;
  CHECK_THROWS_AS(lora::cuda::check_lora(p), cuda::CudaError);
}

TEST_CASE("low-rank expansion element matches a float64 product for both R layouts, masked or not",
          "[cuda_host][lora]") {
  using lora::cuda::LowRankExpandParams;
  using lora::cuda::RLayout;
  const std::int64_t rows = 5, cols = 13;
  for (int rank : {1, 4, 16, 23}) {
    std::vector<float> l(static_cast<std::size_t>(rows * rank)), r(static_cast<std::size_t>(cols * rank));
    for (std::size_t i = 0; i < l.size(); ++i) l[i] = random_uniform(1, 2, i) - 0.5f;
    for (std::size_t i = 0; i < r.size(); ++i) r[i] = random_uniform(1, 3, i) - 0.5f;
    std::vector<std::uint8_t> bits(static_cast<std::size_t>((rows * cols + 3) / 4));
    for (std::size_t q = 0; q < bits.size(); ++q) bits[q] = lora::dropout_keep_bits4(7, 8, q, 0.3f);
    for (RLayout layout : {RLayout::ColsByRank, RLayout::RankByCols})
      for (bool masked : {false, true}) {
        LowRankExpandParams e;
        e.rows = rows;
        e.cols = cols;
        e.rank = rank;
        e.alpha = 1.5f;
        e.layout = layout;
        e.keep_bits = masked ? bits.data() : nullptr;
        e.dropout = 0.3f;
        for (std::int64_t t = 0; t < rows; ++t)
          for (std::int64_t n = 0; n < cols; ++n) {
            double want = 0;
            for (int k = 0; k < rank; ++k) {
              const double rv = layout == RLayout::ColsByRank ? r[static_cast<std::size_t>(n * rank + k)]
                                                              : r[static_cast<std::size_t>(k * cols + n)];
              want += static_cast<double>(l[static_cast<std::size_t>(t * rank + k)]) * rv;
            }
            want *= 1.5;
            if (masked) want *= lora::dropout_scale(7, 8, static_cast<std::uint64_t>(t * cols + n), 0.3f);
            CHECK(lora::cuda::low_rank_expand_element(e, l.data(), r.data(), t, n) == Approx(want).margin(1e-6));
          }
      }
  }
  // The kernel's strip widths: 16-byte strips up to rank 16, 4 values up to 32, nothing beyond.
  CHECK(lora::cuda::low_rank_strip(2, 16) == 8);
  CHECK(lora::cuda::low_rank_strip(2, 17) == 4);
  CHECK(lora::cuda::low_rank_strip(4, 16) == 4);
  CHECK(lora::cuda::low_rank_strip(4, 32) == 4);
  CHECK(lora::cuda::low_rank_strip(2, 33) == 0);
  CHECK(lora::cuda::low_rank_strip(4, 0) == 0);
}
