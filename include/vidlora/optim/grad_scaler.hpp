#pragma once
// Dynamic loss scaling for fp16 training, as torch.amp.GradScaler does it: a host-side state machine that a
// CPU or a GPU trainer drives once per optimizer step.
//
//   loss_for_backward = scaler.scale_loss(loss)     // loss × scale (initially 2^16)
//   backward → gradients carry the scale
//   found_inf = scaler.unscale(params)              // CPU: grads ×= 1/scale; or a device kernel
//                                                   //  (optim/cuda/grad_unscale.cuh) + record_unscaled(found)
//   if (scaler.should_step()) { clip_grad_norm(...); optimizer.step(lr); }   // clip after unscale
//   scaler.update();                                // inf/NaN: scale ×= backoff (0.5), tracker = 0, skipped;
//                                                   // else tracker+1, and at growth_interval (2000):
//                                                   // scale ×= growth (2) unless that overflows, tracker = 0
//
// Arithmetic as torch's _amp_update_scale_: the scale is a float32, the new scale is float(double(scale) ×
// factor), a growth that would give Inf leaves the scale as it is (the tracker still resets), and there is
// no lower bound. Order rules as torch's: unscale once per step, update only after an unscale (or a
// recorded device check). A disabled scaler (fp32 / bf16 presets) scales by 1, unscales nothing, never
// skips. tests/optim/test_grad_scaler.cpp replays torch's trajectories (tools/reference/grad_scaler.py).

#include <charconv>
#include <cmath>
#include <cstdint>
#include <ranges>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include <vidlora/core/error_type.hpp>
#include <vidlora/optim/grad_unscale.hpp>

namespace vidlora::optim {

struct GradScalerOptions {
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;   // > 1
  double backoff_factor = 0.5;  // in (0, 1)
  long growth_interval = 2000;  // consecutive clean steps before a growth, >= 1
  bool enabled = true;
};

// The checkpoint record: the fields and key names of torch's GradScaler.state_dict(), so a state saved by
// either side reads on the other ({"scale", "growth_factor", "backoff_factor", "growth_interval",
// "_growth_tracker"}; a disabled scaler's record is the empty object, as torch's).
struct GradScalerRecord {
  float scale = 65536.0f;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  long growth_interval = 2000;
  long growth_tracker = 0;  // consecutive clean steps since the last growth or backoff
};

// What one update() did: the JSONL log's per-step loss-scale fields.
struct GradScalerUpdate {
  bool skipped = false;  // the step found Inf/NaN: the optimizer must not have stepped
  float scale_before = 1.0f;
  float scale_after = 1.0f;
  long growth_tracker = 0;  // after the update
};

namespace detail {
inline std::string number(double v) {
  char buf[32];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}
[[noreturn]] inline void scaler_fail(const std::string& what) { throw Error("GradScaler: " + what); }
}  // namespace detail

// f(parameter) for every parameter of `params`: a range of optim::Parameter, or of optim::ParamGroup (each group's).
template <std::ranges::input_range Params, class F>
void for_each_parameter(const Params& params, F&& f) {
  for (const auto& item : params) {
    if constexpr (requires { item.params; }) {
      for (const auto& p : item.params) f(p);
    } else {
      f(item);
    }
  }
}

class GradScaler {
 public:
  explicit GradScaler(GradScalerOptions options = {}) : enabled_(options.enabled) {
    if (!enabled_) return;
    if (!(std::isfinite(options.init_scale) && options.init_scale > 0.0))
      detail::scaler_fail("init_scale must be finite and > 0 (got " + detail::number(options.init_scale) + ")");
    check_factors(options.growth_factor, options.backoff_factor, options.growth_interval);
    const auto scale = static_cast<float>(options.init_scale);
    if (!std::isfinite(scale))
      detail::scaler_fail("init_scale " + detail::number(options.init_scale) + " overflows float32");
    r_ = {scale, options.growth_factor, options.backoff_factor, options.growth_interval, 0};
  }

  // Loss scaling for a precision name ("fp16", "bf16", "fp32"): enabled only for fp16 (bf16 has fp32's range).
  static GradScalerOptions options_for_precision(std::string_view precision, GradScalerOptions base = {}) {
    if (precision != "fp16" && precision != "bf16" && precision != "fp32")
      detail::scaler_fail("unknown precision '" + std::string(precision) + "' (fp16, bf16 or fp32)");
    base.enabled = precision == "fp16";
    return base;
  }

  bool enabled() const { return enabled_; }
  float scale() const { return enabled_ ? r_.scale : 1.0f; }
  float inv_scale() const { return enabled_ ? reciprocal_scale(r_.scale) : 1.0f; }
  long growth_tracker() const { return enabled_ ? r_.growth_tracker : 0; }
  double growth_factor() const { return r_.growth_factor; }
  double backoff_factor() const { return r_.backoff_factor; }
  long growth_interval() const { return r_.growth_interval; }

  // The loss the backward pass starts from: loss × scale, in float32 as torch multiplies a float32 loss.
  float scale_loss(float loss) const { return enabled_ ? loss * r_.scale : loss; }

  // CPU: every gradient × 1/scale in place; returns whether any was Inf/NaN (before unscaling). Once per
  // step. `params`: a range of optim::Parameter, or of optim::ParamGroup (e.g. AdamW::groups()). A disabled
  // scaler touches nothing and reports false. (A template, so this header needs neither Eigen nor fmt and
  // nvcc translation units can hold a GradScaler.)
  template <std::ranges::input_range Params>
  bool unscale(const Params& params) {
    if (!enabled_) return false;
    begin_unscale();
    bool found = false;
    const float inv = inv_scale();
    for_each_parameter(params, [&](const auto& p) {
      if (p.grad == nullptr) detail::scaler_fail("parameter '" + p.name + "' has no grad matrix");
      found |= unscale_range(p.grad->data(), static_cast<std::size_t>(p.grad->size()), inv);
    });
    found_inf_ = found;
    return found;
  }

  // Another backend unscaled the gradients (optim::cuda::unscale_and_check with inv_scale()) and read
  // found_inf back: record it, as unscale() would. Once per step.
  void record_unscaled(bool found_inf) {
    if (!enabled_) return;
    begin_unscale();
    found_inf_ = found_inf;
  }

  // The caller found Inf/NaN in gradients this step's unscale() passed as finite: torch's check looks before the
  // multiply, so with a scale below 1 a finite scaled gradient the multiply takes past FLT_MAX is not reported. torch
  // would step on it (clip_grad_norm_ makes it NaN); calling this makes the step skip and the scale back off, as an
  // overflow (train::LossScaling does, as the device path's non-finite clip norm does). Needs this step's unscale.
  void found_inf_after_unscale() {
    if (!enabled_) return;
    if (!unscaled_) detail::scaler_fail("found_inf_after_unscale() before unscale()");
    found_inf_ = true;
  }

  // Whether the optimizer may step (no Inf/NaN this step). Needs this step's unscale.
  bool should_step() const {
    if (!enabled_) return true;
    if (!unscaled_) detail::scaler_fail("should_step() before unscale(): unscale the gradients (and clip them) first");
    return !found_inf_;
  }

  // End of the step: back off (skipped step) or count a clean step and maybe grow.
  GradScalerUpdate update() {
    if (!enabled_) return {false, 1.0f, 1.0f, 0};
    if (!unscaled_)
      detail::scaler_fail("update() without an inf/NaN check this step: call unscale() or record_unscaled() first");
    GradScalerUpdate u{found_inf_, r_.scale, r_.scale, 0};
    if (found_inf_) {
      r_.scale = static_cast<float>(static_cast<double>(r_.scale) * r_.backoff_factor);
      r_.growth_tracker = 0;
    } else if (r_.growth_tracker + 1 == r_.growth_interval) {
      const auto grown = static_cast<float>(static_cast<double>(r_.scale) * r_.growth_factor);
      if (std::isfinite(grown)) r_.scale = grown;  // never grow past float32 into Inf
      r_.growth_tracker = 0;
    } else {
      ++r_.growth_tracker;
    }
    u.scale_after = r_.scale;
    u.growth_tracker = r_.growth_tracker;
    unscaled_ = false;
    found_inf_ = false;
    return u;
  }

  // torch's update(new_scale): sets the scale, leaves the tracker, ends the step.
  void update(float new_scale) {
    if (!enabled_) return;
    if (!(std::isfinite(new_scale) && new_scale > 0.0f))
      detail::scaler_fail("update(new_scale): the scale must be finite and > 0 (got " + detail::number(new_scale) +
                          ")");
    r_.scale = new_scale;
    unscaled_ = false;
    found_inf_ = false;
  }

  // Checkpoints: the state between steps.
  GradScalerRecord record() const {
    if (unscaled_) detail::scaler_fail("record() in the middle of a step (after unscale, before update)");
    return r_;
  }
  void restore(const GradScalerRecord& r) {
    if (!enabled_) return;
    check_factors(r.growth_factor, r.backoff_factor, r.growth_interval);
    if (!(std::isfinite(r.scale) && r.scale >= 0.0f))
      detail::scaler_fail("restored scale must be finite and >= 0 (got " + detail::number(r.scale) + ")");
    if (r.growth_tracker < 0 || r.growth_tracker >= r.growth_interval)
      detail::scaler_fail("restored _growth_tracker " + std::to_string(r.growth_tracker) + " is outside [0, " +
                          std::to_string(r.growth_interval) + ")");
    r_ = r;
    unscaled_ = false;
    found_inf_ = false;
  }

  // torch's state_dict() / load_state_dict(): the record as JSON (the empty object when disabled).
  nlohmann::json state_dict() const {
    if (!enabled_) return nlohmann::json::object();
    const auto r = record();
    return {{"scale", static_cast<double>(r.scale)},
            {"growth_factor", r.growth_factor},
            {"backoff_factor", r.backoff_factor},
            {"growth_interval", r.growth_interval},
            {"_growth_tracker", r.growth_tracker}};
  }
  void load_state_dict(const nlohmann::json& j) {
    if (!enabled_) return;
    if (!j.is_object() || j.empty())
      detail::scaler_fail("the loss-scaler state is empty (saved from a run without fp16 loss scaling?)");
    auto field = [&](const char* key) -> const nlohmann::json& {
      const auto it = j.find(key);
      if (it == j.end() || !it->is_number())
        detail::scaler_fail(std::string("the loss-scaler state has no number '") + key + "'");
      return *it;
    };
    GradScalerRecord r;
    r.scale = static_cast<float>(field("scale").get<double>());
    r.growth_factor = field("growth_factor").get<double>();
    r.backoff_factor = field("backoff_factor").get<double>();
    if (!field("growth_interval").is_number_integer() || !field("_growth_tracker").is_number_integer())
      detail::scaler_fail("the loss-scaler state's growth_interval and _growth_tracker must be integers");
    r.growth_interval = field("growth_interval").get<long>();
    r.growth_tracker = field("_growth_tracker").get<long>();
    restore(r);
  }

 private:
  static void check_factors(double growth, double backoff, long interval) {
    if (!(std::isfinite(growth) && growth > 1.0))
      detail::scaler_fail("growth_factor must be finite and > 1 (got " + detail::number(growth) + ")");
    if (!(backoff > 0.0 && backoff < 1.0))
      detail::scaler_fail("backoff_factor must be in (0, 1) (got " + detail::number(backoff) + ")");
    if (interval < 1 || interval > 2147483647L)  // torch's tracker is an int32
      detail::scaler_fail("growth_interval must be in [1, 2^31) (got " + std::to_string(interval) + ")");
  }
  void begin_unscale() {
    if (unscaled_) detail::scaler_fail("the gradients were already unscaled this step (unscale once, then update())");
    unscaled_ = true;
  }

  bool enabled_ = true;
  GradScalerRecord r_{};
  bool unscaled_ = false;  // unscale()/record_unscaled() done, update() not yet
  bool found_inf_ = false;
};

}  // namespace vidlora::optim
