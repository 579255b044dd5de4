#pragma once
// What a run returns (TrainResult: status, losses, skipped clips, evaluations, the best one) and what one
// evaluation found (EvalResult), with EvalResult's JSON form: the best evaluation in a checkpoint's metadata, and
// rank 0's evaluation broadcast to the other ranks.

#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <vidlora/eval/caption_metrics.hpp>
#include <vidlora/eval/caption_metrics_json.hpp>
#include <vidlora/train/training_log.hpp>

namespace vidlora::train {

enum class TrainStatus { Finished, EarlyStopped, Interrupted, NanStopped };
inline std::string_view to_string(TrainStatus s) {
  switch (s) {
    case TrainStatus::Finished: return "finished";
    case TrainStatus::EarlyStopped: return "early-stopped";
    case TrainStatus::Interrupted: return "interrupted";
    case TrainStatus::NanStopped: return "stopped after repeated NaN losses";
  }
  return "?";
}

struct EvalResult {
  int stage = 0, epoch = 0;
  long step = 0;
  double eval_loss = 0.0;
  eval::CaptionMetrics metrics{};
  std::vector<std::string> captions;  // one per val clip (skipped clips excluded)
  std::vector<std::size_t> clip_index;
  bool collapsed = false;
};

struct TrainResult {
  TrainStatus status = TrainStatus::Finished;
  long steps = 0;              // global optimizer steps done (restored ones included)
  std::vector<double> losses;  // step losses of this process (NaN for skipped steps: a NaN/Inf loss, or no clip)
  long skipped_nan_steps = 0;
  long skipped_empty_steps = 0;     // steps none of whose clips had features (each one skipped): no loss, no update
  long skipped_overflow_steps = 0;  // loss scaling: steps whose scaled gradients overflowed (skipped, scale halved)
  std::vector<std::string> skipped_clips;  // clips whose features failed ("id: reason")
  std::vector<EvalResult> evals;
  std::optional<EvalResult> best;
};

// An evaluation as JSON. Non-finite numbers are written as null (JSON has no NaN, as in the training log) and
// read back as NaN.
inline nlohmann::json eval_result_to_json(const EvalResult& ev) {
  nlohmann::json j = eval::caption_metrics_to_json(ev.metrics);
  j["stage"] = ev.stage;
  j["epoch"] = ev.epoch;
  j["step"] = ev.step;
  j["eval_loss"] = detail::finite_or_null(ev.eval_loss);
  j["captions"] = ev.captions;
  j["clip_index"] = ev.clip_index;
  j["collapsed"] = ev.collapsed;
  return j;
}

inline EvalResult eval_result_from_json(const nlohmann::json& j) {
  EvalResult ev;
  ev.stage = j.at("stage").get<int>();
  ev.epoch = j.at("epoch").get<int>();
  ev.step = j.at("step").get<long>();
  ev.eval_loss =
      j.at("eval_loss").is_null() ? std::numeric_limits<double>::quiet_NaN() : j.at("eval_loss").get<double>();
  ev.metrics = eval::caption_metrics_from_json(j);
  ev.captions = j.at("captions").get<std::vector<std::string>>();
  ev.clip_index = j.at("clip_index").get<std::vector<std::size_t>>();
  ev.collapsed = j.at("collapsed").get<bool>();
  return ev;
}

}  // namespace vidlora::train

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using train::TrainResult;
}  // namespace vidlora
