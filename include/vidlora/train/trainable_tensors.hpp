#pragma once
// TrainableTensors: every tensor a run trains, by name, as the optimizer, the checkpoints and the best-parameter
// file see them: the projector's weights and biases (multi_modal_projector.*) and each LoRA layer's A and B
// (<module path>.lora_A.weight / .lora_B.weight). The projector's biases are Eigen column vectors; the optimizer
// steps [1, n] row shadows of them, which pull() refreshes from the biases and push() writes back.
// values_version() counts the times the values may have changed (push() after an optimizer step, load(),
// values_changed()): a decoder step that keeps its own copy of the LoRA values (DecoderStep<Cuda>) refreshes it
// when the count moves, so no load site has to remember to tell it.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/io/safetensors.hpp>
#include <vidlora/io/safetensors_writer.hpp>
#include <vidlora/optim/parameter.hpp>
#include <vidlora/train/projector_tensors.hpp>

namespace vidlora::train {

namespace detail {

// Bias vectors are Eigen column vectors; the optimizer sees [1, n] row-matrix shadows.
struct BiasShadow {
  Vector* value;
  Vector* grad;
  Matrix v, g;
  void pull() {
    v = value->transpose();
    g = grad->transpose();
  }
  void push() { *value = v.row(0).transpose(); }
};

}  // namespace detail

// Holds the tensors' addresses: the projector and the decoder must outlive it and stay where they are.
class TrainableTensors {
 public:
  // The projector's tensors (weights, then biases), then every LoRA layer's A and B in decoder order.
  template <class Projector, class Decoder>
  TrainableTensors(Projector& projector, Decoder& decoder) {
    const ProjectorTensors pt = projector_tensors(projector);
    for (std::size_t i = 0; i < pt.weights.size(); ++i)
      projector_.push_back({pt.weights[i].first, pt.weights[i].second, pt.grad_weights[i].second});
    shadows_.reserve(pt.biases.size());  // projector_ points into shadows_: no reallocation
    for (std::size_t i = 0; i < pt.biases.size(); ++i) {
      shadows_.push_back({pt.biases[i].second, pt.grad_biases[i].second, {}, {}});
      shadows_.back().pull();
    }
    for (std::size_t i = 0; i < pt.biases.size(); ++i)
      projector_.push_back({pt.biases[i].first, &shadows_[i].v, &shadows_[i].g});
    decoder.for_each_lora([&](const std::string& path, auto& l) {
      lora_.push_back({path + ".lora_A.weight", &l.lora_A(), &l.grad_A()});
      lora_.push_back({path + ".lora_B.weight", &l.lora_B(), &l.grad_B()});
    });
  }
  TrainableTensors(const TrainableTensors&) = delete;  // the parameters point into shadows_
  TrainableTensors& operator=(const TrainableTensors&) = delete;

  const std::vector<optim::Parameter>& projector() const { return projector_; }
  const std::vector<optim::Parameter>& lora() const { return lora_; }
  // What a stage steps: the projector, and the LoRA factors when the stage trains LoRA.
  std::vector<optim::Parameter> for_stage(bool train_lora) const {
    std::vector<optim::Parameter> p = projector_;
    if (train_lora) p.insert(p.end(), lora_.begin(), lora_.end());
    return p;
  }

  // Bias shadows from the biases (values and gradients).
  void pull() {
    for (auto& sh : shadows_) sh.pull();
  }
  // Bias shadows' gradients from the biases' (after a backward pass).
  void pull_grads() {
    for (auto& sh : shadows_) sh.g = sh.grad->transpose();
  }
  // The float32 storage the backward pass accumulates `params`' gradients into (a bias's, not its shadow's).
  std::vector<std::span<float>> gradient_storage(const std::vector<optim::Parameter>& params) const {
    std::vector<std::span<float>> out;
    for (const auto& p : params) {
      const auto sh = std::find_if(shadows_.begin(), shadows_.end(), [&](const auto& s) { return &s.g == p.grad; });
      if (sh != shadows_.end())
        out.emplace_back(sh->grad->data(), static_cast<std::size_t>(sh->grad->size()));
      else
        out.emplace_back(p.grad->data(), static_cast<std::size_t>(p.grad->size()));
    }
    return out;
  }
  // Biases from their shadows (after an optimizer step, which also changed the matrices in place).
  void push() {
    for (auto& sh : shadows_) sh.push();
    ++version_;
  }
  // A write that did not come through push() or load() (an adapter loaded into the decoder).
  void values_changed() { ++version_; }
  std::uint64_t values_version() const { return version_; }

  // Every tensor's current value as "param/<name>" (checkpoints and the best-parameter file).
  io::TensorMap tensor_map() {
    io::TensorMap t;
    pull();
    for (const auto& p : projector_) t.emplace("param/" + p.name, io::TensorData::from_matrix(*p.value));
    for (const auto& p : lora_) t.emplace("param/" + p.name, io::TensorData::from_matrix(*p.value));
    return t;
  }
  // Sets every tensor from a file tensor_map() was written to; a shape that differs is an error naming the tensor.
  void load(const io::SafetensorsFile& f) {
    pull();
    auto load = [&](const optim::Parameter& p) {
      const Matrix m = f.matrix("param/" + p.name);
      require(m.rows() == p.value->rows() && m.cols() == p.value->cols(), "checkpoint {}: {} is {}, expected {}",
              f.source(), p.name, shape_string(m), shape_string(*p.value));
      *p.value = m;
    };
    for (const auto& p : projector_) load(p);
    for (const auto& p : lora_) load(p);
    push();  // bumps values_version()
  }
  // The best-parameter file (checkpoints/best.safetensors): tensor_map() alone.
  void save(const std::filesystem::path& path) { io::write_safetensors(path, tensor_map(), {{"format", "vidlora"}}); }

 private:
  std::vector<detail::BiasShadow> shadows_;
  std::vector<optim::Parameter> projector_, lora_;
  std::uint64_t version_ = 0;
};

}  // namespace vidlora::train
