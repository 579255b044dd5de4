# cmake -DPTX=FILE -P check_rounding.cmake: FILE (adamw_update_ptx.cu's PTX) holds the kernel, no fma.*.f32 and no
# float mul / add / sub without a rounding modifier.
file(READ "${PTX}" ptx)
foreach(want "adamw_update_ptx_kernel" "mul.rn.f32" "add.rn.f32" "sqrt.rn.f32" "div.rn.f32")
  string(FIND "${ptx}" "${want}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "${PTX}: no ${want}: is this the AdamW kernel's PTX?")
  endif()
endforeach()
string(REGEX MATCHALL "fma\\.[a-z]+\\.f32|(mul|add|sub)\\.f32" contracted "${ptx}")
if(contracted)
  list(REMOVE_DUPLICATES contracted)
  message(FATAL_ERROR "${PTX}: AdamW's update has contractible float arithmetic under nvcc's default flags: "
                      "${contracted} (spell it with core/rounding.hpp's mul_rn / add_rn)")
endif()
message(STATUS "${PTX}: every product and sum correctly rounded, no fused multiply-add")
