#pragma once
// The one list of preset names. Everything that enumerates presets reads it:
//   C++   presets::AllPresets (the run-time name -> type table) and presets::kPresetNames
//   CMake cmake/VidloraPreset.cmake reads the VIDLORA_PRESETS line below (known names, -DVIDLORA_PRESET values)
//   docs  tests/presets/test_preset_list.cpp checks that docs/presets.md and CMakePresets.json name exactly these
// Adding a preset: define its type in presets/gpu_presets.hpp, then add X(<name>) here (one line, nothing else).
// Keep the list on the one #define line: CMake parses it with a regular expression.

// X(name) for every preset, in table order.
#define VIDLORA_PRESETS(X) X(Cpu) X(T4) X(L4) X(A100) X(H100)
