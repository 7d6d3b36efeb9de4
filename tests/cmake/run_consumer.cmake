# SPDX-License-Identifier: Apache-2.0
# Installs the build tree into a scratch prefix, then configures, builds and runs
# tests/cmake/consumer (find_package(quartzflow COMPONENTS core): a cron query and
# examples/hello_engine) against it, with the same sanitizer flags as the build under test;
# then a configure that asks for every component, and hello_engine with pkg-config.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BINARY_DIR} --prefix ${prefix}
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(rc)
  message(FATAL_ERROR "install failed: ${rc}")
endif()
# The product's programs are installed with the library.
foreach(program qfctl qf-coordinator qf-agent)
  if(NOT EXISTS ${prefix}/bin/${program})
    message(FATAL_ERROR "install did not install bin/${program}")
  endif()
endforeach()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/cmake/consumer -B ${WORK_DIR}/build
                -G Ninja -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_BUILD_TYPE=Release
                -DHELLO_ENGINE_SOURCE=${SOURCE_DIR}/examples/hello_engine/main.cpp
                "-DCMAKE_CXX_FLAGS=${CXX_FLAGS}" "-DCMAKE_EXE_LINKER_FLAGS=${LINKER_FLAGS}"
                RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "consumer configure failed: ${rc}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK_DIR}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "consumer build failed: ${rc}")
endif()
execute_process(COMMAND ${WORK_DIR}/build/consumer RESULT_VARIABLE rc OUTPUT_VARIABLE out)
message(STATUS "consumer printed: ${out}")
if(rc OR NOT out MATCHES "next fire 2026-01-01T02:00:00Z")
  message(FATAL_ERROR "consumer run failed (${rc}): ${out}")
endif()
execute_process(COMMAND ${WORK_DIR}/build/hello_engine 1 WORKING_DIRECTORY ${WORK_DIR}/build
                RESULT_VARIABLE rc OUTPUT_VARIABLE out TIMEOUT 20)
if(rc OR NOT out MATCHES "hello from hello:")
  message(FATAL_ERROR "hello_engine built against quartzflow::core failed (${rc}): ${out}")
endif()

# Every component and the umbrella (what qf-agent or qf-coordinator would ask for).
file(WRITE ${WORK_DIR}/all/CMakeLists.txt [=[
cmake_minimum_required(VERSION 3.25)
project(quartzflow_all LANGUAGES CXX)
find_package(quartzflow 0.1 CONFIG REQUIRED)
foreach(target quartzflow::quartzflow quartzflow::core quartzflow::cluster quartzflow::yaml
        quartzflow::http_executor quartzflow::certs quartzflow::quic quartzflow::store
        quartzflow::sqlite_store quartzflow::pg_store quartzflow::admin)
  if(NOT TARGET ${target})
    message(FATAL_ERROR "find_package(quartzflow) did not define ${target}")
  endif()
endforeach()
]=])
execute_process(COMMAND ${CMAKE_COMMAND} -S ${WORK_DIR}/all -B ${WORK_DIR}/all/build -G Ninja
                -DCMAKE_PREFIX_PATH=${prefix} RESULT_VARIABLE rc OUTPUT_QUIET)
if(rc)
  message(FATAL_ERROR "find_package(quartzflow) with every component failed: ${rc}")
endif()

# pkg-config: the smallest example compiles and links with `pkg-config --cflags --libs`.
# The umbrella quartzflow.pc resolves; hello_engine needs quartzflow-core only.
file(GLOB pc_file ${prefix}/lib*/pkgconfig/quartzflow.pc ${prefix}/lib/*/pkgconfig/quartzflow.pc)
if(NOT pc_file)
  message(FATAL_ERROR "install did not install quartzflow.pc")
endif()
get_filename_component(pc_dir ${pc_file} DIRECTORY)
execute_process(COMMAND sh -c "PKG_CONFIG_PATH='${pc_dir}' pkg-config --cflags --libs quartzflow"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(rc)
  message(FATAL_ERROR "pkg-config --cflags --libs quartzflow failed: ${rc}")
endif()
execute_process(COMMAND sh -c "PKG_CONFIG_PATH='${pc_dir}' pkg-config --cflags --libs quartzflow-core"
                RESULT_VARIABLE rc OUTPUT_VARIABLE pc_flags OUTPUT_STRIP_TRAILING_WHITESPACE)
if(rc)
  message(FATAL_ERROR "pkg-config --cflags --libs quartzflow-core failed: ${rc}")
endif()
execute_process(COMMAND sh -c "g++ ${CXX_FLAGS} ${SOURCE_DIR}/examples/hello_engine/main.cpp ${pc_flags} ${LINKER_FLAGS} -o ${WORK_DIR}/hello_engine"
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(rc)
  message(FATAL_ERROR "building hello_engine with pkg-config failed: ${err}")
endif()
execute_process(COMMAND ${WORK_DIR}/hello_engine 1 WORKING_DIRECTORY ${WORK_DIR} RESULT_VARIABLE rc
                OUTPUT_VARIABLE out TIMEOUT 20)
if(rc OR NOT out MATCHES "hello from hello:")
  message(FATAL_ERROR "hello_engine built with pkg-config failed (${rc}): ${out}")
endif()
message(STATUS "pkg-config build: ${out}")
