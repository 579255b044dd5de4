#pragma once
// The one-line terminal progress report of a training run, as a pure function of the run's state:
//   stage 2/2 | epoch 3/5 | step 120/400  30% | loss 2.3456 | lr 1.00e-04 | 1.2k tok/s | ETA 4m05s
// and on a device, its name, the step's memory and MFU:
//   ... | ETA 4m05s | Cuda | mem 3.21 GiB (peak 3.90 GiB, cap 14.00 GiB) | MFU 41.3%
// The ETA extrapolates from the steps taken by this process (a resumed run does not count the steps
// it restored) and reads "--" until one step is done.

#include <cmath>
#include <string>

#include <fmt/format.h>

namespace vidlora::train {

struct ProgressState {
  int stage = 1;
  int stages = 2;
  int epoch = 1;  // 1-based within the stage
  int epochs = 1;
  long step = 0;            // optimizer steps done (global, restored ones included)
  long total_steps = 0;     // steps of the whole run (all stages)
  long steps_this_run = 0;  // steps done by this process
  double elapsed_s = 0.0;   // wall time of this process's steps
  double loss = 0.0;        // running loss to show
  double lr = 0.0;
  double tokens_per_s = 0.0;
  std::string backend{};  // shown when set ("Cuda": the decoder's step runs on the device)
  std::string memory{};   // shown when set (memory_progress_text of the step's device memory)
  double mfu = 0.0;       // shown when > 0 (train::lora_mfu: a share of the GPU's dense 16-bit peak)
};

// "45s", "4m05s", "2h03m"; "--" for a negative or non-finite duration.
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  const long s = std::lround(seconds);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
}

// "950", "1.2k", "34.5k", "1.2M" (three significant digits at most).
inline std::string format_count(double v) {
  if (!std::isfinite(v)) return "--";
  const double a = std::abs(v);
  if (a < 1e3) return fmt::format("{:.0f}", v);
  if (a < 1e6) return a < 1e4 ? fmt::format("{:.1f}k", v / 1e3) : fmt::format("{:.0f}k", v / 1e3);
  return a < 1e7 ? fmt::format("{:.1f}M", v / 1e6) : fmt::format("{:.0f}M", v / 1e6);
}

// Seconds left: this run's mean step time times the steps remaining; NaN before the first step.
inline double eta_seconds(const ProgressState& s) {
  if (s.steps_this_run <= 0 || s.total_steps <= 0) return std::nan("");
  const long left = s.total_steps > s.step ? s.total_steps - s.step : 0;
  return s.elapsed_s / static_cast<double>(s.steps_this_run) * static_cast<double>(left);
}

inline std::string format_progress(const ProgressState& s) {
  const int percent = s.total_steps > 0 ? static_cast<int>(100 * s.step / s.total_steps) : 0;
  const std::string loss = std::isfinite(s.loss) ? fmt::format("{:.4f}", s.loss) : fmt::format("{}", s.loss);
  return fmt::format("stage {}/{} | epoch {}/{} | step {}/{} {:3}% | loss {} | lr {:.2e} | {} tok/s | ETA {}", s.stage,
                     s.stages, s.epoch, s.epochs, s.step, s.total_steps, percent, loss, s.lr,
                     format_count(s.tokens_per_s), format_duration(eta_seconds(s))) +
         (s.backend.empty() ? std::string() : " | " + s.backend) +
         (s.memory.empty() ? std::string() : " | " + s.memory) +
         (s.mfu > 0.0 ? fmt::format(" | MFU {:.1f}%", 100.0 * s.mfu) : std::string());
}

}  // namespace vidlora::train
