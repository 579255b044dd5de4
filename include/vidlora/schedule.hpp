#pragma once
// vidlora schedule: learning-rate policies (Constant, Linear, Cosine, CosineRestarts, WarmRestarts),
// Scheduler<Policy>, warmup_steps_for and the linear scaling rule.

#include <vidlora/schedule/options.hpp>
#include <vidlora/schedule/lr_policy.hpp>
#include <vidlora/schedule/policies.hpp>
#include <vidlora/schedule/scheduler.hpp>
#include <vidlora/schedule/rules.hpp>
