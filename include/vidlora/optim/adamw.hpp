#pragma once
// AdamW as torch.optim.AdamW computes it (single-tensor path, amsgrad=False, maximize=False).

#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <vidlora/core/error.hpp>
#include <vidlora/core/matrix.hpp>
#include <vidlora/optim/adamw_update.hpp>
#include <vidlora/optim/detail.hpp>
#include <vidlora/optim/parameter.hpp>

namespace vidlora::optim {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // only for the one-group constructor; groups carry their own
};

// Per-parameter optimizer state, plain so checkpoints can save and restore it.
struct AdamWState {
  Matrix exp_avg;     // m, value's shape
  Matrix exp_avg_sq;  // v, value's shape
  long step = 0;      // Adam steps this parameter has taken (bias corrections use it)
};

class AdamW {
 public:
  explicit AdamW(std::vector<ParamGroup> groups, AdamWOptions options = {})
      : groups_(std::move(groups)), options_(options) {
    require(options_.beta1 >= 0.0 && options_.beta1 < 1.0, "AdamW: beta1 must be in [0, 1) (got {})", options_.beta1);
    require(options_.beta2 >= 0.0 && options_.beta2 < 1.0, "AdamW: beta2 must be in [0, 1) (got {})", options_.beta2);
    require(std::isfinite(options_.eps) && options_.eps >= 0.0, "AdamW: eps must be finite and >= 0 (got {})",
            options_.eps);
    for (const ParamGroup& g : groups_) {
      require(std::isfinite(g.weight_decay) && g.weight_decay >= 0.0,
              "AdamW: weight_decay of group '{}' must be finite and >= 0 (got {})", g.name, g.weight_decay);
      require(std::isfinite(g.lr_scale) && g.lr_scale >= 0.0,
              "AdamW: lr_scale of group '{}' must be finite and >= 0 (got {})", g.name, g.lr_scale);
      for (const Parameter& p : g.params) {
        require(!p.name.empty(), "AdamW: a parameter of group '{}' has no name", g.name);
        require(p.value != nullptr && p.grad != nullptr, "AdamW: parameter '{}' has no {} matrix", p.name,
                p.value == nullptr ? "value" : "grad");
        require(p.value->size() > 0, "AdamW: parameter '{}' is empty {}", p.name, shape_string(*p.value));
        const auto [it, inserted] = index_.emplace(p.name, states_.size());
        require(inserted, "AdamW: parameter '{}' is registered twice", p.name);
        states_.push_back(AdamWState{Matrix::Zero(p.value->rows(), p.value->cols()),
                                     Matrix::Zero(p.value->rows(), p.value->cols()), 0});
      }
    }
  }

  // One group holding every parameter, with options.weight_decay.
  explicit AdamW(std::vector<Parameter> params, AdamWOptions options = {})
      : AdamW(std::vector<ParamGroup>{ParamGroup{std::move(params), options.weight_decay, 1.0, "all"}}, options) {}

  // One optimizer step with the scheduled learning rate `lr` (group lr = lr · lr_scale). Refuses to
  // step (throws vidlora::Error naming the parameter and element, and changes nothing) when any
  // gradient holds NaN or Inf or has the wrong shape.
  void step(double lr) {
    require(std::isfinite(lr) && lr >= 0.0, "AdamW: learning rate must be finite and >= 0 (got {})", lr);
    for (const ParamGroup& g : groups_) {
      for (const Parameter& p : g.params) {
        require(p.grad->rows() == p.value->rows() && p.grad->cols() == p.value->cols(),
                "AdamW: gradient of '{}' is {} but the parameter is {}", p.name, shape_string(*p.grad),
                shape_string(*p.value));
        if (const auto bad = detail::first_nonfinite(*p.grad))
          fail("AdamW: gradient of '{}' {} has {}; refusing to step", p.name, shape_string(*p.grad),
               detail::describe_element(*p.grad, *bad));
      }
    }
    std::size_t k = 0;
    for (const ParamGroup& g : groups_) {
      for (const Parameter& p : g.params) {
        AdamWState& s = states_[k++];
        s.step += 1;
        const AdamWStepParams params = AdamWStepParams::make(lr * g.lr_scale, g.weight_decay, options_.beta1,
                                                             options_.beta2, options_.eps, s.step);
        adamw_update_range(p.value->data(), p.grad->data(), s.exp_avg.data(), s.exp_avg_sq.data(), p.value->size(),
                           params);
      }
    }
    ++steps_;
  }

  // Sets every gradient to zero (keeps the matrices; torch would free them).
  void zero_grad() {
    for (ParamGroup& g : groups_)
      for (Parameter& p : g.params) p.grad->setZero();
  }

  const std::vector<ParamGroup>& groups() const { return groups_; }
  std::vector<ParamGroup>& groups() { return groups_; }  // e.g. to change a group's lr_scale or weight_decay
  const AdamWOptions& options() const { return options_; }
  long steps_taken() const { return steps_; }  // successful step() calls since construction

  std::vector<std::string> parameter_names() const {
    std::vector<std::string> names;
    for (const ParamGroup& g : groups_)
      for (const Parameter& p : g.params) names.push_back(p.name);
    return names;
  }
  const AdamWState& state(std::string_view name) const { return states_[lookup(name)]; }

  // Restores a parameter's state from a checkpoint; shapes must match the parameter.
  void restore_state(std::string_view name, AdamWState state) {
    const std::size_t k = lookup(name);
    const Matrix& like = states_[k].exp_avg;
    require(state.exp_avg.rows() == like.rows() && state.exp_avg.cols() == like.cols() &&
                state.exp_avg_sq.rows() == like.rows() && state.exp_avg_sq.cols() == like.cols(),
            "AdamW: state for '{}' has exp_avg {} and exp_avg_sq {} but the parameter is {}", name,
            shape_string(state.exp_avg), shape_string(state.exp_avg_sq), shape_string(like));
    require(state.step >= 0, "AdamW: state for '{}' has step {} (must be >= 0)", name, state.step);
    require(all_finite(state.exp_avg) && all_finite(state.exp_avg_sq) && state.exp_avg_sq.minCoeff() >= 0.0f,
            "AdamW: state for '{}' has NaN/Inf or negative second moments", name);
    states_[k] = std::move(state);
  }
  void set_steps_taken(long steps) {
    require(steps >= 0, "AdamW: steps_taken must be >= 0 (got {})", steps);
    steps_ = steps;
  }

 private:
  std::size_t lookup(std::string_view name) const {
    const auto it = index_.find(std::string(name));
    if (it == index_.end()) fail("AdamW: no parameter named '{}'", name);
    return it->second;
  }

  std::vector<ParamGroup> groups_;
  AdamWOptions options_;
  std::vector<AdamWState> states_;  // one per parameter, in group order
  std::unordered_map<std::string, std::size_t> index_;
  long steps_ = 0;
};

}  // namespace vidlora::optim

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using optim::AdamW;
using optim::AdamWOptions;
}  // namespace vidlora
