# SPDX-License-Identifier: Apache-2.0
# How the component libraries are built: static by default; with QUARTZFLOW_BUILD_SHARED each
# component is a shared object that exports QuartzFlow's symbols only.
include(GenerateExportHeader)

# quartzflow/export.hpp: QUARTZFLOW_EXPORT / QUARTZFLOW_NO_EXPORT / QUARTZFLOW_DEPRECATED for
# declarations that must be marked. Generated beside the protobuf headers (the build tree's
# include root for generated files), installed with the public headers.
set(QUARTZFLOW_EXPORT_HEADER ${PROJECT_BINARY_DIR}/proto/quartzflow/export.hpp)

# Shared objects: inline functions and template instances (Asio, Beast, fmt, protobuf) hidden
# (-fvisibility-inlines-hidden), and a version script that keeps in the dynamic symbol table
# only the symbols whose (mangled) name carries "quartzflow": the API, its vtables and type
# infos, the generated schema, the extern "C" anchors; everything else is local.
function(quartzflow_visibility target)
  if(NOT QUARTZFLOW_BUILD_SHARED)
    return()
  endif()
  set_target_properties(${target} PROPERTIES VISIBILITY_INLINES_HIDDEN ON)
  target_link_options(${target} PRIVATE
    "LINKER:--version-script=${PROJECT_SOURCE_DIR}/cmake/quartzflow.map" "LINKER:--no-undefined")
  set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS ${PROJECT_SOURCE_DIR}/cmake/quartzflow.map)
endfunction()
