# SPDX-License-Identifier: Apache-2.0
# Install rules and the exported package: find_package(quartzflow) -> quartzflow::quartzflow.
install(DIRECTORY include/quartzflow DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_BINARY_DIR}/proto/quartzflow/v1
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/quartzflow FILES_MATCHING PATTERN "*.pb.h")
install(FILES ${QUARTZFLOW_PROTO_FILES} DESTINATION ${CMAKE_INSTALL_DATADIR}/quartzflow/proto/quartzflow/v1)
install(TARGETS quartzflow quartzflow_core quartzflow_proto
        EXPORT quartzflowTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The CLI and the product's two daemons (qf-coordinator embeds the web console).
foreach(program qfctl qf-coordinator qf-agent)
  if(TARGET ${program})
    install(TARGETS ${program} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endforeach()
set(QUARTZFLOW_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/quartzflow)
install(EXPORT quartzflowTargets NAMESPACE quartzflow:: DESTINATION ${QUARTZFLOW_CMAKE_DIR})
configure_package_config_file(cmake/quartzflowConfig.cmake.in
  ${PROJECT_BINARY_DIR}/quartzflowConfig.cmake INSTALL_DESTINATION ${QUARTZFLOW_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/quartzflowConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/quartzflowConfig.cmake
              ${PROJECT_BINARY_DIR}/quartzflowConfigVersion.cmake
        DESTINATION ${QUARTZFLOW_CMAKE_DIR})
install(FILES LICENSE DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/quartzflow)

# pkg-config: relocatable (the prefix is found from the .pc file's own place).
file(RELATIVE_PATH QUARTZFLOW_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" QUARTZFLOW_PC_TO_PREFIX "${QUARTZFLOW_PC_TO_PREFIX}")
configure_file(cmake/quartzflow.pc.in ${PROJECT_BINARY_DIR}/quartzflow.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/quartzflow.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
