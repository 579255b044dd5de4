#pragma once
// vidlora lora: LoraLinear over a frozen base policy, its dropout, the recipe's rank/alpha/dropout
// rules and target-module sets.

#include <vidlora/core.hpp>
#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/lora/dropout.hpp>
#include <vidlora/lora/lora_linear.hpp>
#include <vidlora/lora/qlora.hpp>
#include <vidlora/lora/rules.hpp>
#include <vidlora/lora/target_modules.hpp>
#include <vidlora/lora/peft_targets.hpp>
#include <vidlora/lora/rank_dispatch.hpp>
#include <vidlora/lora/peft_adapter.hpp>
