# SPDX-License-Identifier: Apache-2.0
# catch_discover_tests splits a test name at ';': "a; b" becomes two CTest tests that match
# nothing and pass without running anything. Fail when a TEST_CASE name holds a ';'.
# Run with -DTESTS_DIR=<tests/>.
file(GLOB_RECURSE sources "${TESTS_DIR}/*.cpp")
set(bad "")
foreach(source IN LISTS sources)
  file(STRINGS "${source}" lines REGEX "TEST_CASE\\(\"[^\"]*\\;")
  foreach(line IN LISTS lines)
    string(APPEND bad "\n  ${source}: ${line}")
  endforeach()
endforeach()
if(bad)
  message(FATAL_ERROR "TEST_CASE names with ';' are split by catch_discover_tests (use ','):${bad}")
endif()
