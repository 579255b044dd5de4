#pragma once
// decoder_loss_and_backward_steps' model executor over the CPU pieces model::Decoder uses (cuda_host tests).
#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <vidlora/io/half.hpp>
#include <vidlora/loss/lm_head_cross_entropy.hpp>
#include <vidlora/model/decoder.hpp>
#include <vidlora/model/decoder_host_weights.hpp>
#include <vidlora/model/decoder_layer_cpu.hpp>
#include <vidlora/model/decoder_model_steps.hpp>
#include <vidlora/model/rms_norm.hpp>

namespace vidlora::test {

// decoder_loss_and_backward_steps' model executor over the CPU pieces model::Decoder uses, rebuilt from the
// exported weights (dense bases): what the CUDA DecoderModel runs, with the CPU's ops. It counts the layer executors
// it creates and releases and the most alive at once (each one holds its block's linear caches).
struct HostDecoderModelExec {
  using Slot = model::LinearSlot<16, 32, lora::DenseWeight>;
  using LayerExec = model::CpuLayerExecutor<Slot>;
  using tensor_type = Matrix;
  using rows_type = Vector;
  using saved_type = LayerExec::saved_type;
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  model::DecoderConfig config;
  model::RotaryTable rope;
  std::vector<model::DecoderLayerWeights<Slot>> layers;
  Vector norm;
  Matrix head;
  model::SequenceBatch batch;
  std::vector<Eigen::Index> positions;
  std::vector<int> targets;
  loss::CrossEntropyOptions ce;
  loss::LmHeadOptions lm;
  std::vector<std::unique_ptr<LayerExec>> execs;
  int released = 0;
  int created = 0, live = 0, most_live = 0;
  std::vector<std::array<std::uint64_t, 7>> rng;  // save_layer_rng: each block's dropout steps
  bool training = true;                           // false: an evaluation's forward (no dropout)

  static Matrix matrix(const std::vector<float>& v, Eigen::Index r, Eigen::Index c) {
    return Eigen::Map<const RowMajor>(v.data(), r, c);
  }
  static Vector vector(const std::vector<float>& v) {
    return Eigen::Map<const Vector>(v.data(), static_cast<Eigen::Index>(v.size()));
  }

  HostDecoderModelExec(const model::DecoderConfig& c, const model::DecoderHostWeights& w, const model::SequenceBatch& b,
                       const std::vector<int>& labels, const loss::CrossEntropyOptions& o, Eigen::Index chunk)
      : config(c), rope(c.head_dim, w.rope), batch(b), ce(o) {
    rope.prepare(b.seq_len);
    lm.chunk_size = chunk;
    norm = vector(w.final_norm);
    head = matrix(w.head, w.vocab, w.hidden);
    for (const auto& hl : w.layers) {
      auto& layer = layers.emplace_back();
      layer.norm1 = vector(hl.norm1);
      layer.norm2 = vector(hl.norm2);
      if (w.qk_norm) {
        layer.q_norm = vector(hl.q_norm);
        layer.k_norm = vector(hl.k_norm);
      }
      for (const auto& s : hl.linears) {
        lora::LoraOptions lo;
        lo.dropout = s.dropout;
        lo.seed = s.seed;
        lo.layer = s.layer_index;
        std::optional<Vector> bias;
        if (!s.bias.empty()) bias = vector(s.bias);
        layer.slots.emplace_back(matrix(s.w, s.out, s.in), std::move(bias), s.has_lora(), lo);
        if (!s.has_lora()) continue;
        layer.slots.back().lora().lora_A() = matrix(s.lora_a, s.rank, s.in);
        layer.slots.back().lora().lora_B() = matrix(s.lora_b, s.out, s.rank);
        layer.slots.back().set_step(s.step);
      }
    }
    for (Eigen::Index i = 0; i < b.tokens(); ++i) positions.push_back(i % b.seq_len);
    targets = model::next_token_targets(labels, b, o.ignore_index);
    execs.resize(layers.size());
  }

  std::size_t num_layers() const { return layers.size(); }
  LayerExec& layer(std::size_t l) {
    if (!execs[l]) {
      execs[l] = std::make_unique<LayerExec>(layers[l], config, rope, positions, batch, training);
      ++created;
      most_live = std::max(most_live, ++live);
    }
    return *execs[l];
  }
  void release_layer(std::size_t l) {
    for (auto& s : layers[l].slots) s.release();
    if (execs[l]) --live;
    execs[l].reset();
    ++released;
  }
  // layer_backward_done: the blocks in the order their backward ended; each block's LoRA gradients at that moment
  // (every slot with LoRA: grad_A, grad_B), and whether a block below it had a non-zero LoRA gradient already.
  std::vector<std::size_t> backward_done;
  std::vector<std::vector<Matrix>> grads_when_done;
  std::vector<bool> below_touched_when_done;
  std::vector<Matrix> lora_grads_of(std::size_t l) {
    std::vector<Matrix> g;
    for (auto& s : layers[l].slots)
      if (s.has_lora()) {
        g.push_back(s.lora().grad_A());
        g.push_back(s.lora().grad_B());
      }
    return g;
  }
  void layer_backward_done(std::size_t l) {
    backward_done.push_back(l);
    grads_when_done.resize(layers.size());
    below_touched_when_done.resize(layers.size());
    grads_when_done[l] = lora_grads_of(l);
    bool touched = false;
    for (std::size_t b = 0; b < l; ++b)
      for (const Matrix& g : lora_grads_of(b)) touched = touched || !g.isZero(0.0);
    below_touched_when_done[l] = touched;
  }
  void save_layer_rng(std::size_t l) {
    rng.resize(layers.size());
    for (std::size_t m = 0; m < 7; ++m) rng[l][m] = layers[l].slots[m].step();
  }
  // offload_checkpoints: the kept inputs "on the host" (a separate store the tests count).
  std::vector<Matrix> host_inputs;
  int offloaded = 0, reloaded = 0;
  void offload_input(std::size_t l, Matrix x) {
    host_inputs.resize(layers.size());
    host_inputs[l] = std::move(x);
    ++offloaded;
  }
  Matrix reload_input(std::size_t l) {
    ++reloaded;
    return std::move(host_inputs.at(l));
  }
  // pack_saved: the device stores the activations as bf16 and widens them again before the backward, so the
  // backward reads each value rounded to bf16: that rounding, in place. Counted; `packed` says which blocks.
  std::vector<std::size_t> packed;
  int unpacked = 0;
  void pack_saved(std::size_t l, saved_type& a) {
    model::for_each_saved_activation(a, [](Matrix& t) {
      for (Eigen::Index i = 0; i < t.size(); ++i) t.data()[i] = io::round_to_bf16(t.data()[i]);
    });
    packed.push_back(l);
  }
  void unpack_saved(std::size_t, saved_type&) { ++unpacked; }
  void restore_layer_rng(std::size_t l) {
    for (std::size_t m = 0; m < 7; ++m) layers[l].slots[m].set_step(rng[l][m]);
  }
  Matrix copy(const Matrix& x) const { return x; }
  Matrix final_norm(const Matrix& h, Vector* inv) const {
    return model::rms_norm<float>(h, norm, config.rms_norm_eps, inv);
  }
  Matrix final_norm_backward(const Matrix& h, const Vector& inv, const Matrix& dy) const {
    return model::rms_norm_backward<float>(h, norm, inv, dy);
  }
  model::DecoderLossTotals lm_head_loss(const Matrix& hidden, Matrix& d_hidden) {
    auto r = loss::lm_head_cross_entropy<float>(hidden, head, targets, ce, lm);
    d_hidden = std::move(r.grad_hidden);
    return {r.loss, r.valid_tokens};
  }
  model::DecoderLossTotals lm_head_loss_forward(const Matrix& hidden) {
    const auto r = loss::lm_head_cross_entropy<float>(hidden, head, targets, ce, lm);  // d hidden unused
    return {r.loss, r.valid_tokens};
  }
};

}  // namespace vidlora::test
