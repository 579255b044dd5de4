#pragma once
// vidlora optim: AdamW (torch.optim.AdamW's arithmetic) with parameter groups, clip_grad_norm, dynamic loss
// scaling (torch.amp.GradScaler).

#include <vidlora/optim/parameter.hpp>
#include <vidlora/optim/param_groups.hpp>
#include <vidlora/optim/adamw_update.hpp>
#include <vidlora/optim/adamw.hpp>
#include <vidlora/optim/clip.hpp>
#include <vidlora/optim/device_parameter.hpp>
#include <vidlora/optim/grad_unscale.hpp>
#include <vidlora/optim/grad_scaler.hpp>
