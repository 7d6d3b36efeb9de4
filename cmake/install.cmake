# SPDX-License-Identifier: Apache-2.0
# Install rules and the exported package: find_package(quartzflow [COMPONENTS ...]) with one
# export set per component (quartzflow::<component>), the umbrella quartzflow::quartzflow,
# and a pkg-config file per component (quartzflow-<component>.pc) plus quartzflow.pc.
# Install components (the Debian packages, cmake/packaging/packaging.cmake): the library is
# `dev`; qf-coordinator, qf-agent and qfctl are components of their own.
set(CMAKE_INSTALL_DEFAULT_COMPONENT_NAME dev)
install(DIRECTORY include/quartzflow DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_BINARY_DIR}/proto/quartzflow/v1
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/quartzflow FILES_MATCHING PATTERN "*.pb.h")
install(FILES ${QUARTZFLOW_EXPORT_HEADER} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/quartzflow)
install(FILES ${QUARTZFLOW_PROTO_FILES} DESTINATION ${CMAKE_INSTALL_DATADIR}/quartzflow/proto/quartzflow/v1)
set(QUARTZFLOW_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/quartzflow)
foreach(component IN LISTS QUARTZFLOW_COMPONENTS)
  set(targets quartzflow_${component})
  if(component STREQUAL "core")
    list(APPEND targets quartzflow_proto)  # the schema every component's headers use
  endif()
  install(TARGETS ${targets} EXPORT quartzflow-${component}-targets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
          LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
          RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
          INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
  install(EXPORT quartzflow-${component}-targets NAMESPACE quartzflow::
          DESTINATION ${QUARTZFLOW_CMAKE_DIR})
  get_target_property(uses quartzflow_${component} QUARTZFLOW_COMPONENTS)
  if(NOT uses)
    set(uses "")
  endif()
  string(APPEND QUARTZFLOW_COMPONENT_USES "set(_quartzflow_uses_${component} ${uses})\n")
endforeach()
install(TARGETS quartzflow EXPORT quartzflow-targets)
install(EXPORT quartzflow-targets NAMESPACE quartzflow:: DESTINATION ${QUARTZFLOW_CMAKE_DIR})
# The CLI and the product's two daemons (qf-coordinator embeds the web console). Release
# builds keep debug info in the build tree: `cmake --install build --strip` installs them,
# and the libraries, stripped (README, "Using the library").
foreach(program qfctl qf-coordinator qf-agent)
  if(TARGET ${program})
    string(REGEX REPLACE "^qf-" "" component ${program})
    install(TARGETS ${program} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT ${component})
  endif()
endforeach()
if(QUARTZFLOW_BUILD_SHARED)
  set(QUARTZFLOW_STATIC OFF)
else()
  set(QUARTZFLOW_STATIC ON)
endif()
# `cmake --install build --strip` strips the programs and shared libraries; static libraries
# lose their debug information too (their symbol tables stay).
install(CODE "
  if(CMAKE_INSTALL_DO_STRIP)
    file(GLOB archives \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/libquartzflow*.a\")
    foreach(archive IN LISTS archives)
      execute_process(COMMAND \"${CMAKE_STRIP}\" --strip-debug \"\${archive}\")
    endforeach()
  endif()")
configure_package_config_file(cmake/quartzflowConfig.cmake.in
  ${PROJECT_BINARY_DIR}/quartzflowConfig.cmake INSTALL_DESTINATION ${QUARTZFLOW_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/quartzflowConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/quartzflowConfig.cmake
              ${PROJECT_BINARY_DIR}/quartzflowConfigVersion.cmake
        DESTINATION ${QUARTZFLOW_CMAKE_DIR})
install(FILES LICENSE DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/quartzflow)

# pkg-config: relocatable (the prefix is found from the .pc file's own place). The libraries
# are static by default: what a component uses is in Requires, not Requires.private.
file(RELATIVE_PATH QUARTZFLOW_PC_TO_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" QUARTZFLOW_PC_TO_PREFIX "${QUARTZFLOW_PC_TO_PREFIX}")
function(quartzflow_pkg_config name description requires libs)
  set(QUARTZFLOW_PC_NAME ${name})
  set(QUARTZFLOW_PC_DESCRIPTION "${description}")
  set(QUARTZFLOW_PC_REQUIRES "${requires}")
  set(QUARTZFLOW_PC_LIBS "${libs}")
  configure_file(${PROJECT_SOURCE_DIR}/cmake/quartzflow.pc.in ${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/pkgconfig/${name}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endfunction()
quartzflow_pkg_config(quartzflow-core "schedules, task engine, LocalStore, shell and plugin executors"
  "protobuf fmt spdlog sqlite3" "-lquartzflow_core -lquartzflow_proto -ldate-tz -ldl -pthread")
quartzflow_pkg_config(quartzflow-cluster "catalog, scheduler, dispatchers, coordinator, in-process transport"
  "quartzflow-core" "-lquartzflow_cluster")
quartzflow_pkg_config(quartzflow-yaml "YAML manifests and configuration files"
  "quartzflow-core yaml-cpp" "-lquartzflow_yaml")
quartzflow_pkg_config(quartzflow-http_executor "HTTP(S) tasks for the engine"
  "quartzflow-core libssl libcrypto" "-Wl,--undefined=quartzflow_link_http_executor -lquartzflow_http_executor")
quartzflow_pkg_config(quartzflow-certs "cluster CA and certificates for mutual TLS"
  "quartzflow-core libssl libcrypto" "-lquartzflow_certs")
quartzflow_pkg_config(quartzflow-quic "the agent protocol over QUIC"
  "quartzflow-certs libngtcp2 libngtcp2_crypto_gnutls gnutls" "-lquartzflow_quic")
quartzflow_pkg_config(quartzflow-store "the coordinator Store's shared queries and group commit"
  "quartzflow-core" "-lquartzflow_store")
quartzflow_pkg_config(quartzflow-sqlite_store "the coordinator's Store on SQLite"
  "quartzflow-store sqlite3" "-lquartzflow_sqlite_store")
quartzflow_pkg_config(quartzflow-pg_store "the coordinator's Store on PostgreSQL"
  "quartzflow-store libpq" "-lquartzflow_pg_store")
quartzflow_pkg_config(quartzflow-alerts "alert rules, the alert engine and sealed channel secrets"
  "quartzflow-core libssl libcrypto" "-lquartzflow_alerts")
quartzflow_pkg_config(quartzflow-alert_delivery "alert channels, their senders and the delivery worker"
  "quartzflow-http_executor quartzflow-store libssl libcrypto libcurl" "-lquartzflow_alert_delivery")
quartzflow_pkg_config(quartzflow-admin "admin API, authentication and HTTPS/WebSocket server"
  "quartzflow-cluster quartzflow-certs quartzflow-alerts libssl libcrypto" "-lquartzflow_admin")
list(TRANSFORM QUARTZFLOW_COMPONENTS PREPEND quartzflow- OUTPUT_VARIABLE all_pc)
list(JOIN all_pc " " all_pc)
quartzflow_pkg_config(quartzflow "every component" "${all_pc}" "")

# systemd units, example configuration, state directory; CPack's .deb packages.
include(${CMAKE_CURRENT_LIST_DIR}/packaging/packaging.cmake)
