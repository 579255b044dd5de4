#pragma once
// ScheduleOptions: everything a learning-rate schedule is built from (an aggregate; every field defaulted).

#include <optional>

namespace vidlora::schedule {

struct ScheduleOptions {
  double base_lr = 1e-4;  // peak learning rate, reached at the end of warmup
  long warmup_steps = 0;  // linear warmup 0 -> base_lr over steps [0, warmup_steps)
  long total_steps = 0;   // optimizer steps in training; must be set (> 0)
  // Cosine family: number of half-waves (Cosine, default 0.5) or hard restarts (CosineRestarts,
  // default 1). Empty = the policy's default, as transformers' get_*_schedule_with_warmup.
  std::optional<double> num_cycles{};
  long t0 = 1;           // WarmRestarts: steps in the first SGDR cycle (PyTorch T_0)
  long t_mult = 1;       // WarmRestarts: each cycle is t_mult times longer (PyTorch T_mult)
  double eta_min = 0.0;  // WarmRestarts: learning rate at the bottom of each cycle
};

}  // namespace vidlora::schedule

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using schedule::ScheduleOptions;
}  // namespace vidlora
