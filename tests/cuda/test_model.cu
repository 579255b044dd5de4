// RMSNorm, RoPE, SwiGLU and causal attention against the model module's CPU functions.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

#include <vidlora/model/cuda/attention.cuh>
#include <vidlora/model/cuda/flash_attention.cuh>
#include <vidlora/model/cuda/flash_attention_mma.cuh>
#include <vidlora/model/cuda/elementwise.cuh>
#include <vidlora/io/half.hpp>

#include "reference/reference.hpp"
#include "support/cuda_test.cuh"

using namespace vidlora;
using vidlora::cuda::DeviceBuffer;

TEST_CASE("cuda rms norm forward and backward match model rms_norm", "[model]") {
  for (auto [rows, n] : {std::pair<long, long>{5, 4096}, {33, 129}, {1, 7}}) {
    INFO("rows " << rows << " n " << n);
    const auto x = cuda_test::random_vector(static_cast<std::size_t>(rows * n), n, -3.0f, 3.0f);
    const auto w = cuda_test::random_vector(static_cast<std::size_t>(n), n + 1, 0.5f, 1.5f);
    const auto dy = cuda_test::random_vector(static_cast<std::size_t>(rows * n), n + 2);
    std::vector<float> y, inv, dx;
    ref::rms_norm(x, w, rows, n, 1e-6, y, inv);
    ref::rms_norm_backward(x, w, inv, dy, rows, n, dx);
    DeviceBuffer<float> dxin(x), dw(w), ddy(dy);
    DeviceBuffer<float> dyout(x.size()), dinv(static_cast<std::size_t>(rows)), ddx(x.size());
    cuda_test::poison(dyout);
    cuda_test::poison(dinv);
    cuda_test::poison(ddx);
    model::cuda::RmsNormParams p{dxin.data(), dw.data(), dyout.data(), dinv.data(), ddy.data(), ddx.data(),
                                 rows,        n,         1e-6,         {}};
    model::cuda::rms_norm(p);
    model::cuda::rms_norm_backward(p);
    VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
    CHECK(cuda_test::elementwise_relative_error(dyout.download(), y) < 1e-6);
    CHECK(cuda_test::elementwise_relative_error(dinv.download(), inv) < 1e-6);
    CHECK(cuda_test::elementwise_relative_error(ddx.download(), dx, 1e-2) < 1e-5);  // floor: dy·w - x·r²·c may cancel
  }
}

TEST_CASE("cuda rope forward and inverse are bit-exact with RotaryTable", "[model]") {
  const long tokens = 37, heads = 5;
  const int head_dim = 128;
  std::vector<long> pos(static_cast<std::size_t>(tokens));
  std::vector<std::int32_t> pos32(pos.size());
  for (long t = 0; t < tokens; ++t)
    pos32[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(pos[static_cast<std::size_t>(t)] = (t * 37) % 301);
  std::vector<float> cos_t, sin_t;
  model::cuda::rope_tables(model::default_rope_frequencies(head_dim, 1e6), 301, cos_t, sin_t);
  DeviceBuffer<float> dcos(cos_t), dsin(sin_t);
  DeviceBuffer<std::int32_t> dpos(pos32);
  for (bool inverse : {false, true}) {
    auto x = cuda_test::random_vector(static_cast<std::size_t>(tokens * heads * head_dim), 3);
    DeviceBuffer<float> dx(x);
    model::cuda::RopeParams p{dx.data(), dpos.data(), dcos.data(), dsin.data(), tokens, heads, head_dim, inverse, {}};
    model::cuda::rope(p);
    VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
    ref::rope(x, tokens, heads, head_dim, pos, inverse, 1e6);
    // rope_rotate rounds every product and sum on its own, so nvcc cannot fuse them: bit-exact.
    CHECK(cuda_test::bit_mismatches(dx.download(), x) == 0);
  }
}

TEST_CASE("cuda swiglu forward and backward match silu and its derivative", "[model]") {
  const std::size_t n = 100001;
  const auto gate = cuda_test::random_vector(n, 1, -8.0f, 8.0f), up = cuda_test::random_vector(n, 2),
             dh = cuda_test::random_vector(n, 3);
  std::vector<float> h(n), dg(n), du(n);
  model::cuda::SwigluParams hp{
      gate.data(), up.data(), h.data(), dh.data(), dg.data(), du.data(), static_cast<std::int64_t>(n), {}};
  for (std::size_t i = 0; i < n; ++i) {
    model::cuda::swiglu_forward_element(hp, static_cast<std::int64_t>(i));
    model::cuda::swiglu_backward_element(hp, static_cast<std::int64_t>(i));
  }
  DeviceBuffer<float> dgate(gate), dup(up), ddh(dh);
  DeviceBuffer<float> oh(n), odg(n), odu(n);
  cuda_test::poison(oh);
  cuda_test::poison(odg);
  cuda_test::poison(odu);
  model::cuda::SwigluParams p{
      dgate.data(), dup.data(), oh.data(), ddh.data(), odg.data(), odu.data(), static_cast<std::int64_t>(n), {}};
  model::cuda::swiglu(p, false);
  model::cuda::swiglu(p, true);
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
  CHECK(cuda_test::elementwise_relative_error(oh.download(), h, 1e-2) < 1e-5);  // floor: silu' cancels near x = -1.28
  CHECK(cuda_test::elementwise_relative_error(odg.download(), dg, 1e-2) < 1e-5);
  CHECK(cuda_test::elementwise_relative_error(odu.download(), du, 1e-2) < 1e-5);
}

TEST_CASE("cuda rms norm, rope and swiglu write their output's 16-bit rounding beside it, bit for bit", "[model]") {
  // Output16: each value rounded to nearest even as round_to_16bit (io/half.hpp) rounds the fp32 output, in the
  // output's layout; the fp32 output the same bits as without the copy. The norm's weights up to 1e5 take fp16 to
  // overflow (±inf) and, in column 0, to its subnormals.
  const long rows = 7, n = 300, tokens = 9, heads = 3, head_dim = 64;
  auto bits_of = [](const std::vector<float>& v, bool bf16) {
    std::vector<std::uint16_t> b(v.size());
    for (std::size_t i = 0; i < v.size(); ++i)
      b[i] = bf16 ? io::float_to_bf16_bits(v[i]) : io::float_to_fp16_bits(v[i]);
    return b;
  };
  for (const bool bf16 : {true, false}) {
    INFO((bf16 ? "bf16" : "fp16"));
    // The run with the copy against the run without: the same fp32 bits, and the copy their rounding.
    const auto check_copy = [&](const DeviceBuffer<float>& with_copy, const DeviceBuffer<float>& without,
                                const DeviceBuffer<std::uint16_t>& copy) {
      VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
      const auto v = with_copy.download();
      CHECK(cuda_test::bit_mismatches(v, without.download()) == 0);
      CHECK(copy.download() == bits_of(v, bf16));
    };
    // RMSNorm
    auto x = cuda_test::random_vector(static_cast<std::size_t>(rows * n), 5, -3.0f, 3.0f);
    auto w = cuda_test::random_vector(static_cast<std::size_t>(n), 6, -1e5f, 1e5f);
    w[0] = 1e-6f;  // fp16 subnormals in column 0
    DeviceBuffer<float> dx(x), dw(w), y_plain(x.size()), y(x.size());
    DeviceBuffer<std::uint16_t> y16(x.size());
    y16.fill_bytes(0xFF);
    model::cuda::RmsNormParams p;
    p.x = dx.data();
    p.weight = dw.data();
    p.rows = rows;
    p.n = n;
    p.y = y_plain.data();
    model::cuda::rms_norm(p);
    p.y = y.data();
    p.y16 = {y16.data(), bf16};
    model::cuda::rms_norm(p);
    check_copy(y, y_plain, y16);
    if (!bf16) {
      const auto b = y16.download();
      CHECK(std::count(b.begin(), b.end(), std::uint16_t{0x7C00}) +
                std::count(b.begin(), b.end(), std::uint16_t{0xFC00}) >
            0);  // some overflowed to ±inf
    }
    p.dy = dx.data();
    p.dx = y.data();
    p.inv_rms = y_plain.data();
    CHECK_THROWS_WITH(model::cuda::rms_norm_backward(p), Catch::Contains("writes no 16-bit output"));

    // RoPE (the forward: q and k before the attention)
    std::vector<std::int32_t> pos(static_cast<std::size_t>(tokens));
    for (long t = 0; t < tokens; ++t) pos[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(3 * t + 1);
    std::vector<float> cos_t, sin_t;
    model::cuda::rope_tables(model::default_rope_frequencies(head_dim, 1e4), 40, cos_t, sin_t);
    DeviceBuffer<float> dcos(cos_t), dsin(sin_t);
    DeviceBuffer<std::int32_t> dpos(pos);
    const auto q = cuda_test::random_vector(static_cast<std::size_t>(tokens * heads * head_dim), 7, -40.0f, 40.0f);
    DeviceBuffer<float> q_plain(q), q_rot(q);
    DeviceBuffer<std::uint16_t> q16(q.size());
    q16.fill_bytes(0xFF);
    model::cuda::RopeParams r{q_plain.data(), dpos.data(), dcos.data(), dsin.data(), tokens,
                              heads,          head_dim,    false,       {}};
    model::cuda::rope(r);
    r.x = q_rot.data();
    r.x16 = {q16.data(), bf16};
    model::cuda::rope(r);
    check_copy(q_rot, q_plain, q16);

    // SwiGLU
    const std::size_t m = 5003;
    const auto gate = cuda_test::random_vector(m, 8, -8.0f, 8.0f), up = cuda_test::random_vector(m, 9, -300.0f, 300.0f);
    DeviceBuffer<float> dgate(gate), dup(up), h_plain(m), h(m);
    DeviceBuffer<std::uint16_t> h16(m);
    h16.fill_bytes(0xFF);
    model::cuda::SwigluParams s;
    s.gate = dgate.data();
    s.up = dup.data();
    s.n = static_cast<std::int64_t>(m);
    s.h = h_plain.data();
    model::cuda::swiglu(s, false);
    s.h = h.data();
    s.h16 = {h16.data(), bf16};
    model::cuda::swiglu(s, false);
    check_copy(h, h_plain, h16);
    CHECK_THROWS_WITH(model::cuda::swiglu(s, true), Catch::Contains("the backward writes no 16-bit output"));
  }
}

namespace {
// One attention problem: random inputs, the CPU reference's results, device copies and the kernels' params.
struct AttentionProblem {
  std::vector<float> q, k, v, dout, out, dq, dk, dv;  // inputs, then the CPU's out and gradients
  std::vector<std::int32_t> mask32;
  DeviceBuffer<float> Q, K, V, DO, O, L, DQ, DK, DV, RD;
  DeviceBuffer<std::int32_t> M;
  model::cuda::AttentionParams p;
};

// The key mask: every key (empty), or `keep(j)` for each key j.
template <class Keep>
AttentionProblem attention_problem(long tq, long tk, long hq, long hkv, long d, long offset, bool masked, Keep keep,
                                   std::uint32_t seed) {
  AttentionProblem a;
  a.q = cuda_test::random_vector(static_cast<std::size_t>(tq * hq * d), seed, -2.0f, 2.0f);
  a.k = cuda_test::random_vector(static_cast<std::size_t>(tk * hkv * d), seed + 1, -2.0f, 2.0f);
  a.v = cuda_test::random_vector(static_cast<std::size_t>(tk * hkv * d), seed + 2);
  a.dout = cuda_test::random_vector(a.q.size(), seed + 3);
  std::vector<int> mask;
  if (masked)
    for (long j = 0; j < tk; ++j) {
      mask.push_back(keep(j) ? 1 : 0);
      a.mask32.push_back(mask.back());
    }
  ref::attention(a.q, a.k, a.v, tq, tk, hq, hkv, d, offset, mask, a.dout, a.out, a.dq, a.dk, a.dv);
  a.Q = DeviceBuffer<float>(a.q);
  a.K = DeviceBuffer<float>(a.k);
  a.V = DeviceBuffer<float>(a.v);
  a.DO = DeviceBuffer<float>(a.dout);
  a.M = DeviceBuffer<std::int32_t>(a.mask32);
  a.O = DeviceBuffer<float>(a.q.size());
  a.L = DeviceBuffer<float>(static_cast<std::size_t>(tq * hq));
  a.RD = DeviceBuffer<float>(static_cast<std::size_t>(tq * hq));
  a.DQ = DeviceBuffer<float>(a.q.size());
  a.DK = DeviceBuffer<float>(a.k.size());
  a.DV = DeviceBuffer<float>(a.v.size());
  model::cuda::AttentionParams& p = a.p;
  p.q = a.Q.data();
  p.k = a.K.data();
  p.v = a.V.data();
  p.key_mask = masked ? a.M.data() : nullptr;
  p.out = a.O.data();
  p.lse = a.L.data();
  p.d_out = a.DO.data();
  p.dq = a.DQ.data();
  p.dk = a.DK.data();
  p.dv = a.DV.data();
  p.tq = tq;
  p.tk = tk;
  p.q_heads = hq;
  p.kv_heads = hkv;
  p.head_dim = d;
  p.q_offset = offset;
  return a;
}

void zero_grads(AttentionProblem& a) {
  a.DQ.fill_bytes(0);
  a.DK.fill_bytes(0);
  a.DV.fill_bytes(0);
}

// The row kernels' output and gradients against the CPU reference (after the forward and the backward ran).
void check_row_attention(const AttentionProblem& a) {
  CHECK(cuda_test::normwise_error(a.O.download(), a.out) < 2e-5);
  CHECK(cuda_test::normwise_error(a.DQ.download(), a.dq) < 5e-5);
  CHECK(cuda_test::normwise_error(a.DK.download(), a.dk) < 5e-5);
  CHECK(cuda_test::normwise_error(a.DV.download(), a.dv) < 5e-5);
}

// q, k, v and d_out of a problem as the operands' 16-bit patterns on the device (AttentionParams::q16 …), rounded on
// the host by io/half.hpp, as the decoder's round_to_16bit does on the device.
struct Inputs16 {
  DeviceBuffer<std::uint16_t> q, k, v, d_out;
  Inputs16(const AttentionProblem& a, model::cuda::FlashOperands ops)
      : q(patterns(a.q, ops)), k(patterns(a.k, ops)), v(patterns(a.v, ops)), d_out(patterns(a.dout, ops)) {}
  void point(model::cuda::AttentionParams& p) const {
    p.q16 = q.data();
    p.k16 = k.data();
    p.v16 = v.data();
    p.d_out16 = d_out.data();
  }
  static DeviceBuffer<std::uint16_t> patterns(const std::vector<float>& x, model::cuda::FlashOperands ops) {
    std::vector<std::uint16_t> b(x.size());
    for (std::size_t i = 0; i < x.size(); ++i)
      b[i] = ops == model::cuda::FlashOperands::BF16 ? io::float_to_bf16_bits(x[i]) : io::float_to_fp16_bits(x[i]);
    return DeviceBuffer<std::uint16_t>(b);
  }
};

// The tiled kernels' forward and backward from poisoned outputs and zero gradients: out, dq, dk, dv.
std::array<std::vector<float>, 4> run_flash(AttentionProblem& a, const model::cuda::FlashAttentionOptions& o) {
  cuda_test::poison(a.O);
  cuda_test::poison(a.L);
  cuda_test::poison(a.RD);
  zero_grads(a);
  model::cuda::flash_attention_forward(a.p, o);
  model::cuda::flash_attention_backward(a.p, o);
  VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
  return {a.O.download(), a.DQ.download(), a.DK.download(), a.DV.download()};
}
}  // namespace

TEST_CASE("cuda causal attention forward and backward match the CPU with GQA offset and key mask", "[model]") {
  struct Case {
    long tq, tk, hq, hkv, d, offset;
    bool mask;
  };
  for (const Case c : {Case{16, 16, 4, 2, 32, 0, false}, Case{5, 21, 6, 3, 64, 16, true},
                       Case{33, 33, 2, 2, 8, 0, true}, Case{12, 12, 4, 1, 128, 0, true}}) {
    INFO("tq " << c.tq << " tk " << c.tk << " heads " << c.hq << "/" << c.hkv << " d " << c.d);
    AttentionProblem a = attention_problem(
        c.tq, c.tk, c.hq, c.hkv, c.d, c.offset, c.mask, [](long j) { return j % 4 != 2; }, 1);
    model::cuda::AttentionParams p = a.p;
    cuda_test::poison(a.O);
    zero_grads(a);
    model::cuda::attention_forward(p);
    model::cuda::attention_backward(p);
    VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
    check_row_attention(a);
    // The deterministic dk/dv kernel (row_dot scratch): the same tolerance, and the same bits on a second run.
    std::vector<float> first[3];
    for (int run = 0; run < 2; ++run) {
      zero_grads(a);
      cuda_test::poison(a.RD);
      p.row_dot = a.RD.data();
      model::cuda::attention_backward(p);
      VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
      const std::vector<float> got[3] = {a.DQ.download(), a.DK.download(), a.DV.download()};
      CHECK(cuda_test::normwise_error(got[0], a.dq) < 5e-5);
      CHECK(cuda_test::normwise_error(got[1], a.dk) < 5e-5);
      CHECK(cuda_test::normwise_error(got[2], a.dv) < 5e-5);
      if (run == 0)
        for (int t = 0; t < 3; ++t) first[t] = got[t];
      else
        for (int t = 0; t < 3; ++t) CHECK(cuda_test::bit_mismatches(got[t], first[t]) == 0);
    }
  }
}

TEST_CASE("cuda row attention at thousands of keys: its shared memory beside the static bytes, or a clear error",
          "[model]") {
  // The row kernels hold a query's scores (forward) and its probabilities and score gradients (backward) in dynamic
  // shared memory beside 1 KiB of static (their reduction array). At 6,100 keys the backward's 48,896 dynamic bytes
  // alone are under 48 KiB but not with the static ones: the kernel needs the opt-in attribute (a launch without it
  // fails on a GPU). At 8,192 keys the backward needs 66,560 bytes: more than a T4 gives (64 KiB), a clear error there.
  for (const long tk : {6100L, 8192L}) {
    INFO("tk " << tk);
    AttentionProblem a = attention_problem(
        2, tk, 2, 1, 8, tk - 2, true, [](long j) { return j % 7 != 3; }, 41);
    model::cuda::AttentionParams p = a.p;
    p.row_dot = a.RD.data();
    cuda_test::poison(a.O);
    zero_grads(a);
    int device = 0, optin = 0;
    VIDLORA_CUDA_CHECK(cudaGetDevice(&device));
    VIDLORA_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    model::cuda::attention_forward(p);
    const long backward_bytes = 2 * ((tk + 31) / 32 * 32) * 4 + 1024;
    if (backward_bytes > optin) {
      CHECK_THROWS_WITH(model::cuda::attention_backward(p), Catch::Contains(std::to_string(tk) + " keys need"));
      continue;
    }
    model::cuda::attention_backward(p);
    VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
    check_row_attention(a);
  }
}

TEST_CASE("cuda tiled attention matches the CPU: fp32 and TF32, both tiles, GQA, offset, mask, deterministic",
          "[model]") {
  struct Case {
    long tq, tk, hq, hkv, d, offset;
    bool mask, first_key_hidden = false;  // hidden first key: query 0 sees no key (output 0, no NaN)
  };
  // head dims 64 and 128 (the issue's), tails that are not a tile multiple, a query block past a prefix
  for (const Case c :
       {Case{37, 37, 4, 2, 64, 0, false}, Case{5, 70, 6, 3, 64, 65, true}, Case{100, 100, 4, 1, 128, 0, true},
        Case{33, 33, 2, 2, 16, 0, true}, Case{40, 40, 2, 1, 64, 0, true, true}}) {
    AttentionProblem a = attention_problem(
        c.tq, c.tk, c.hq, c.hkv, c.d, c.offset, c.mask,
        [&c](long j) { return !(c.first_key_hidden && j == 0) && j % 5 != 3 && j < c.tk - 3; }, 11);
    a.p.row_dot = a.RD.data();
    for (const bool tf32 : {false, true})
      for (const int tile : {16, 32}) {
        if (!model::cuda::flash_tile_fits(tile, c.d)) continue;  // 32 at head dim 128: sm_80 / sm_90 only
        INFO("tq " << c.tq << " tk " << c.tk << " heads " << c.hq << "/" << c.hkv << " d " << c.d << " tf32 " << tf32
                   << " tile " << tile);
        const model::cuda::FlashAttentionOptions o{tf32, tile};
        // fp32: the CPU's tolerance of the row kernels; TF32: 10-bit mantissa products
        const double tol_out = tf32 ? 5e-3 : 2e-5, tol_grad = tf32 ? 1e-2 : 5e-5;
        std::vector<float> first[4];
        for (int run = 0; run < 2; ++run) {
          const std::array<std::vector<float>, 4> got = run_flash(a, o);
          CHECK(cuda_test::normwise_error(got[0], a.out) < tol_out);
          CHECK(cuda_test::normwise_error(got[1], a.dq) < tol_grad);
          CHECK(cuda_test::normwise_error(got[2], a.dk) < tol_grad);
          CHECK(cuda_test::normwise_error(got[3], a.dv) < tol_grad);
          if (run == 0)
            for (int t = 0; t < 4; ++t) first[t] = got[static_cast<std::size_t>(t)];
          else
            for (int t = 0; t < 4; ++t)
              CHECK(cuda_test::bit_mismatches(got[static_cast<std::size_t>(t)], first[t]) == 0);  // no atomics
        }
      }
  }
}

namespace {
// The tiled kernels' bodies over the grid on the host (model::cuda::FlashHostBlock<K>): what the device kernels with
// operands K compute, up to the order of the fp32 sums inside a tile product and the device's expf / logf.
template <model::cuda::FlashOperands K>
std::vector<std::vector<float>> flash_on_host(const AttentionProblem& a, int tile) {
  const model::cuda::AttentionParams& dp = a.p;
  std::vector<float> out(a.q.size()), lse(static_cast<std::size_t>(dp.tq * dp.q_heads)), rd(lse.size()),
      dq(a.q.size(), 0.0f), dk(a.k.size(), 0.0f), dv(a.v.size(), 0.0f);
  model::cuda::AttentionParams p = dp;
  p.q = a.q.data();
  p.k = a.k.data();
  p.v = a.v.data();
  p.d_out = a.dout.data();
  p.key_mask = dp.key_mask ? a.mask32.data() : nullptr;
  p.out = out.data();
  p.lse = lse.data();
  p.row_dot = rd.data();
  p.dq = dq.data();
  p.dk = dk.data();
  p.dv = dv.data();
  model::cuda::FlashHostBlock<K> blk;
  const model::cuda::FlashSmem lay{tile, tile, static_cast<int>(p.head_dim), model::cuda::FlashOperandFormat<K>::bytes};
  std::vector<float> smem(static_cast<std::size_t>(lay.dkv_bytes() / 4 + lay.dq_bytes() / 4 + lay.forward_bytes() / 4));
  for (std::int64_t qt = 0; qt * tile < p.tq; ++qt)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      model::cuda::flash_forward_block(blk, p, tile, tile, qt, h, smem.data());
  for (std::int64_t qt = 0; qt * tile < p.tq; ++qt)
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      model::cuda::flash_backward_dq_block(blk, p, tile, tile, qt, h, smem.data());
  for (std::int64_t kt = 0; kt * tile < p.tk; ++kt)
    for (std::int64_t g = 0; g < p.kv_heads; ++g)
      model::cuda::flash_backward_dkv_block(blk, p, tile, tile, kt, g, smem.data());
  return {out, dq, dk, dv};
}

template <model::cuda::FlashOperands K>
void check_flash_16bit(AttentionProblem& a, double vs_cpu, const char* what) {
  for (const int tile : {16, 32, 64}) {
    if (!model::cuda::flash_tile_fits(tile, a.p.head_dim, K)) continue;  // 64 at head dim 128: sm_90 only
    INFO(what << " tile " << tile);
    const std::vector<std::vector<float>> host = flash_on_host<K>(a, tile);
    const std::vector<float>* cpu[4] = {&a.out, &a.dq, &a.dk, &a.dv};
    const model::cuda::FlashAttentionOptions o{false, tile, K};
    std::vector<float> first[4];
    for (int run = 0; run < 2; ++run) {
      const std::array<std::vector<float>, 4> got = run_flash(a, o);
      for (int t = 0; t < 4; ++t) {
        INFO("output " << t << " (out, dq, dk, dv)");
        // the same rounding points as the host block: sum order and expf aside, a 16-bit P or dS may round the
        // other way now and then, and one dS one ulp off moves dq by about 4e-4 normwise in bf16 (host-simulated with
        // other sum orders on these inputs: bf16 up to 3.9e-4, fp16 up to 2e-4); a layout or index bug gives 1e-1
        const double vs_host = K == model::cuda::FlashOperands::BF16 ? 2e-3 : 5e-4;
        CHECK(cuda_test::normwise_error(got[static_cast<std::size_t>(t)], host[static_cast<std::size_t>(t)]) < vs_host);
        CHECK(cuda_test::normwise_error(got[static_cast<std::size_t>(t)], *cpu[t]) < vs_cpu);
        if (run == 0)
          first[t] = got[static_cast<std::size_t>(t)];
        else
          CHECK(cuda_test::bit_mismatches(got[static_cast<std::size_t>(t)], first[t]) == 0);  // no atomics
      }
    }
  }
}
}  // namespace

TEST_CASE("cuda tiled attention with bf16 and fp16 operands: the host block's rounding, every tile, deterministic",
          "[model]") {
  // The 16-bit tensor-core path (WMMA m16n16k16; bf16 needs sm_80, else the same operands in FMA loops) against the
  // host block over the same rounded operands, and within the 16-bit formats' reach of the fp32 CPU attention.
  struct Case {
    long tq, tk, hq, hkv, d, offset;
    bool mask, first_key_hidden = false;  // hidden first key: query 0 sees no key (output 0, no NaN)
  };
  for (const Case c : {Case{75, 75, 4, 2, 64, 0, false}, Case{9, 75, 6, 3, 32, 66, true},
                       Case{100, 100, 4, 1, 128, 0, true}, Case{40, 40, 2, 1, 64, 0, true, true}}) {
    AttentionProblem a = attention_problem(
        c.tq, c.tk, c.hq, c.hkv, c.d, c.offset, c.mask,
        [&c](long j) { return !(c.first_key_hidden && j == 0) && j % 5 != 3 && j < c.tk - 3; }, 11);
    a.p.row_dot = a.RD.data();
    INFO("tq " << c.tq << " tk " << c.tk << " heads " << c.hq << "/" << c.hkv << " d " << c.d);
    check_flash_16bit<model::cuda::FlashOperands::BF16>(a, 1.5e-2, "bf16");  // host block: at most 6.1e-3
    check_flash_16bit<model::cuda::FlashOperands::F16>(a, 2e-3, "fp16");     // host block: at most 7.6e-4
  }
}

TEST_CASE("cuda tiled attention takes a head dim only where the card gives its smallest tile's shared memory",
          "[model]") {
  model::cuda::AttentionParams p;
  p.tq = p.tk = 8;
  p.q_heads = p.kv_heads = 1;
  int device = 0, limit = 0;
  VIDLORA_CUDA_CHECK(cudaGetDevice(&device));
  VIDLORA_CUDA_CHECK(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  using model::cuda::FlashOperands;
  for (const FlashOperands ops : {FlashOperands::F32, FlashOperands::BF16})
    for (const std::int64_t d : {64, 128, 256}) {
      p.head_dim = d;
      const model::cuda::FlashSmem at16{16, 16, static_cast<int>(d), ops == FlashOperands::F32 ? 4 : 2};
      const bool fits = at16.forward_bytes() <= limit && at16.dq_bytes() <= limit && at16.dkv_bytes() <= limit;
      INFO("head dim " << d << " " << model::cuda::flash_operands_name(ops) << ", " << limit << " bytes per block");
      CHECK(model::cuda::flash_attention_fits(p, {false, 0, ops}) == fits);
      if (d <= 128) CHECK(fits);  // every supported card: the decoder's head dims
    }
  p.head_dim = 40;
  CHECK_FALSE(model::cuda::flash_attention_fits(p));
}

TEST_CASE("cuda tiled attention backward with row_dot from the forward's output: the CPU's gradients, deterministic",
          "[model]") {
  // AttentionParams::forward_out (what the decoder executor passes: o_proj's kept input): row_dot = Σ dO·O from a
  // small kernel, then one dq pass over the keys. fp32 to the CPU's 5e-5, bf16 within its reach; two runs bit for bit.
  struct Case {
    long tq, tk, hq, hkv, d, offset;
    bool mask;
  };
  using model::cuda::FlashOperands;
  for (const Case c : {Case{75, 75, 4, 2, 64, 0, false}, Case{100, 100, 4, 1, 128, 0, true}}) {
    AttentionProblem a = attention_problem(
        c.tq, c.tk, c.hq, c.hkv, c.d, c.offset, c.mask, [&c](long j) { return j % 5 != 3 && j < c.tk - 3; }, 11);
    a.p.row_dot = a.RD.data();
    for (const FlashOperands ops : {FlashOperands::F32, FlashOperands::BF16}) {
      INFO("tq " << c.tq << " d " << c.d << " " << model::cuda::flash_operands_name(ops));
      model::cuda::FlashAttentionOptions o{false, 0, ops};
      o.register_tiles = false;  // the shared-memory kernels' one-pass dq (the register-tile case is below)
      const double tol = ops == FlashOperands::F32 ? 5e-5 : 1.5e-2;
      model::cuda::flash_attention_forward(a.p, o);
      model::cuda::AttentionParams p = a.p;
      p.forward_out = a.O.data();
      std::vector<float> first[3];
      for (int run = 0; run < 2; ++run) {
        zero_grads(a);
        cuda_test::poison(a.RD);
        model::cuda::flash_attention_backward(p, o);
        VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> got[3] = {a.DQ.download(), a.DK.download(), a.DV.download()};
        CHECK(cuda_test::normwise_error(got[0], a.dq) < tol);
        CHECK(cuda_test::normwise_error(got[1], a.dk) < tol);
        CHECK(cuda_test::normwise_error(got[2], a.dv) < tol);
        if (run == 0)
          for (int t = 0; t < 3; ++t) first[t] = got[t];
        else
          for (int t = 0; t < 3; ++t) CHECK(cuda_test::bit_mismatches(got[t], first[t]) == 0);
      }
    }
  }
}

TEST_CASE("cuda register-tile attention with two key stages gives one stage's bits on long sequences",
          "[model][long]") {
  // FlashAttentionOptions::pipelined: the next key tile's (dk/dv: query tile's) cp.async copy in flight while the
  // current one is used, each stage's set rewritten every other tile. At 1,040 keys (17 key tiles, the last one
  // partial) every set is rewritten many times in every block, over grids of 17 × 8 blocks: a missing wait or barrier
  // shows as other bits. From the
  // 16-bit inputs (the copies are cp.async) and from the fp32 ones (loaded in place), bf16 and fp16, head dims 64 and
  // 128, against the one-stage run of the same inputs. (The CPU reference of this size is the other case's job.)
  using model::cuda::FlashOperands;
  for (const long d : {64L, 128L}) {
    AttentionProblem a = attention_problem(
        1040, 1040, 8, 2, d, 0, true, [](long j) { return j < 1031; }, 29);
    a.p.row_dot = a.RD.data();
    a.p.forward_out = a.O.data();
    for (const FlashOperands ops : {FlashOperands::BF16, FlashOperands::F16}) {
      INFO("d " << d << " " << model::cuda::flash_operands_name(ops));
      if (!model::cuda::flash_mma_takes(a.p, ops)) {
        WARN("no register-tile kernels on this GPU (sm_80+ only) or VIDLORA_ATTENTION_REGISTER_TILES=0: skipped");
        return;
      }
      const Inputs16 in16(a, ops);
      const model::cuda::FlashAttentionOptions one{false, 0, ops};
      model::cuda::FlashAttentionOptions two = one;
      two.pipelined = true;
      for (const bool inputs16 : {true, false}) {
        INFO((inputs16 ? "16-bit inputs" : "fp32 inputs"));
        a.p.q16 = a.p.k16 = a.p.v16 = a.p.d_out16 = nullptr;
        if (inputs16) in16.point(a.p);
        const std::array<std::vector<float>, 4> want = run_flash(a, one);
        const std::vector<float> want_lse = a.L.download();
        for (int run = 0; run < 2; ++run) {
          const std::array<std::vector<float>, 4> got = run_flash(a, two);
          CHECK(cuda_test::bit_mismatches(a.L.download(), want_lse) == 0);
          for (std::size_t t = 0; t < 4; ++t) {
            INFO("output " << t << " (out, dq, dk, dv), run " << run);
            CHECK(cuda_test::bit_mismatches(got[t], want[t]) == 0);
          }
        }
      }
      a.p.q16 = a.p.k16 = a.p.v16 = a.p.d_out16 = nullptr;
    }
  }
}

TEST_CASE("cuda register-tile attention matches the shared-memory tiles and the CPU, deterministic", "[model]") {
  // model/cuda/flash_attention_mma.cuh (sm_80+, head dims 64 and 128, 16-bit operands; what flash_attention_forward
  // runs there with the default options) against the shared-memory forward on the same operands
  // (register_tiles = false): the same rounding points, so out within the flips of a 16-bit P (other sum orders,
  // exp2 against exp) and lse to 1e-5; against the fp32 CPU within the 16-bit formats' reach; two runs the same bits.
  // The backward: with the forward's output given (AttentionParams::forward_out, as the decoder runs it) the
  // register-tile dq and dk/dv kernels, the CPU's gradients within the same reach, two runs the same bits; without it
  // the shared-memory kernels from the register-tile forward's lse.
  using model::cuda::FlashOperands;
  struct Case {
    long tq, tk, hq, hkv, d, offset;
    bool mask, first_key_hidden = false;
  };
  // (130 queries after 70 keys, a group of 3: dk/dv blocks with odd numbers of query tiles, their two stages taking
  // turns unevenly)
  for (const Case c :
       {Case{75, 75, 4, 2, 64, 0, false}, Case{9, 75, 6, 3, 64, 66, true}, Case{200, 200, 4, 1, 128, 0, true},
        Case{70, 70, 2, 1, 128, 0, true, true}, Case{130, 200, 3, 1, 64, 70, false}}) {
    AttentionProblem a = attention_problem(
        c.tq, c.tk, c.hq, c.hkv, c.d, c.offset, c.mask,
        [&c](long j) { return !(c.first_key_hidden && j == 0) && j % 5 != 3 && j < c.tk - 3; }, 17);
    a.p.row_dot = a.RD.data();
    for (const FlashOperands ops : {FlashOperands::BF16, FlashOperands::F16}) {
      INFO("tq " << c.tq << " tk " << c.tk << " heads " << c.hq << "/" << c.hkv << " d " << c.d << " "
                 << model::cuda::flash_operands_name(ops));
      if (!model::cuda::flash_mma_takes(a.p, ops)) {
        // sm_80+ must take them (unless switched off): a binary built for an older architecture would fall back
        // silently; elsewhere (sm_75) there are none to test
        int device = 0, major = 0;
        VIDLORA_CUDA_CHECK(cudaGetDevice(&device));
        VIDLORA_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
        REQUIRE_FALSE((major >= 8 && model::cuda::register_tiles_allowed()));
        WARN("no register-tile kernels on this GPU (sm_80+ only) or VIDLORA_ATTENTION_REGISTER_TILES=0: skipped");
        return;
      }
      const bool bf16 = ops == FlashOperands::BF16;
      model::cuda::FlashAttentionOptions shared{false, 0, ops};
      shared.register_tiles = false;
      const std::array<std::vector<float>, 4> want = run_flash(a, shared);
      const std::vector<float> want_lse = a.L.download();
      const model::cuda::FlashAttentionOptions regs{false, 0, ops};
      std::vector<float> first_out, first_lse;
      for (int run = 0; run < 2; ++run) {
        const std::array<std::vector<float>, 4> got = run_flash(a, regs);
        const std::vector<float> lse = a.L.download();
        CHECK(cuda_test::normwise_error(got[0], want[0]) < (bf16 ? 2e-3 : 5e-4));
        CHECK(cuda_test::normwise_error(got[0], a.out) < (bf16 ? 1.5e-2 : 2e-3));
        float lse_err = 0.0f;
        for (std::size_t i = 0; i < lse.size(); ++i) {
          if (std::isinf(want_lse[i])) {
            CHECK(lse[i] == want_lse[i]);  // a row that sees no key: -inf
          } else {
            lse_err = std::max(lse_err, std::fabs(lse[i] - want_lse[i]));
          }
        }
        CHECK(lse_err < 1e-5f);
        const std::vector<float>* cpu[3] = {&a.dq, &a.dk, &a.dv};
        for (int t = 1; t < 4; ++t)  // dq, dk, dv from the backward over this forward's lse
          CHECK(cuda_test::normwise_error(got[static_cast<std::size_t>(t)], *cpu[t - 1]) < (bf16 ? 1.5e-2 : 2e-3));
        if (run == 0) {
          first_out = got[0];
          first_lse = lse;
        } else {
          CHECK(cuda_test::bit_mismatches(got[0], first_out) == 0);
          CHECK(cuda_test::bit_mismatches(lse, first_lse) == 0);
        }
      }
      model::cuda::AttentionParams p = a.p;  // the out and lse of the last run above
      p.forward_out = a.O.data();
      std::vector<float> first[3];
      for (int run = 0; run < 2; ++run) {
        zero_grads(a);
        cuda_test::poison(a.RD);
        model::cuda::flash_attention_backward(p, regs);
        VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> got[3] = {a.DQ.download(), a.DK.download(), a.DV.download()};
        const std::vector<float>* cpu[3] = {&a.dq, &a.dk, &a.dv};
        for (int t = 0; t < 3; ++t) {
          INFO("register-tile backward, output " << t << " (dq, dk, dv)");
          CHECK(cuda_test::normwise_error(got[t], *cpu[t]) < (bf16 ? 1.5e-2 : 2e-3));
          if (run == 0)
            first[t] = got[t];
          else
            CHECK(cuda_test::bit_mismatches(got[t], first[t]) == 0);  // no atomics
        }
      }
      // From the inputs' 16-bit patterns (Inputs16): the bits of the fp32 inputs, forward and backward.
      // With out16 (the decoder's o_proj operand) the forward writes out's rounding too, out itself unchanged.
      const Inputs16 in16(a, ops);
      model::cuda::AttentionParams p16 = p;
      in16.point(p16);
      cuda_test::poison(a.O);
      cuda_test::poison(a.L);
      DeviceBuffer<std::uint16_t> out16(first_out.size());
      out16.fill_bytes(0xFF);
      p16.out16 = out16.data();
      model::cuda::flash_attention_forward(p16, regs);
      VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
      p16.out16 = nullptr;
      CHECK(cuda_test::bit_mismatches(a.O.download(), first_out) == 0);
      CHECK(cuda_test::bit_mismatches(a.L.download(), first_lse) == 0);
      {
        std::vector<std::uint16_t> want16(first_out.size());
        for (std::size_t i = 0; i < want16.size(); ++i)
          want16[i] = bf16 ? io::float_to_bf16_bits(first_out[i]) : io::float_to_fp16_bits(first_out[i]);
        CHECK(out16.download() == want16);
        model::cuda::AttentionParams refused = p;
        refused.out16 = out16.data();
        CHECK_THROWS_WITH(model::cuda::flash_attention_forward(refused, shared), Catch::Contains("out16 only"));
        CHECK_THROWS_WITH(model::cuda::attention_forward(refused), Catch::Contains("writes no 16-bit output"));
      }
      zero_grads(a);
      cuda_test::poison(a.RD);
      model::cuda::flash_attention_backward(p16, regs);
      VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
      const std::vector<float> got16[3] = {a.DQ.download(), a.DK.download(), a.DV.download()};
      for (int t = 0; t < 3; ++t) {
        INFO("register-tile backward from 16-bit inputs, output " << t << " (dq, dk, dv)");
        CHECK(cuda_test::bit_mismatches(got16[t], first[t]) == 0);
      }
      // With the forward's and dq's key tiles and dk/dv's query tiles in two stages (FlashAttentionOptions::pipelined:
      // cp.async copies of the next tile in flight from the 16-bit inputs; fp32 inputs loaded as before): the same bits
      // again.
      model::cuda::FlashAttentionOptions pipelined = regs;
      pipelined.pipelined = true;
      // dk/dv takes two stages where they cost no resident block: on the emulated sm_90 (and an H100) at both head
      // dims, on the emulated sm_80 at head dim 64 only (103 KiB a block at 128 leave room for one, not two)
      const int dkv_stages = model::cuda::flash_mma_dkv_stages(a.p, ops, true);
      CHECK(model::cuda::flash_mma_dkv_stages(a.p, ops, false) == 1);
#if defined(VIDLORA_EMULATED_MMA_M16N8K16)
      int cc_major = 0;
      VIDLORA_CUDA_CHECK(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, 0));
      CHECK(dkv_stages == (cc_major >= 9 || c.d == 64 ? 2 : 1));
#else
      INFO("dk/dv query-tile stages when pipelined: " << dkv_stages);
#endif
      for (const model::cuda::AttentionParams* pp : {&p16, &p}) {
        INFO((pp == &p16 ? "two key stages, 16-bit inputs" : "two key stages, fp32 inputs"));
        cuda_test::poison(a.O);
        cuda_test::poison(a.L);
        model::cuda::flash_attention_forward(*pp, pipelined);
        VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
        CHECK(cuda_test::bit_mismatches(a.O.download(), first_out) == 0);
        CHECK(cuda_test::bit_mismatches(a.L.download(), first_lse) == 0);
        zero_grads(a);
        cuda_test::poison(a.RD);
        model::cuda::flash_attention_backward(*pp, pipelined);
        VIDLORA_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> got2[3] = {a.DQ.download(), a.DK.download(), a.DV.download()};
        for (int t = 0; t < 3; ++t) CHECK(cuda_test::bit_mismatches(got2[t], first[t]) == 0);
      }
    }
  }
}
