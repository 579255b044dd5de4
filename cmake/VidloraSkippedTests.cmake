# Tests that cannot be built on this machine (a missing optional dependency) are still registered, as one
# CTest test per skipped part that reports SKIPPED (exit 77) with the reason, so a green run says what it
# did not cover. -DVIDLORA_EXPECT_ALL_TESTS=ON (tools/test.sh, hence CI, sets it) turns any such skip into a
# configure error naming the part and the missing dependency.
option(VIDLORA_EXPECT_ALL_TESTS "Fail the configure when a test module would be skipped (a dependency is missing)" OFF)

# vidlora_skipped_tests(<part> <reason> [NOT_EXPECTED]): registers "<part>: SKIPPED" and records the part
# (NOT_EXPECTED: not counted by VIDLORA_EXPECT_ALL_TESTS; the CUDA tests, which VIDLORA_REQUIRE_CUDA covers).
function(vidlora_skipped_tests part reason)
  if(NOT VIDLORA_BUILD_TESTS)
    return()
  endif()
  message(STATUS "vidlora: skipping ${part} tests (${reason})")
  enable_testing()
  add_test(NAME "${part}: SKIPPED" COMMAND sh -c "echo 'not built: ${reason}'; exit 77")
  set_tests_properties("${part}: SKIPPED" PROPERTIES SKIP_RETURN_CODE 77 LABELS "skipped")
  if(NOT "NOT_EXPECTED" IN_LIST ARGN)
    set_property(GLOBAL APPEND PROPERTY VIDLORA_SKIPPED_TEST_PARTS "${part} (${reason})")
  endif()
endfunction()

# Called once at the end of the top-level CMakeLists.txt.
function(vidlora_check_skipped_tests)
  get_property(skipped GLOBAL PROPERTY VIDLORA_SKIPPED_TEST_PARTS)
  if(VIDLORA_EXPECT_ALL_TESTS AND skipped)
    list(JOIN skipped "\n  " lines)
    message(FATAL_ERROR "vidlora: VIDLORA_EXPECT_ALL_TESTS is ON but these tests would not be built:\n  ${lines}\n"
                        "Install what they need (tools/install-deps.sh) or configure without VIDLORA_EXPECT_ALL_TESTS.")
  endif()
endfunction()
