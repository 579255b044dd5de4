# The one table that maps a configure-time preset name to the C++ preset type.
set(VIDLORA_KNOWN_PRESETS Cpu T4 L4 A100 H100)

function(vidlora_validate_preset name)
  if(NOT name IN_LIST VIDLORA_KNOWN_PRESETS)
    string(REPLACE ";" ", " known "${VIDLORA_KNOWN_PRESETS}")
    message(FATAL_ERROR "vidlora: unknown preset VIDLORA_PRESET='${name}'; known presets: ${known}")
  endif()
endfunction()

# Gives `target` the compile definition that selects vidlora::ActivePreset.
function(vidlora_use_preset target name)
  vidlora_validate_preset("${name}")
  target_compile_definitions(${target} PRIVATE VIDLORA_PRESET_${name}=1)
endfunction()
