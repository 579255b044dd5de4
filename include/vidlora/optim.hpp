#pragma once
// vidlora optim: AdamW (torch.optim.AdamW's arithmetic) with parameter groups, clip_grad_norm.

#include <vidlora/optim/parameter.hpp>
#include <vidlora/optim/param_groups.hpp>
#include <vidlora/optim/adamw_update.hpp>
#include <vidlora/optim/adamw.hpp>
#include <vidlora/optim/clip.hpp>

namespace vidlora {
using optim::AdamW;
using optim::AdamWOptions;
using optim::AdamWState;
using optim::AdamWStepParams;
using optim::adamw_update;
using optim::clip_grad_norm;
using optim::ClipOptions;
using optim::decays_in_transformers;
using optim::decays_lora_b_only;
using optim::lora_b_only_groups;
using optim::Parameter;
using optim::ParamGroup;
using optim::transformers_groups;
}  // namespace vidlora
