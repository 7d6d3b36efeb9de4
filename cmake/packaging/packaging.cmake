# SPDX-License-Identifier: Apache-2.0
# The product beside the library: each daemon's systemd unit, example configuration
# (etc/quartzflow) and state directory (var/lib/quartzflow), installed with its binary;
# and the Debian packages CPack builds from the install components (`cpack -G DEB` in the
# build tree): quartzflow-coordinator, quartzflow-agent, quartzflow-qfctl, quartzflow-dev.
set(QUARTZFLOW_PACKAGING_DIR ${CMAKE_CURRENT_LIST_DIR})

foreach(QF_ROLE coordinator agent)
  if(NOT TARGET qf-${QF_ROLE})
    continue()
  endif()
  configure_file(${QUARTZFLOW_PACKAGING_DIR}/install_service.cmake.in
                 ${PROJECT_BINARY_DIR}/packaging/install_${QF_ROLE}.cmake @ONLY)
  install(SCRIPT ${PROJECT_BINARY_DIR}/packaging/install_${QF_ROLE}.cmake COMPONENT ${QF_ROLE})
  foreach(script postinst prerm postrm)
    configure_file(${QUARTZFLOW_PACKAGING_DIR}/${script}.in ${PROJECT_BINARY_DIR}/packaging/${QF_ROLE}/deb/${script}
                   @ONLY FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
                   WORLD_READ WORLD_EXECUTE)
  endforeach()
  # The configuration is the operator's: dpkg keeps an edited one on upgrade.
  file(WRITE ${PROJECT_BINARY_DIR}/packaging/${QF_ROLE}/deb/conffiles "/etc/quartzflow/${QF_ROLE}.yaml\n")
endforeach()

# CPack: one .deb per component, installed under /usr (configuration in /etc, state in /var).
set(CPACK_PACKAGE_NAME quartzflow)
set(CPACK_PACKAGE_VENDOR "QuartzFlow")
set(CPACK_PACKAGE_CONTACT "QuartzFlow maintainers <quartzflow@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "QuartzFlow: a distributed cron")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_COMPONENTS_ALL coordinator agent qfctl dev)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)  # Depends from the programs' shared libraries
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_COORDINATOR_PACKAGE_NAME quartzflow-coordinator)
set(CPACK_DEBIAN_AGENT_PACKAGE_NAME quartzflow-agent)
set(CPACK_DEBIAN_QFCTL_PACKAGE_NAME quartzflow-qfctl)
set(CPACK_DEBIAN_DEV_PACKAGE_NAME quartzflow-dev)
set(CPACK_COMPONENT_COORDINATOR_DESCRIPTION
    "QuartzFlow coordinator\n qf-coordinator schedules tasks and dispatches them to agents over QUIC; admin API and web console. Service qf-coordinator.service.")
set(CPACK_COMPONENT_AGENT_DESCRIPTION
    "QuartzFlow agent\n qf-agent runs tasks on this host, from a coordinator or a local manifest. Service qf-agent.service.")
set(CPACK_COMPONENT_QFCTL_DESCRIPTION "QuartzFlow command line\n qfctl: tasks, runs, agents, certificates, local stores.")
set(CPACK_COMPONENT_DEV_DESCRIPTION
    "QuartzFlow C++20 library: headers and static libraries\n find_package(quartzflow) and pkg-config files, the protocol's .proto files.")
# The maintainer scripts need groupadd/useradd (passwd); the library's users need the
# headers of what its public headers include.
set(CPACK_DEBIAN_COORDINATOR_PACKAGE_DEPENDS "passwd")
set(CPACK_DEBIAN_AGENT_PACKAGE_DEPENDS "passwd")
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "libboost-dev (>= 1.74), libprotobuf-dev, libfmt-dev, libspdlog-dev, libsqlite3-dev, libyaml-cpp-dev, libhowardhinnant-date-dev, libssl-dev, libngtcp2-dev, libngtcp2-crypto-gnutls-dev, libgnutls28-dev, libpq-dev, libcurl4-openssl-dev")
set(CPACK_DEBIAN_DEV_PACKAGE_SHLIBDEPS OFF)
set(CPACK_DEBIAN_COORDINATOR_PACKAGE_CONTROL_EXTRA
    ${PROJECT_BINARY_DIR}/packaging/coordinator/deb/postinst ${PROJECT_BINARY_DIR}/packaging/coordinator/deb/prerm
    ${PROJECT_BINARY_DIR}/packaging/coordinator/deb/postrm ${PROJECT_BINARY_DIR}/packaging/coordinator/deb/conffiles)
set(CPACK_DEBIAN_AGENT_PACKAGE_CONTROL_EXTRA
    ${PROJECT_BINARY_DIR}/packaging/agent/deb/postinst ${PROJECT_BINARY_DIR}/packaging/agent/deb/prerm
    ${PROJECT_BINARY_DIR}/packaging/agent/deb/postrm ${PROJECT_BINARY_DIR}/packaging/agent/deb/conffiles)
include(CPack)
