# Preset names come from the one list in include/vidlora/presets/preset_list.hpp (its VIDLORA_PRESETS line),
# which C++ (presets::AllPresets) and the docs tests read too.
file(STRINGS "${CMAKE_CURRENT_LIST_DIR}/../include/vidlora/presets/preset_list.hpp" _vidlora_preset_line
     REGEX "^#define VIDLORA_PRESETS\\(X\\)")
string(REGEX MATCHALL "X\\([A-Za-z0-9_]+\\)" _vidlora_preset_items "${_vidlora_preset_line}")
set(VIDLORA_KNOWN_PRESETS "")
foreach(_item IN LISTS _vidlora_preset_items)
  string(REGEX REPLACE "^X\\(([A-Za-z0-9_]+)\\)$" "\\1" _name "${_item}")
  list(APPEND VIDLORA_KNOWN_PRESETS "${_name}")
endforeach()
if(NOT VIDLORA_KNOWN_PRESETS)
  message(FATAL_ERROR "vidlora: no preset names found in include/vidlora/presets/preset_list.hpp")
endif()

function(vidlora_validate_preset name)
  if(NOT name IN_LIST VIDLORA_KNOWN_PRESETS)
    string(REPLACE ";" ", " known "${VIDLORA_KNOWN_PRESETS}")
    message(FATAL_ERROR "vidlora: unknown preset VIDLORA_PRESET='${name}'; known presets: ${known}")
  endif()
endfunction()

# Gives `target` the compile definition that selects vidlora::ActivePreset.
function(vidlora_use_preset target name)
  vidlora_validate_preset("${name}")
  target_compile_definitions(${target} PRIVATE VIDLORA_ACTIVE_PRESET=${name})
endfunction()
