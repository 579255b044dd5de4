#pragma once
// vidlora optim: AdamW (torch.optim.AdamW's arithmetic) with parameter groups, clip_grad_norm, dynamic loss
// scaling (torch.amp.GradScaler).

#include <vidlora/optim/parameter.hpp>
#include <vidlora/optim/param_groups.hpp>
#include <vidlora/optim/adamw_update.hpp>
#include <vidlora/optim/adamw.hpp>
#include <vidlora/optim/clip.hpp>
#include <vidlora/optim/grad_unscale.hpp>
#include <vidlora/optim/grad_scaler.hpp>

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
using optim::GradScaler;
using optim::GradScalerOptions;
using optim::GradScalerRecord;
using optim::lora_b_only_groups;
using optim::Parameter;
using optim::ParamGroup;
using optim::transformers_groups;
}  // namespace vidlora
