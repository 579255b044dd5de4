#pragma once
// The projector's trainable tensors under their LLaVA (HF) names, multi_modal_projector.linear_{1,2}.{weight,bias},
// and the projector file train_captioner writes and caption reads (projector.safetensors).

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/io/safetensors.hpp>
#include <vidlora/io/safetensors_writer.hpp>
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

// Writes the projector's weights with HF key names (multi_modal_projector.linear_1.weight …).
template <class P>
void save_projector(const std::filesystem::path& path, P& projector) {
  io::TensorMap t;
  const ProjectorTensors pt = projector_tensors(projector);
  for (const auto& [name, m] : pt.weights) t.emplace(name, io::TensorData::from_matrix(*m));
  for (const auto& [name, v] : pt.biases) t.emplace(name, io::TensorData::from_vector(*v));
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  io::write_safetensors(path, t, {{"format", "pt"}});
}
template <class P>
void load_projector(const std::filesystem::path& path, P& projector) {
  const auto f = io::SafetensorsFile::open(path);
  const ProjectorTensors pt = projector_tensors(projector);
  for (const auto& [name, m] : pt.weights) {
    const Matrix x = f.matrix(name);
    require(x.rows() == m->rows() && x.cols() == m->cols(), "load_projector {}: {} is {}, expected {}", path.string(),
            name, shape_string(x), shape_string(*m));
    *m = x;
  }
  for (const auto& name : pt.absent_biases)
    require(!f.contains(name),
            "load_projector {}: the file has {} but the projector has no bias "
            "(multimodal_projector_bias: false)",
            path.string(), name);
  for (const auto& [name, v] : pt.biases) {
    const Vector x = f.vector(name);
    require(x.size() == v->size(), "load_projector {}: {} has {} values, expected {}", path.string(), name, x.size(),
            v->size());
    *v = x;
  }
}

}  // namespace vidlora::train
