#pragma once
// vidlora quant: NF4 / FP4 blockwise quantization (bit-exact with bitsandbytes), double
// quantization, and the 4-bit frozen base weights of LoraLinear (NF4Weight for QLoRA).

#include <vidlora/quant/format.hpp>
#include <vidlora/quant/dynamic_map.hpp>
#include <vidlora/quant/quantizer.hpp>
#include <vidlora/quant/quantized_weight.hpp>
