// The CUDA LoraLinear's forward/backward step sequence (GEMM problems, alphas/betas, dropout passes) run by a
// host executor and compared with lora::LoraLinear: everything but cuBLASLt and the kernels themselves.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <vidlora/io/half.hpp>
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

// 16-bit bits (bf16 or fp16) of n values as floats: exact.
std::vector<float> widen(const void* p, std::int64_t n, cuda::DType t) {
  const auto* bits = static_cast<const std::uint16_t*>(p);
  std::vector<float> out(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i)
    out[static_cast<std::size_t>(i)] =
        t == cuda::DType::BF16 ? io::bf16_bits_to_float(bits[i]) : io::fp16_bits_to_float(bits[i]);
  return out;
}
std::uint16_t narrow(float v, cuda::DType t) {
  return t == cuda::DType::BF16 ? io::float_to_bf16_bits(v) : io::float_to_fp16_bits(v);
}

struct HostExec {
  int gemms = 0, narrow_gemms = 0, dropouts = 0, masks_applied = 0, expansions = 0, rebuilt = 0, rounded = 0;
  void gemm(const cuda::GemmProblem& g, const void* a, const void* b, void* c, float alpha, float beta,
            const void* bias) {
    ++gemms;
    if (g.a_type == cuda::DType::F32) {
      vidlora_test::run_row_major(g, static_cast<const float*>(a), static_cast<const float*>(b), static_cast<float*>(c),
                                  alpha, beta, static_cast<const float*>(bias));
      return;
    }
    // 16-bit operands, fp32 output: the products of the widened values (exact), summed in double
    ++narrow_gemms;
    REQUIRE(g.b_type == g.a_type);
    REQUIRE(g.c_type == cuda::DType::F32);
    REQUIRE(g.compute == cuda::Compute::F32);  // cuBLASLt: TF32 is for fp32 operands only
    cuda::check_gemm(g);
    const auto wa = widen(a, g.a_rows() * g.lda_or_packed(), g.a_type);
    const auto wb = widen(b, g.b_rows() * g.ldb_or_packed(), g.b_type);
    cuda::GemmProblem f = g;
    f.a_type = f.b_type = cuda::DType::F32;
    vidlora_test::run_row_major(f, wa.data(), wb.data(), static_cast<float*>(c), alpha, beta,
                                static_cast<const float*>(bias));
  }
  void round_operand(const float* src, void* dst, std::int64_t n, cuda::DType t) {
    ++rounded;
    auto* out = static_cast<std::uint16_t*>(dst);
    for (std::int64_t i = 0; i < n; ++i) out[i] = narrow(src[i], t);
  }
  const void* base_weight_narrow(const LoraLinearParams& p, void* w16) {
    auto* out = static_cast<std::uint16_t*>(w16);
    if (p.base == BaseKind::Dense) {
      for (std::int64_t i = 0; i < p.out * p.in; ++i)
        out[i] = narrow(static_cast<const float*>(p.w)[i], p.base_operands);
      return w16;
    }
    const auto t = quant::cuda::make_decode_tables<quant::NF4>();
    for (std::int64_t j = 0; j < (p.qw.numel + 1) / 2; ++j) {
      float lo = 0, hi = 0;
      quant::cuda::dequantize_byte(p.qw, t.code, t.dynamic_map, j, lo, hi);
      out[2 * j] = narrow(lo, p.base_operands);
      out[2 * j + 1] = narrow(hi, p.base_operands);
    }
    return w16;
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

TEST_CASE("cuda lora step sequence with 16-bit base operands rounds x, dy and W once and keeps LoRA in fp32",
          "[cuda_host][lora]") {
  // What the device layer computes with base_operands BF16 / F16: the frozen GEMMs on x, dy and W rounded to 16 bits
  // (fp32 accumulation, fp32 output), the low-rank terms and LoRA gradients as in fp32. The reference: the fp32
  // LoraLinear plus, in float64, the frozen product of the rounded operands minus that of the fp32 ones.
  const Eigen::Index tokens = 9, in = 128, out = 10;
  const Matrix w = random_matrix(out, in, 41), bias = random_matrix(1, out, 42);
  const auto q = quant::Quantizer<quant::NF4, 64>::quantize(std::span<const float>(w.data(), w.size()), true);
  for (const bool nf4 : {false, true}) {
    for (const cuda::DType t : {cuda::DType::BF16, cuda::DType::F16}) {
      INFO((nf4 ? "NF4" : "dense") << " base, " << cuda::dtype_name(t) << " operands");
      lora::LoraOptions o;
      o.dropout = 0.2;
      o.seed = 8;
      o.layer = 2;
      using Dense = lora::LoraLinear<4, 8, lora::DenseWeight>;
      using Nf4 = lora::LoraLinear<4, 8, quant::NF4Weight>;
      Dense dense(w, bias.row(0).transpose(), o);
      Nf4 qlora(w, bias.row(0).transpose(), o);
      const Matrix b_init = random_matrix(out, 4, 43);
      dense.lora_B() = b_init;
      qlora.lora_B() = b_init;
      qlora.lora_A() = dense.lora_A();
      const Matrix x = random_matrix(tokens, in, 44), dy = random_matrix(tokens, out, 45);
      const Matrix want_fp32_y = nf4 ? qlora.forward(x, true) : dense.forward(x, true);
      const Matrix want_fp32_dx = nf4 ? qlora.backward(dy) : dense.backward(dy);
      const Matrix& grad_a_want = nf4 ? qlora.grad_A() : dense.grad_A();
      const Matrix& grad_b_want = nf4 ? qlora.grad_B() : dense.grad_B();
      // the frozen weight the fp32 layer multiplies, and its 16-bit rounding
      const Matrix w_base = nf4 ? qlora.base().to_dense() : w;
      Eigen::MatrixXd w64 = w_base.cast<double>(), w16 = w64, x16 = x.cast<double>(), dy16 = dy.cast<double>();
      auto round = [t](double v) {
        return static_cast<double>(t == cuda::DType::BF16 ? io::round_to_bf16(static_cast<float>(v))
                                                          : io::round_to_fp16(static_cast<float>(v)));
      };
      w16 = w16.unaryExpr(round);
      x16 = x16.unaryExpr(round);
      dy16 = dy16.unaryExpr(round);
      const Eigen::MatrixXd want_y =
          want_fp32_y.cast<double>() + x16 * w16.transpose() - x.cast<double>() * w64.transpose();
      const Eigen::MatrixXd want_dx = want_fp32_dx.cast<double>() + dy16 * w16 - dy.cast<double>() * w64;

      LoraLinearParams p;
      p.base = nf4 ? BaseKind::NF4 : BaseKind::Dense;
      p.w = w.data();
      if (nf4)
        p.qw = {q.packed.data(), nullptr, q.qabsmax.data(), q.nested_absmax.data(), q.absmax_offset, out * in, 6};
      p.bias = bias.data();
      p.base_operands = t;
      p.tokens = tokens;
      p.in = in;
      p.out = out;
      p.rank = 4;
      p.scaling = dense.scaling();
      p.dropout = 0.2f;
      p.seed = 8;
      p.stream = lora::dropout_stream(2, 0);
      p.a = dense.lora_A().data();
      p.b = b_init.data();
      Matrix grad_a = Matrix::Zero(4, in), grad_b = Matrix::Zero(out, 4);
      p.grad_a = grad_a.data();
      p.grad_b = grad_b.data();
      const auto sizes = lora::cuda::lora_workspace_sizes<float>(p);
      CHECK(sizes.op16 == 576);     // max(9·128, 9·10) 16-bit values: 2,304 bytes, whole 256-byte pieces
      CHECK(sizes.w_dense == 640);  // 10·128 16-bit values, for a dense base too
      std::vector<float> storage(static_cast<std::size_t>(sizes.total()), std::nanf(""));
      const auto ws = LoraWorkspace<float>::carve(storage.data(), sizes);
      Matrix y = Matrix::Constant(tokens, out, std::nanf("")), dx = Matrix::Constant(tokens, in, std::nanf(""));
      HostExec exec;
      lora::cuda::lora_forward_steps<float>(exec, p, ws, x.data(), y.data(), cuda::DType::F32);
      lora::cuda::lora_backward_steps<float>(exec, p, ws, x.data(), dy.data(), dx.data(), cuda::DType::F32);
      CHECK(exec.gemms == 6);
      CHECK(exec.narrow_gemms == 2);  // the frozen forward and input gradient
      CHECK(exec.rounded == 2);       // x, then dy
      const auto err = [](const Matrix& got, const Eigen::MatrixXd& want) {
        return (got.cast<double>() - want).cwiseAbs().maxCoeff() / want.cwiseAbs().maxCoeff();
      };
      CHECK(err(y, want_y) < 1e-6);
      CHECK(err(dx, want_dx) < 1e-6);
      CHECK((grad_a - grad_a_want).cwiseAbs().maxCoeff() < 1e-5f);
      CHECK((grad_b - grad_b_want).cwiseAbs().maxCoeff() < 1e-5f);
      // ... and the rounding is there: the fp32 layer's outputs are further off than 1e-6
      CHECK(err(y, want_fp32_y.cast<double>()) > 1e-5);
      // x already rounded by its producer (LoraLinearParams::x16: the decoder block rounds a norm's output once for
      // the slots that read it): the forward reads those bits and rounds nothing, the same y bit for bit.
      std::vector<std::uint16_t> x_bits(static_cast<std::size_t>(x.size()));
      for (std::size_t i = 0; i < x_bits.size(); ++i) x_bits[i] = narrow(x.data()[i], t);
      LoraLinearParams shared = p;
      shared.x16 = x_bits.data();
      Matrix y_shared = Matrix::Constant(tokens, out, std::nanf(""));
      HostExec exec_shared;
      lora::cuda::lora_forward_steps<float>(exec_shared, shared, ws, x.data(), y_shared.data(), cuda::DType::F32);
      CHECK(exec_shared.rounded == 0);
      CHECK(exec_shared.narrow_gemms == 1);
      CHECK(std::memcmp(y_shared.data(), y.data(), sizeof(float) * static_cast<std::size_t>(y.size())) == 0);
      // ... and needs no 16-bit operand piece for it (the decoder block gives such a forward none); without x16 the
      // piece is required.
      LoraWorkspace<float> ws_no_piece = ws;
      ws_no_piece.op16 = nullptr;
      Matrix y_no_piece = Matrix::Constant(tokens, out, std::nanf(""));
      HostExec exec_no_piece;
      lora::cuda::lora_forward_steps<float>(exec_no_piece, shared, ws_no_piece, x.data(), y_no_piece.data(),
                                            cuda::DType::F32);
      CHECK(std::memcmp(y_no_piece.data(), y.data(), sizeof(float) * static_cast<std::size_t>(y.size())) == 0);
      CHECK_THROWS_WITH(lora::cuda::lora_forward_steps<float>(exec_no_piece, p, ws_no_piece, x.data(),
                                                              y_no_piece.data(), cuda::DType::F32),
                        Catch::Contains("need the workspace's w_dense and op16"));
    }
  }
  // A bf16 layer does not take narrow base operands (its operands are 16-bit already), nor a workspace without them.
  LoraLinearParams p;
  p.tokens = 2;
  p.in = 4;
  p.out = 4;
  p.rank = 1;
  float dummy[16] = {};
  p.w = p.a = p.b = dummy;
  p.base_operands = cuda::DType::BF16;
  LoraWorkspace<float> none;
  HostExec exec;
  CHECK_THROWS_WITH(lora::cuda::frozen_forward_step<float>(exec, p, none, dummy, dummy, 0.0f, cuda::DType::F32),
                    Catch::Contains("need the workspace's w_dense and op16"));
  CHECK_THROWS_WITH(lora::cuda::frozen_forward_step<float>(exec, p, none, dummy, dummy, 0.0f, cuda::DType::BF16),
                    Catch::Contains("are for a float layer, not a bf16 one"));
}
