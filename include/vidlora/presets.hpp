#pragma once
// vidlora presets: per-GPU configurations (T4, L4, A100, H100, Cpu), the two recipe stages, the constexpr
// memory estimate, the device-memory cap and build-time selection (vidlora::ActivePreset).

#include <vidlora/presets/model_shape.hpp>
#include <vidlora/presets/stage_config.hpp>
#include <vidlora/presets/gpu_presets.hpp>
#include <vidlora/presets/memory_estimate.hpp>
#include <vidlora/presets/memory_cap.hpp>
#include <vidlora/presets/active_preset.hpp>
