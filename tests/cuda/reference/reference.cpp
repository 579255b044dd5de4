#include "reference.hpp"
#include "matrix_vector.hpp"

#include <cstdint>
#include <span>

#include <vidlora/core/matrix.hpp>
#include <vidlora/core/rng.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/lora/lora_linear.hpp>
#include <vidlora/loss/cross_entropy.hpp>
#include <vidlora/model/attention.hpp>
#include <vidlora/model/rms_norm.hpp>
#include <vidlora/model/rotary.hpp>
#include <vidlora/optim/clip.hpp>
#include <vidlora/quant/quantized_weight.hpp>
#include <vidlora/quant/quantizer.hpp>

namespace ref {
namespace {
using vidlora::Matrix;

template <class Format, int B>
Quantized quantize_with(const std::vector<float>& values, bool dq) {
  using Q = vidlora::quant::Quantizer<Format, B>;
  const auto q = Q::quantize(std::span<const float>(values), dq);
  Quantized out;
  out.packed = q.packed;
  out.qabsmax = q.qabsmax;
  out.absmax = q.absmax;
  out.nested_absmax = q.nested_absmax;
  out.absmax_offset = q.absmax_offset;
  out.dequantized = Q::dequantize(q);
  return out;
}
}  // namespace

Quantized quantize(bool nf4, const std::vector<float>& values, int blocksize, bool dq) {
  using vidlora::quant::FP4;
  using vidlora::quant::NF4;
  if (blocksize == 64) return nf4 ? quantize_with<NF4, 64>(values, dq) : quantize_with<FP4, 64>(values, dq);
  return nf4 ? quantize_with<NF4, 128>(values, dq) : quantize_with<FP4, 128>(values, dq);
}

void adamw(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& m, std::vector<float>& v,
           const vidlora::optim::AdamWStepParams& s) {
  vidlora::optim::adamw_update_range(p.data(), g.data(), m.data(), v.data(), static_cast<std::ptrdiff_t>(p.size()), s);
}

double clip_grad_norm(std::vector<std::vector<float>>& grads, double max_norm) {
  std::vector<Matrix> g, values;
  for (auto& t : grads) {
    g.push_back(to_matrix(t, 1, static_cast<long>(t.size())));
    values.push_back(g.back());
  }
  std::vector<vidlora::optim::Parameter> params;
  for (std::size_t i = 0; i < g.size(); ++i) params.push_back({"t" + std::to_string(i), &values[i], &g[i]});
  const double norm = vidlora::optim::clip_grad_norm(std::span<const vidlora::optim::Parameter>(params), max_norm);
  for (std::size_t i = 0; i < g.size(); ++i) grads[i] = to_vector(g[i]);
  return norm;
}

CrossEntropy cross_entropy(const std::vector<float>& logits, long rows, long vocab, const std::vector<int>& targets,
                           double eps) {
  vidlora::loss::CrossEntropyOptions o;
  o.label_smoothing = eps;
  const auto r = vidlora::loss::cross_entropy(to_matrix(logits, rows, vocab), targets, o);
  return {r.loss, to_vector(r.grad)};
}

void rms_norm(const std::vector<float>& x, const std::vector<float>& w, long rows, long n, double eps,
              std::vector<float>& y, std::vector<float>& inv_rms) {
  vidlora::Vector inv;
  const vidlora::Vector wv = Eigen::Map<const vidlora::Vector>(w.data(), n);
  y = to_vector(vidlora::model::rms_norm<float>(to_matrix(x, rows, n), wv, eps, &inv));
  inv_rms.assign(inv.data(), inv.data() + inv.size());
}

void rms_norm_backward(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& inv_rms,
                       const std::vector<float>& dy, long rows, long n, std::vector<float>& dx) {
  const vidlora::Vector wv = Eigen::Map<const vidlora::Vector>(w.data(), n);
  const vidlora::Vector iv = Eigen::Map<const vidlora::Vector>(inv_rms.data(), rows);
  dx = to_vector(vidlora::model::rms_norm_backward<float>(to_matrix(x, rows, n), wv, iv, to_matrix(dy, rows, n)));
}

void rope(std::vector<float>& x, long tokens, long heads, int head_dim, const std::vector<long>& positions,
          bool inverse, double theta) {
  Matrix m = to_matrix(x, tokens, heads * head_dim);
  vidlora::model::RotaryTable t(head_dim, theta);
  const std::vector<Eigen::Index> pos(positions.begin(), positions.end());
  t.apply(m, pos, inverse);
  x = to_vector(m);
}

void attention(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v, long tq, long tk,
               long q_heads, long kv_heads, long d, long q_offset, const std::vector<int>& key_mask,
               const std::vector<float>& d_out, std::vector<float>& out, std::vector<float>& dq, std::vector<float>& dk,
               std::vector<float>& dv) {
  const vidlora::model::AttentionShape s{q_heads, kv_heads, d};
  const Matrix Q = to_matrix(q, tq, q_heads * d), K = to_matrix(k, tk, kv_heads * d),
               V = to_matrix(v, tk, kv_heads * d);
  Matrix probs;
  out = to_vector(vidlora::model::attention_forward<float>(Q, K, V, s, q_offset, key_mask, &probs));
  Matrix DQ = Matrix::Zero(tq, q_heads * d), DK = Matrix::Zero(tk, kv_heads * d), DV = Matrix::Zero(tk, kv_heads * d);
  vidlora::model::attention_backward<float>(Q, K, V, s, probs, to_matrix(d_out, tq, q_heads * d), DQ, DK, DV);
  dq = to_vector(DQ);
  dk = to_vector(DK);
  dv = to_vector(DV);
}

namespace {
template <class Base>
Lora run_lora(long tokens, long in, long out, double dropout, std::uint64_t seed, std::uint32_t layer,
              const std::vector<float>& w, const std::vector<float>& bias, const std::vector<float>& x,
              const std::vector<float>& dy) {
  vidlora::lora::LoraOptions o;
  o.dropout = dropout;
  o.seed = seed;
  o.layer = layer;
  const Matrix W = to_matrix(w, out, in);
  vidlora::lora::LoraLinear<16, 32, Base> l =
      bias.empty() ? vidlora::lora::LoraLinear<16, 32, Base>(W, o)
                   : vidlora::lora::LoraLinear<16, 32, Base>(W, Eigen::Map<const vidlora::Vector>(bias.data(), out), o);
  Matrix B(out, 16);
  for (Eigen::Index i = 0; i < B.size(); ++i)
    B.data()[i] = (vidlora::random_uniform(seed + 99, 1, static_cast<std::uint64_t>(i)) - 0.5f) * 0.1f;
  l.lora_B() = B;
  Lora r;
  r.a = to_vector(l.lora_A());
  r.b = to_vector(l.lora_B());
  r.scaling = l.scaling();
  r.dense_w = to_vector(l.base().to_dense());
  r.y = to_vector(l.forward(to_matrix(x, tokens, in), true));
  r.dx = to_vector(l.backward(to_matrix(dy, tokens, out)));
  r.grad_a = to_vector(l.grad_A());
  r.grad_b = to_vector(l.grad_B());
  return r;
}
}  // namespace

Lora lora(bool nf4, long tokens, long in, long out, double dropout, std::uint64_t seed, std::uint32_t layer,
          const std::vector<float>& w, const std::vector<float>& bias, const std::vector<float>& x,
          const std::vector<float>& dy) {
  if (!nf4) return run_lora<vidlora::lora::DenseWeight>(tokens, in, out, dropout, seed, layer, w, bias, x, dy);
  Lora r = run_lora<vidlora::quant::NF4Weight>(tokens, in, out, dropout, seed, layer, w, bias, x, dy);
  r.q = quantize(true, w, 64, true);
  return r;
}

}  // namespace ref
