#pragma once
// LossScaling: how the Trainer drives optim::GradScaler (TrainerConfig::loss_scaler; on for the fp16 presets), step by
// step, as transformers' Trainer does with accelerate's scaler:
//   grad_factor()              the loss gradient's factor for this step's micro-batches (the scale; 1 when off)
//   unscale_overflowed(groups) after the step's gradients are summed (over ranks too) and before clipping: every
//                              gradient × 1/scale; true when one held Inf/NaN, before or after the multiply (the
//                              optimizer must not step)
//   record_overflow(found)     the same when the device unscaled them (by inv_scale())
//   skip(unscaled)             the step is skipped: after an overflow (unscaled) or a NaN loss (not unscaled: torch's
//                              scaler would find its NaN gradients and back off too); the scale halves
//   stepped()                  the optimizer stepped: the update (growth after growth_interval clean steps); the scale
//                              after it for the step record
//   state() / restore(saved)   the checkpoint's record (torch's state_dict keys; {} when off) and its restore, which
//                              says what it did when the run and the checkpoint disagree about scaling
// A disabled LossScaling (every preset but fp16's, unless asked) is a no-op: factor 1, nothing unscaled, no record.

#include <optional>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <vidlora/optim/grad_scaler.hpp>

namespace vidlora::train {

class LossScaling {
 public:
  explicit LossScaling(optim::GradScalerOptions options = {.enabled = false}) : scaler_(options) {}

  bool enabled() const { return scaler_.enabled(); }
  double grad_factor() const { return scaler_.scale(); }

  template <class Groups>
  bool unscale_overflowed(const Groups& groups) {
    if (!scaler_.enabled()) return false;
    if (scaler_.unscale(groups)) return true;
    if (scaler_.scale() >= 1.0f) return false;  // 1/scale <= 1: the multiply cannot take a finite value past FLT_MAX
    // torch's check looks before the multiply: below a scale of 1 the multiply can take a finite gradient past
    // FLT_MAX. The device path finds that in its clip norm and skips the step as an overflow; so does this one
    // (else AdamW would refuse the Inf and stop the run).
    bool finite = true;
    optim::for_each_parameter(groups, [&](const auto& p) { finite = finite && p.grad->allFinite(); });
    if (finite) return false;
    scaler_.found_inf_after_unscale();
    return true;
  }
  // The device unscaled the gradients by inv_scale() (optim::cuda::DeviceAdamW::unscale_overflowed) and found
  // `found_inf`: recorded as unscale_overflowed would; returns it.
  float inv_scale() const { return scaler_.inv_scale(); }
  bool record_overflow(bool found_inf) {
    if (!scaler_.enabled()) return false;
    scaler_.record_unscaled(found_inf);
    return found_inf;
  }
  optim::GradScalerUpdate skip(bool unscaled) {
    if (!scaler_.enabled()) return {true, 1.0f, 1.0f, 0};
    if (!unscaled) scaler_.record_unscaled(true);
    optim::GradScalerUpdate u = scaler_.update();
    u.skipped = true;
    return u;
  }
  std::optional<double> stepped() {
    if (!scaler_.enabled()) return std::nullopt;
    return static_cast<double>(scaler_.update().scale_after);
  }

  nlohmann::json state() const { return scaler_.state_dict(); }
  // Returns what to say about the restore ("" when the checkpoint and the run agree).
  std::string restore(const nlohmann::json& saved) {
    const bool has = saved.is_object() && !saved.empty();
    if (scaler_.enabled() && has) {
      scaler_.load_state_dict(saved);
      return {};
    }
    if (scaler_.enabled())
      return fmt::format(
          "the checkpoint holds no loss-scaler state (a run without loss scaling): starting at scale {:g}",
          scaler_.scale());
    if (has)
      return fmt::format("the checkpoint's loss scale ({}) is not used: this run does not scale its loss",
                         saved.value("scale", 0.0));
    return {};
  }

 private:
  optim::GradScaler scaler_;
};

}  // namespace vidlora::train
