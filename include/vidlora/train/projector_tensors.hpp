#pragma once
// The projector's trainable tensors under their LLaVA (HF) names, multi_modal_projector.linear_{1,2}.{weight,bias},
// the projector file train_captioner writes and caption reads (projector.safetensors), and the projector a PEFT
// adapter carries as a modules_to_save module.

#include <algorithm>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/io/safetensors.hpp>
#include <vidlora/io/safetensors_writer.hpp>
#include <vidlora/lora/peft_adapter.hpp>
#include <vidlora/model/projector.hpp>

namespace vidlora::train {

// Named trainable tensors of a projector, with HF (LLaVA) key names.
struct ProjectorTensors {
  std::vector<std::pair<std::string, Matrix*>> weights, grad_weights;
  std::vector<std::pair<std::string, Vector*>> biases, grad_biases;
  std::vector<std::string> absent_biases;  // a bias-free projector's bias names (a file holding one is refused)
};
inline ProjectorTensors projector_tensors(model::Mlp2xGelu& p) {
  ProjectorTensors t;
  int k = 1;
  for (model::Linear* l : {&p.linear_1(), &p.linear_2()}) {
    const std::string n = fmt::format("multi_modal_projector.linear_{}.", k++);
    t.weights.emplace_back(n + "weight", &l->weight());
    t.grad_weights.emplace_back(n + "weight", &l->grad_weight());
    if (!l->has_bias()) {  // multimodal_projector_bias false: no bias tensor to train or save
      t.absent_biases.push_back(n + "bias");
      continue;
    }
    t.biases.emplace_back(n + "bias", &l->bias());
    t.grad_biases.emplace_back(n + "bias", &l->grad_bias());
  }
  return t;
}
inline ProjectorTensors projector_tensors(model::Linear& l) {
  ProjectorTensors t;
  t.weights.emplace_back("multi_modal_projector.linear_1.weight", &l.weight());
  t.grad_weights.emplace_back("multi_modal_projector.linear_1.weight", &l.grad_weight());
  if (!l.has_bias()) {
    t.absent_biases.push_back("multi_modal_projector.linear_1.bias");
    return t;
  }
  t.biases.emplace_back("multi_modal_projector.linear_1.bias", &l.bias());
  t.grad_biases.emplace_back("multi_modal_projector.linear_1.bias", &l.grad_bias());
  return t;
}

// The projector's tensors by `prefix` + HF name (multi_modal_projector.linear_1.weight …).
template <class P>
io::TensorMap projector_tensor_map(P& projector, std::string_view prefix = {}) {
  io::TensorMap t;
  const ProjectorTensors pt = projector_tensors(projector);
  for (const auto& [name, m] : pt.weights) t.emplace(std::string(prefix) + name, io::TensorData::from_matrix(*m));
  for (const auto& [name, v] : pt.biases) t.emplace(std::string(prefix) + name, io::TensorData::from_vector(*v));
  return t;
}

// Writes the projector's weights with HF key names (multi_modal_projector.linear_1.weight …).
template <class P>
void save_projector(const std::filesystem::path& path, P& projector) {
  const io::TensorMap t = projector_tensor_map(projector);
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  io::write_safetensors(path, t, {{"format", "pt"}});
}
namespace detail {

// Sets the projector from `f`'s tensors named `prefix` + the HF names (those `take` accepts; all by default); `what`
// names the source in errors.
template <class P>
void load_projector_tensors(
    const io::SafetensorsFile& f, const std::string& prefix, P& projector, const std::string& what,
    const std::function<bool(const std::string&)>& take = [](const std::string&) { return true; }) {
  const ProjectorTensors pt = projector_tensors(projector);
  for (const auto& [name, m] : pt.weights) {
    if (!take(name)) continue;
    require(f.contains(prefix + name), "load_projector {}: no tensor {}", what, prefix + name);
    const Matrix x = f.matrix(prefix + name);
    require(x.rows() == m->rows() && x.cols() == m->cols(), "load_projector {}: {} is {}, expected {}", what,
            prefix + name, shape_string(x), shape_string(*m));
    *m = x;
  }
  for (const auto& name : pt.absent_biases)
    require(!f.contains(prefix + name),
            "load_projector {}: the file has {} but the projector has no bias "
            "(multimodal_projector_bias: false)",
            what, prefix + name);
  for (const auto& [name, v] : pt.biases) {
    if (!take(name)) continue;
    require(f.contains(prefix + name), "load_projector {}: no tensor {}", what, prefix + name);
    const Vector x = f.vector(prefix + name);
    require(x.size() == v->size(), "load_projector {}: {} has {} values, expected {}", what, prefix + name, x.size(),
            v->size());
    *v = x;
  }
}

}  // namespace detail

template <class P>
void load_projector(const std::filesystem::path& path, P& projector) {
  detail::load_projector_tensors(io::SafetensorsFile::open(path), "", projector, path.string());
}

// What comes before multi_modal_projector in transformers 5's LLaVA module paths: a fine-tune with
// modules_to_save=["multi_modal_projector"] saves the projector as base_model.model.model.multi_modal_projector.*.
inline constexpr std::string_view kAdapterProjectorPrefix = "model.";

// The projector's tensors as a PEFT adapter's modules_to_save tensors (lora::save_peft_adapter's `saved`).
template <class P>
io::TensorMap projector_adapter_tensors(P& projector) {
  return projector_tensor_map(projector, kAdapterProjectorPrefix);
}

// Sets the projector from the PEFT adapter in `dir` (`adapter`: lora::load_peft_adapter's) where its modules_to_save
// selects it, as PEFT does: a projector tensor whose module path ([model.]multi_modal_projector[.linear_k]) ends with
// an entry is the adapter's (it must be in the file: PEFT fails to load the adapter otherwise), the others stay the
// model's ("linear_1" takes only linear_1). Returns whether the adapter set any. Its tensors are under
// model.multi_modal_projector.* (transformers 5's module path) or multi_modal_projector.* (what releases before 4.52
// wrote; PEFT 0.21 on transformers 5 refuses that layout's projector, vidlora reads it). A saved tensor that is not
// the projector's (lm_head, embed_tokens, the vision tower ...) is an error naming it: vidlora trains LoRA and the
// projector only, and a model without the tensors the adapter was trained with would caption wrongly.
template <class P>
bool load_projector_from_adapter(const std::filesystem::path& dir, const lora::PeftAdapter& adapter, P& projector) {
  if (adapter.spec.modules_to_save.empty()) return false;  // (load_peft_adapter took no saved tensor then)
  constexpr std::string_view kModule = "multi_modal_projector.";
  std::string prefix(kAdapterProjectorPrefix);  // what comes before multi_modal_projector. in the file
  const ProjectorTensors pt = projector_tensors(projector);
  std::vector<std::string> present;  // the tensors the projector has (a bias-free one has no bias tensors)
  for (const auto& [name, m] : pt.weights) present.push_back(name);
  for (const auto& [name, v] : pt.biases) present.push_back(name);
  const auto named = [](const std::vector<std::string>& names, const std::string& n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  std::set<std::string> in_file;
  for (std::size_t i = 0; i < adapter.saved_tensors.size(); ++i) {
    const std::string& t = adapter.saved_tensors[i];
    const auto at = t.find(kModule);
    const std::string before = at == std::string::npos ? std::string() : t.substr(0, at);
    const bool projector_tensor = at != std::string::npos && (before.empty() || before == kAdapterProjectorPrefix) &&
                                  (named(present, t.substr(at)) || named(pt.absent_biases, t.substr(at)));
    require(projector_tensor,
            "PEFT adapter '{}': modules_to_save [{}] saves '{}', which vidlora does not train (it trains LoRA and the "
            "multi_modal_projector only): a model without it would not be the one the adapter was trained with",
            dir.string(), fmt::join(adapter.spec.modules_to_save, ", "), t);
    require(i == 0 || before == prefix, "PEFT adapter '{}': projector tensors under two paths ('{}' and '{}')",
            dir.string(), adapter.saved_tensors[0], t);
    prefix = before;
    in_file.insert(t.substr(at));
  }
  for (const auto& name : pt.absent_biases)
    require(in_file.count(name) == 0,
            "PEFT adapter '{}': it saves the projector's {} but the projector has no bias (multimodal_projector_bias: "
            "false)",
            dir.string(), name);
  std::set<std::string> selected;  // the projector's tensors modules_to_save selects
  for (const auto& name : present)
    if (lora::saved_module_tensor(adapter.spec, prefix + name)) selected.insert(name);
  for (const auto& name : selected)
    require(in_file.count(name) == 1,
            "PEFT adapter '{}': modules_to_save [{}] selects the projector's {}, but {} has no tensor {}{} (PEFT "
            "refuses to load it too)",
            dir.string(), fmt::join(adapter.spec.modules_to_save, ", "), name, lora::kAdapterWeightsName,
            lora::kPeftKeyPrefix, prefix + name);
  if (selected.empty()) return false;
  detail::load_projector_tensors(
      io::SafetensorsFile::open(dir / lora::kAdapterWeightsName), std::string(lora::kPeftKeyPrefix) + prefix, projector,
      (dir / lora::kAdapterWeightsName).string(), [&](const std::string& name) { return selected.count(name) == 1; });
  return true;
}

// Whether two projectors hold the same values, bit for bit.
template <class P>
bool same_projector_values(P& a, P& b) {
  const ProjectorTensors x = projector_tensors(a), y = projector_tensors(b);
  if (x.weights.size() != y.weights.size() || x.biases.size() != y.biases.size()) return false;
  for (std::size_t i = 0; i < x.weights.size(); ++i) {
    const Matrix &p = *x.weights[i].second, &q = *y.weights[i].second;
    if (p.rows() != q.rows() || p.cols() != q.cols() || !(p.array() == q.array()).all()) return false;
  }
  for (std::size_t i = 0; i < x.biases.size(); ++i) {
    const Vector &p = *x.biases[i].second, &q = *y.biases[i].second;
    if (p.size() != q.size() || !(p.array() == q.array()).all()) return false;
  }
  return true;
}

}  // namespace vidlora::train
