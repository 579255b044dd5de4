# vidlora_unity_tests(<target>): the target's C++ test files are compiled as one translation unit (a unity
# build). A module's test files instantiate the same Eigen products and model/trainer templates, and that
# instantiation is most of a test file's compile time: compiled one by one, each file paid for it again
# (docs/benchmarks.md, "CI time budget"). Each file still compiles on its own: -DVIDLORA_UNITY_TESTS=OFF builds
# them one by one (quicker to rebuild after editing one file). Names at file scope must differ between the
# files of a module; a file that must come first (it defines a macro before its includes) sets the source
# property SKIP_UNITY_BUILD_INCLUSION, and CMake leaves out files with their own compile options. (CMake 3.25
# makes no unity sources for CUDA: the .cu tests are not combined.)
option(VIDLORA_UNITY_TESTS "Compile each test module's C++ files as one translation unit (unity build)" ON)

function(vidlora_unity_tests target)
  if(VIDLORA_UNITY_TESTS)
    set_target_properties(${target} PROPERTIES UNITY_BUILD ON UNITY_BUILD_MODE BATCH UNITY_BUILD_BATCH_SIZE 0)
  endif()
endfunction()
