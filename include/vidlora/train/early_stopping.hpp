#pragma once
// Early stopping counted as transformers' EarlyStoppingCallback with Trainer's best-metric bookkeeping:
// at each evaluation the patience counter resets only when the score beats the best so far by more than
// `threshold`; the best score itself is then updated on any strict improvement (threshold or not).

#include <cmath>
#include <limits>
#include <optional>

#include <vidlora/core/error.hpp>

namespace vidlora::train {

enum class Mode { Min, Max };  // Min: lower is better (eval loss); Max: higher is better (CIDEr-D, METEOR)

struct EarlyStoppingOptions {
  int patience = 5;        // evaluations without a sufficient improvement before stopping
  double threshold = 0.0;  // absolute improvement the counter needs to reset
  Mode mode = Mode::Min;
};

class EarlyStopping {
 public:
  explicit EarlyStopping(EarlyStoppingOptions options = {}) : options_(options) {
    require(options_.patience >= 1, "EarlyStopping: patience must be >= 1, got {}", options_.patience);
    require(options_.threshold >= 0.0 && std::isfinite(options_.threshold),
            "EarlyStopping: threshold must be finite and >= 0, got {}", options_.threshold);
  }

  // Records one evaluation's score (taken at `step`); returns true when training should stop.
  bool operator()(double score, long step = -1) {
    ++evaluations_;
    if (!best_ || (better(score, *best_) && std::abs(score - *best_) > options_.threshold)) {
      counter_ = 0;
    } else {
      ++counter_;
    }
    if (!best_ || better(score, *best_)) {
      best_ = score;
      best_step_ = step;
      best_evaluation_ = evaluations_ - 1;
      improved_ = true;
    } else {
      improved_ = false;
    }
    return should_stop();
  }

  bool should_stop() const { return counter_ >= options_.patience; }
  // True when the last score became the best one (the checkpoint to keep).
  bool last_was_best() const { return improved_; }
  int patience_counter() const { return counter_; }
  std::optional<double> best_score() const { return best_; }
  long best_step() const { return best_step_; }
  long best_evaluation() const { return best_evaluation_; }  // 0-based index of the best evaluation
  long evaluations() const { return evaluations_; }
  const EarlyStoppingOptions& options() const { return options_; }

  // Restores the bookkeeping from a checkpoint.
  void restore(std::optional<double> best, long best_step, long best_evaluation, int counter, long evaluations) {
    best_ = best;
    best_step_ = best_step;
    best_evaluation_ = best_evaluation;
    counter_ = counter;
    evaluations_ = evaluations;
  }

 private:
  // NaN is never better: as NumPy's less/greater comparisons, so a NaN evaluation counts against patience.
  bool better(double a, double b) const { return options_.mode == Mode::Min ? a < b : a > b; }

  EarlyStoppingOptions options_;
  std::optional<double> best_;
  long best_step_ = -1;
  long best_evaluation_ = -1;
  long evaluations_ = 0;
  int counter_ = 0;
  bool improved_ = false;
};

}  // namespace vidlora::train

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using train::EarlyStopping;
using train::EarlyStoppingOptions;
}  // namespace vidlora
