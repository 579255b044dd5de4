# vidlora::cuda — the CUDA backend (kernels in include/vidlora/**/cuda/*.cuh, cuBLASLt GEMMs).
# Optional: without a CUDA toolkit the project configures and builds as before (VIDLORA_BUILD_CUDA is OFF).
#
# Architectures: -DCMAKE_CUDA_ARCHITECTURES=<list> wins; otherwise the preset's GPU
# (T4 75, L4 89, A100 80, H100 90; Cpu -> 80). Tests tests/cuda/*.cu form vidlora_cuda_tests (tests/cuda/CMakeLists.txt);
# each tag is one CTest test that reports SKIPPED (exit 77) on a machine without a CUDA device.
# Benchmarks benchmarks/bench_cuda_*.cu are programs of their own.

include(CheckLanguage)
check_language(CUDA)
set(_vidlora_cuda_default OFF)
if(CMAKE_CUDA_COMPILER)
  set(_vidlora_cuda_default ON)
endif()
option(VIDLORA_BUILD_CUDA "Build the CUDA backend's target, tests and benchmarks (needs nvcc + cuBLASLt)"
       ${_vidlora_cuda_default})

option(VIDLORA_REQUIRE_CUDA "Fail the configure when no CUDA compiler is found (for CI images that have one)" OFF)
if(VIDLORA_REQUIRE_CUDA AND NOT CMAKE_CUDA_COMPILER)
  message(FATAL_ERROR "vidlora: VIDLORA_REQUIRE_CUDA is ON but no CUDA compiler was found (set CUDACXX or put nvcc on PATH)")
endif()
if(VIDLORA_REQUIRE_CUDA)
  set(VIDLORA_BUILD_CUDA ON CACHE BOOL "" FORCE)
endif()
if(VIDLORA_BUILD_CUDA AND NOT CMAKE_CUDA_COMPILER)
  message(WARNING "vidlora: VIDLORA_BUILD_CUDA is ON but no CUDA compiler was found; the CUDA backend is disabled")
  set(VIDLORA_BUILD_CUDA OFF)
endif()

if(NOT VIDLORA_BUILD_CUDA)
  message(STATUS "vidlora: CUDA backend disabled (no CUDA toolkit, or VIDLORA_BUILD_CUDA=OFF)")
  vidlora_skipped_tests(cuda "no CUDA compiler (set CUDACXX), or VIDLORA_BUILD_CUDA=OFF" NOT_EXPECTED)
  return()
endif()

# The preset's compute capability, unless the user chose architectures (must precede enable_language).
set(_vidlora_arch_Cpu 80)
set(_vidlora_arch_T4 75)
set(_vidlora_arch_L4 89)
set(_vidlora_arch_A100 80)
set(_vidlora_arch_H100 90)
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES OR CMAKE_CUDA_ARCHITECTURES STREQUAL "")
  set(CMAKE_CUDA_ARCHITECTURES ${_vidlora_arch_${VIDLORA_PRESET}} CACHE STRING
      "CUDA architectures (default: the VIDLORA_PRESET's GPU)")
endif()
enable_language(CUDA)
include(${CMAKE_CURRENT_LIST_DIR}/vidloraFindCUDAToolkit.cmake)
vidlora_find_cuda_toolkit(REQUIRED)
# CMake < 3.26 does not know nvcc's C++20 flag; vidlora's cxx_std_20 requirement reaches CUDA sources too.
if(NOT "cuda_std_20" IN_LIST CMAKE_CUDA_COMPILE_FEATURES AND CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 12.0)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_COMPILE_FEATURES cuda_std_20)
  list(APPEND CMAKE_CUDA_COMPILE_FEATURES cuda_std_20)
endif()
message(STATUS "vidlora: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")

add_library(vidlora_cuda INTERFACE)
add_library(vidlora::cuda ALIAS vidlora_cuda)
set_target_properties(vidlora_cuda PROPERTIES EXPORT_NAME cuda)
target_link_libraries(vidlora_cuda INTERFACE vidlora CUDA::cudart CUDA::cublasLt)
target_compile_features(vidlora_cuda INTERFACE cxx_std_20 cuda_std_20)
# Lets plain C++ translation units see the runtime wrappers (DeviceBuffer, Stream, GemmRunner).
target_compile_definitions(vidlora_cuda INTERFACE VIDLORA_CUDA_RUNTIME=1)
# fmt 9 turns constexpr off under nvcc, which breaks its own C++20 consteval format strings in a CUDA translation
# unit that formats (the Trainer's: train/cuda/decoder_step.cuh); constexpr stays on for nvcc's host pass.
target_compile_definitions(vidlora_cuda INTERFACE $<$<COMPILE_LANGUAGE:CUDA>:FMT_USE_CONSTEXPR=1>)

# nvcc diagnostics from the shared headers (Eigen's defaulted __host__ __device__ members; host constexpr
# tables in quant/dynamic_map.hpp that the kernels do not call; 128, "loop is not reachable", where a host loop
# follows comm::Single's constant `size() == 1` return in the Trainer): silenced for vidlora's own CUDA targets.
set(VIDLORA_CUDA_FLAGS $<$<COMPILE_LANGUAGE:CUDA>:-diag-suppress=20012,20013,20015,128>)

if(VIDLORA_BUILD_BENCHMARKS)
  find_package(benchmark REQUIRED)
  file(GLOB _vidlora_cuda_benches CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/benchmarks/bench_cuda_*.cu)
  foreach(source IN LISTS _vidlora_cuda_benches)
    get_filename_component(name ${source} NAME_WE)
    add_executable(${name} ${source})
    target_link_libraries(${name} PRIVATE vidlora::cuda benchmark::benchmark)
    target_compile_options(${name} PRIVATE ${VIDLORA_CUDA_FLAGS})
    set_target_properties(${name} PROPERTIES CUDA_RUNTIME_LIBRARY Shared)
  endforeach()
endif()
