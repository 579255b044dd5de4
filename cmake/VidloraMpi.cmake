# vidlora::mpi — data-parallel training over MPI (include/vidlora/comm/mpi.hpp, comm::Mpi); vidlora::nccl —
# comm::Nccl (include/vidlora/comm/cuda/nccl.hpp) when the CUDA backend is built and NCCL is found.
# Optional like the other dependencies: without MPI the project builds as before, and its MPI tests are
# registered as SKIPPED (a configure error under VIDLORA_EXPECT_ALL_TESTS, which CI sets).
# Debian: libopenmpi-dev openmpi-bin (tools/install-deps.sh). The MPI tests run mpiexec with
# --oversubscribe and, as root, OMPI_ALLOW_RUN_AS_ROOT (VIDLORA_MPIEXEC_FLAGS, VIDLORA_MPI_TEST_ENVIRONMENT).
option(VIDLORA_WITH_MPI "Build vidlora::mpi (comm::Mpi, mpirun -np N train_captioner) when MPI is found" ON)
set(VIDLORA_BUILD_MPI OFF)
if(VIDLORA_WITH_MPI)
  set(MPI_CXX_SKIP_MPICXX ON)  # the C API only: no MPI-2 C++ bindings
  find_package(MPI COMPONENTS CXX)
endif()
if(VIDLORA_WITH_MPI AND MPI_CXX_FOUND AND MPIEXEC_EXECUTABLE)
  set(VIDLORA_BUILD_MPI ON)
  add_library(vidlora_mpi INTERFACE)
  add_library(vidlora::mpi ALIAS vidlora_mpi)
  set_target_properties(vidlora_mpi PROPERTIES EXPORT_NAME mpi)
  target_link_libraries(vidlora_mpi INTERFACE vidlora MPI::MPI_CXX)
  target_compile_definitions(vidlora_mpi INTERFACE VIDLORA_MPI=1)
  list(APPEND VIDLORA_EXPORT_TARGETS vidlora_mpi)
  message(STATUS "vidlora: MPI ${MPI_CXX_VERSION} found (${MPIEXEC_EXECUTABLE}); vidlora::mpi ON")
else()
  message(STATUS "vidlora: MPI not found (Debian: libopenmpi-dev openmpi-bin) or VIDLORA_WITH_MPI=OFF; vidlora::mpi "
                 "and data-parallel training disabled")
endif()

# vidlora::nccl_core — comm::BasicNccl (comm/cuda/basic_nccl.hpp: CUDA and NCCL, no MPI; one process over
# comm::Single); vidlora::nccl adds MPI for comm::Nccl, the ranks of mpirun.
set(VIDLORA_BUILD_NCCL OFF)
set(VIDLORA_BUILD_NCCL_CORE OFF)
if(TARGET vidlora::cuda)
  find_path(VIDLORA_NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS})
  find_library(VIDLORA_NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR})
  if(VIDLORA_NCCL_INCLUDE_DIR AND VIDLORA_NCCL_LIBRARY)
    set(VIDLORA_BUILD_NCCL_CORE ON)
    add_library(vidlora_nccl_core INTERFACE)
    add_library(vidlora::nccl_core ALIAS vidlora_nccl_core)
    target_include_directories(vidlora_nccl_core INTERFACE ${VIDLORA_NCCL_INCLUDE_DIR})
    target_link_libraries(vidlora_nccl_core INTERFACE vidlora_cuda ${VIDLORA_NCCL_LIBRARY})
    message(STATUS "vidlora: NCCL found (${VIDLORA_NCCL_LIBRARY}); vidlora::nccl_core ON")
    if(VIDLORA_BUILD_MPI)
      set(VIDLORA_BUILD_NCCL ON)
      add_library(vidlora_nccl INTERFACE)
      add_library(vidlora::nccl ALIAS vidlora_nccl)
      target_link_libraries(vidlora_nccl INTERFACE vidlora_nccl_core vidlora_mpi)
      message(STATUS "vidlora: NCCL and MPI found; vidlora::nccl ON")
    endif()
  endif()
endif()
if(NOT VIDLORA_BUILD_NCCL_CORE)
  vidlora_skipped_tests(nccl "needs the CUDA backend and NCCL (nccl.h, libnccl)" NOT_EXPECTED)
elseif(NOT VIDLORA_BUILD_NCCL)
  vidlora_skipped_tests(nccl_mpi "comm::Nccl under mpiexec needs MPI (the one-process NCCL tests run)" NOT_EXPECTED)
endif()

# How the tests start MPI jobs: two ranks on however many cores there are (Open MPI: --oversubscribe), also as
# root (containers, CI: the tests set OMPI_ALLOW_RUN_AS_ROOT, VIDLORA_MPI_TEST_ENVIRONMENT).
set(VIDLORA_MPIEXEC_FLAGS)
set(VIDLORA_MPI_TEST_ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
if(VIDLORA_BUILD_MPI)
  execute_process(COMMAND ${MPIEXEC_EXECUTABLE} --version OUTPUT_VARIABLE _vidlora_mpiexec_version ERROR_QUIET
                  TIMEOUT 20)
  if(_vidlora_mpiexec_version MATCHES "Open MPI|OpenRTE")
    set(VIDLORA_MPIEXEC_FLAGS --oversubscribe)
  endif()
endif()
