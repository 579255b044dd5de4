#pragma once
// Trainable parameters as the optimizer sees them: named references to a value and its gradient.

#include <string>
#include <vector>

#include <vidlora/core/matrix.hpp>

namespace vidlora::optim {

// A trainable tensor. The optimizer never owns it: `value` and `grad` point at matrices owned by the
// model (e.g. LoraLinear::lora_A() / grad_A()) and must outlive the optimizer. grad has value's shape.
struct Parameter {
  std::string name;         // dotted module path, e.g. "layers.0.self_attn.q_proj.lora_B.weight"
  Matrix* value = nullptr;  // updated in place by AdamW
  Matrix* grad = nullptr;   // read by AdamW, scaled in place by clip_grad_norm
};

// Parameters sharing one weight decay and one learning-rate multiplier (a torch param_group).
struct ParamGroup {
  std::vector<Parameter> params;
  double weight_decay = 0.0;  // decoupled: value *= 1 - lr · weight_decay before the Adam step
  double lr_scale = 1.0;      // this group's lr = scheduled lr · lr_scale
  std::string name;           // for messages and logs ("decay", "no_decay", ...)
};

}  // namespace vidlora::optim
