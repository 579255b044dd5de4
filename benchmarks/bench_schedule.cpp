// Cost of Scheduler<Policy>::lr per call, one row per policy from a type list.
//   bench_schedule --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <vidlora/schedule.hpp>

#include <string>

namespace {

using namespace vidlora;

template <class... Ts>
struct TypeList {};

template <class Policy>
void BM_SchedulerLr(benchmark::State& state) {
  ScheduleOptions o{};
  o.base_lr = 2e-4;
  o.total_steps = 100000;
  o.warmup_steps = 3000;
  o.num_cycles = std::is_same_v<Policy, CosineRestarts> ? std::optional<double>(4.0) : std::nullopt;
  o.t0 = 1000;
  o.t_mult = 2;
  const Scheduler<Policy> s(o);
  long step = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(s.lr(step));
    step = step == 120000 ? 0 : step + 1;
  }
  state.SetItemsProcessed(state.iterations());
}

template <class... Policies>
void register_all(TypeList<Policies...>) {
  (benchmark::RegisterBenchmark((std::string("BM_SchedulerLr<") + std::string(Policies::name) + ">").c_str(),
                                BM_SchedulerLr<Policies>),
   ...);
}

const int registered = (register_all(TypeList<Constant, Linear, Cosine, CosineRestarts, WarmRestarts>{}), 0);

}  // namespace
