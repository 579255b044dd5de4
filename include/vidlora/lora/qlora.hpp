#pragma once
// QLoRA: LoraLinear over a 4-bit frozen base (QLoRA's NF4 with double-quantized absmax, as bitsandbytes
// stores it), the layer the recipe's load_in_4bit presets train. lora builds on quant here; quant does
// not include lora.

#include <vidlora/lora/frozen_weight.hpp>
#include <vidlora/lora/lora_linear.hpp>
#include <vidlora/quant/quantized_weight.hpp>

namespace vidlora::lora {

static_assert(FrozenWeight<quant::NF4Weight>, "quant::NF4Weight must model lora::FrozenWeight");
static_assert(FrozenWeight<quant::FP4Weight>, "quant::FP4Weight must model lora::FrozenWeight");

// LoraLinear<Rank, Alpha> whose frozen W is NF4 (dequantized on the fly in forward and backward).
template <int Rank, int Alpha>
using QLoraLinear = LoraLinear<Rank, Alpha, quant::NF4Weight>;

}  // namespace vidlora::lora

namespace vidlora {  // the recipe's vocabulary (docs/architecture.md, "Namespaces")
using lora::QLoraLinear;
}  // namespace vidlora
