# SPDX-License-Identifier: Apache-2.0
# cmake -DEMBED_SCRIPT=... -DWORK_DIR=... -DCXX=... -DINCLUDES="a;b" -P embed_console_check.cmake
# The console's embedding without Node (no dist/: an empty table that compiles, so
# qf-coordinator builds and GET / says the console was not built) and with a small dist/
# (each file and its .gz pulled in by .incbin; compiled, linked and read back).
cmake_minimum_required(VERSION 3.21)
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}/dist/assets")
set(flags -std=c++20)
foreach(dir IN LISTS INCLUDES)
  list(APPEND flags "-I${dir}")
endforeach()

# Without a built console.
execute_process(COMMAND "${CMAKE_COMMAND}" "-DDIST_DIR=${WORK_DIR}/missing" "-DOUTPUT=${WORK_DIR}/none.cpp"
                -P "${EMBED_SCRIPT}" RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "embed_console.cmake failed without a dist/")
endif()
file(READ "${WORK_DIR}/none.cpp" none)
if(NOT none MATCHES "return \\{\\};" OR none MATCHES "incbin")
  message(FATAL_ERROR "without dist/ the table is not empty:\n${none}")
endif()
execute_process(COMMAND "${CXX}" ${flags} -c "${WORK_DIR}/none.cpp" -o "${WORK_DIR}/none.o" RESULT_VARIABLE status
                ERROR_VARIABLE errors)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "the empty table does not compile:\n${errors}")
endif()

# With a small built console: read back through the table.
file(WRITE "${WORK_DIR}/dist/index.html" "<!doctype html><title>x</title>")
file(WRITE "${WORK_DIR}/dist/assets/app-1234abcd.js" "console.log('embedded')")
file(WRITE "${WORK_DIR}/dist/assets/app-1234abcd.js.gz" "GZIP BYTES")
execute_process(COMMAND "${CMAKE_COMMAND}" "-DDIST_DIR=${WORK_DIR}/dist" "-DOUTPUT=${WORK_DIR}/files.cpp"
                -P "${EMBED_SCRIPT}" RESULT_VARIABLE status)
file(WRITE "${WORK_DIR}/main.cpp" [=[
#include <cstdio>
#include "console_embedded.hpp"
int main() {
  for (const auto& f : quartzflow::examples::embedded_console_files())
    std::printf("%.*s=%.*s|%.*s\n", int(f.path.size()), f.path.data(), int(f.body.size()), f.body.data(),
                int(f.gzip.size()), f.gzip.data());
}
]=])
execute_process(COMMAND "${CXX}" ${flags} "${WORK_DIR}/files.cpp" "${WORK_DIR}/main.cpp" -o "${WORK_DIR}/read_back"
                RESULT_VARIABLE status ERROR_VARIABLE errors)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "the embedded table does not build:\n${errors}")
endif()
execute_process(COMMAND "${WORK_DIR}/read_back" OUTPUT_VARIABLE listed RESULT_VARIABLE status)
set(expected "assets/app-1234abcd.js=console.log('embedded')|GZIP BYTES\nindex.html=<!doctype html><title>x</title>|\n")
if(NOT status EQUAL 0 OR NOT listed STREQUAL expected)
  message(FATAL_ERROR "embedded files read back as:\n${listed}\nexpected:\n${expected}")
endif()
message(STATUS "console embedding: an empty table without dist/, the files and their .gz with it")
