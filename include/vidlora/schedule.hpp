#pragma once
// vidlora schedule: learning-rate policies (Constant, Linear, Cosine, CosineRestarts, WarmRestarts),
// Scheduler<Policy>, warmup_steps_for and the linear scaling rule.

#include <vidlora/schedule/options.hpp>
#include <vidlora/schedule/lr_policy.hpp>
#include <vidlora/schedule/policies.hpp>
#include <vidlora/schedule/scheduler.hpp>
#include <vidlora/schedule/rules.hpp>

namespace vidlora {
using schedule::adjusted_lr;
using schedule::Constant;
using schedule::ConstantWithWarmup;
using schedule::Cosine;
using schedule::CosineRestarts;
using schedule::Linear;
using schedule::LrPolicy;
using schedule::ScheduleOptions;
using schedule::Scheduler;
using schedule::visit_lr_policy;
using schedule::warmup_steps_for;
using schedule::WarmRestarts;
}  // namespace vidlora
