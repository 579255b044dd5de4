# vidlora_find_cuda_toolkit([args of find_package]): find_package(CUDAToolkit) that also works with CMake 3.25/3.26's
# FindCUDAToolkit (Debian 12 ships 3.25) against CUDA toolkits without libnvToolsExt (12.9+, 13.x).
# Those CMake versions mark the target CUDA::nvToolsExt deprecated without checking that it exists, and fail
# with "set_property could not find TARGET CUDA::nvToolsExt" whenever the project asks for CMake >= 3.25; the
# check reads CMAKE_MINIMUM_REQUIRED_VERSION, so the search runs with it lowered and then restores it.
# A macro, so that CUDAToolkit_FOUND and the other result variables reach the caller.
macro(vidlora_find_cuda_toolkit)
  set(_vidlora_saved_min_version "${CMAKE_MINIMUM_REQUIRED_VERSION}")
  if(CMAKE_VERSION VERSION_LESS 3.27 AND CMAKE_MINIMUM_REQUIRED_VERSION VERSION_GREATER_EQUAL 3.25)
    set(CMAKE_MINIMUM_REQUIRED_VERSION 3.24)
  endif()
  find_package(CUDAToolkit ${ARGN})
  set(CMAKE_MINIMUM_REQUIRED_VERSION "${_vidlora_saved_min_version}")
  unset(_vidlora_saved_min_version)
endmacro()
