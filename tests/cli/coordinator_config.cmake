# SPDX-License-Identifier: Apache-2.0
# qf-coordinator and qf-agent (connected mode) refuse bad configuration files: exit status 2,
# a message naming the field and the reason, and nothing created.
# Run with -DQF_COORDINATOR=<path> -DQF_AGENT=<path> -DWORK_DIR=<dir> [-DOPENSSL=<path>].
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR}/certs)
# Readable files are enough for the checks made before the TLS files are loaded.
foreach(name ca.pem coordinator.pem coordinator.key agent.pem agent.key)
  file(WRITE ${WORK_DIR}/certs/${name} "")
endforeach()

# Writes ${WORK_DIR}/<name> and runs <program> --config on it: exit 2, stderr matching.
function(expect_refused program name content expected_stderr)
  file(WRITE ${WORK_DIR}/${name} "${content}")
  execute_process(COMMAND ${program} --config ${WORK_DIR}/${name} RESULT_VARIABLE status OUTPUT_VARIABLE out
                  ERROR_VARIABLE err TIMEOUT 30)
  if(NOT status EQUAL 2)
    message(FATAL_ERROR "${name}: exit ${status}, expected 2\nstdout: ${out}\nstderr: ${err}")
  endif()
  if(NOT err MATCHES "${expected_stderr}")
    message(FATAL_ERROR "${name}: stderr\n${err}\ndoes not match ${expected_stderr}")
  endif()
  if(EXISTS ${WORK_DIR}/data)
    message(FATAL_ERROR "${name}: refused, yet it created ${WORK_DIR}/data")
  endif()
endfunction()

set(tls "agent_tls:\n  ca_file: certs/ca.pem\n  cert_file: certs/coordinator.pem\n  key_file: certs/coordinator.key\n")
set(coordinator "data_dir: data\nagent_listen: 127.0.0.1:0\n")

# Coordinator: TLS files.
expect_refused(${QF_COORDINATOR} missing-ca.yaml
  "${coordinator}agent_tls:\n  ca_file: certs/nope.pem\n  cert_file: certs/coordinator.pem\n  key_file: certs/coordinator.key\n"
  "missing-ca.yaml: agent_tls.ca_file: cannot read .*nope.pem: No such file or directory")
expect_refused(${QF_COORDINATOR} no-key.yaml
  "${coordinator}agent_tls:\n  ca_file: certs/ca.pem\n  cert_file: certs/coordinator.pem\n"
  "no-key.yaml: agent_tls.key_file: is required")
expect_refused(${QF_COORDINATOR} no-tls.yaml "${coordinator}" "no-tls.yaml: agent_tls.ca_file: is required")
# Coordinator: listen addresses.
expect_refused(${QF_COORDINATOR} listen-no-port.yaml "data_dir: data\nagent_listen: 127.0.0.1\n${tls}"
  "agent_listen: \"127.0.0.1\": no port")
expect_refused(${QF_COORDINATOR} listen-bad-port.yaml "data_dir: data\nagent_listen: 127.0.0.1:70000\n${tls}"
  "agent_listen: \"127.0.0.1:70000\": \"70000\" is not a port number")
expect_refused(${QF_COORDINATOR} listen-ipv6.yaml "data_dir: data\nagent_listen: ::1:7443\n${tls}"
  "agent_listen: .*IPv6 address must be in brackets")
expect_refused(${QF_COORDINATOR} listen-name.yaml "data_dir: data\nagent_listen: example.com:7443\n${tls}"
  "agent_listen: .*\"example.com\" is not an IP address")
# Coordinator: the admin API's address, TLS files and session lifetime.
expect_refused(${QF_COORDINATOR} admin-name.yaml "${coordinator}${tls}admin_listen: localhost:8443\n"
  "admin-name.yaml: admin_listen: .*\"localhost\" is not an IP address")
expect_refused(${QF_COORDINATOR} admin-tls.yaml
  "${coordinator}${tls}admin_tls:\n  cert_file: certs/nope.pem\n  key_file: certs/coordinator.key\n"
  "admin-tls.yaml: admin_tls.cert_file: cannot read .*nope.pem: No such file or directory")
expect_refused(${QF_COORDINATOR} admin-ttl.yaml "${coordinator}${tls}session_ttl_seconds: 5\n"
  "admin-ttl.yaml: session_ttl_seconds: 5 is out of range 60-2592000")
# Coordinator: the alerts' secret key file (read at once; made in data_dir only when unset).
expect_refused(${QF_COORDINATOR} alerts-key-missing.yaml "${coordinator}${tls}alerts: {secret_key_file: certs/nope.key}\n"
  "alerts-key-missing.yaml: alerts.secret_key_file: cannot read .*nope.key: No such file or directory")
file(WRITE ${WORK_DIR}/certs/short.key "0123abcd\n")
expect_refused(${QF_COORDINATOR} alerts-key-short.yaml "${coordinator}${tls}alerts: {secret_key_file: certs/short.key}\n"
  "alerts-key-short.yaml: alerts.secret_key_file: .*short.key: not a key: give 32 raw bytes or 64 hex digits")
# Coordinator: unknown fields, bad values.
expect_refused(${QF_COORDINATOR} alerts-p95.yaml "${coordinator}${tls}alerts: {p95_refresh_seconds: 90000}\n"
  "alerts-p95.yaml: alerts.p95_refresh_seconds: 90000: at most 86400 \\(a day\\)")
expect_refused(${QF_COORDINATOR} retention-days.yaml "${coordinator}${tls}retention_days: 40000\n"
  "retention-days.yaml: retention_days: 40000 is out of range 1-36500 \\(0 = 30\\)")
expect_refused(${QF_COORDINATOR} retention-logs.yaml "${coordinator}${tls}retention: {logs_days: 99999}\n"
  "retention-logs.yaml: retention.logs_days: 99999 is out of range 1-36500 \\(0 = retention_days\\)")
expect_refused(${QF_COORDINATOR} retention-interval.yaml "${coordinator}${tls}retention: {interval_hours: 200}\n"
  "retention-interval.yaml: retention.interval_hours: 200 is out of range 1-168 \\(0 = 1\\)")
expect_refused(${QF_COORDINATOR} console-dir.yaml "${coordinator}${tls}console_dir: no-console\n"
  "no-console: no index.html")
expect_refused(${QF_COORDINATOR} unknown.yaml "${coordinator}${tls}agent_lisen: 1.2.3.4:5\n"
  "unknown.yaml:[0-9]+:[0-9]+: .*unknown field \"agent_lisen\"")
expect_refused(${QF_COORDINATOR} heartbeat.yaml "${coordinator}${tls}heartbeat_interval_seconds: 99999\n"
  "heartbeat_interval_seconds: 99999 is out of range")
expect_refused(${QF_COORDINATOR} metrics-series.yaml "${coordinator}${tls}metrics: {max_task_series: 100001}\n"
  "metrics.max_task_series: 100001 is out of range 1-100000")
expect_refused(${QF_COORDINATOR} catalog-poll.yaml "${coordinator}${tls}cluster:\n  catalog_poll_interval_ms: 10\n"
  "catalog-poll.yaml: cluster.catalog_poll_interval_ms: 10 is out of range 50-60000 \\(0 = off\\)")
expect_refused(${QF_COORDINATOR} level.yaml "${coordinator}${tls}log_level: loud\n" "log_level: \"loud\" is not one of")
expect_refused(${QF_COORDINATOR} postgres-empty.yaml "${coordinator}${tls}store:\n  postgres_dsn: \"\"\n"
  "postgres-empty.yaml: store.postgres_dsn: is empty")
expect_refused(${QF_COORDINATOR} postgres-password.yaml
  "${coordinator}${tls}store:\n  postgres_dsn: host=db\n  password_file: nope.txt\n"
  "postgres-password.yaml: store.password_file: cannot read .*nope.txt: No such file or directory")
expect_refused(${QF_COORDINATOR} lease.yaml "${coordinator}${tls}cluster:\n  lease_ttl_ms: 50\n"
  "lease.yaml: cluster.lease_ttl_ms: 50 is out of range 300-60000")
expect_refused(${QF_COORDINATOR} advertise.yaml "${coordinator}${tls}cluster:\n  advertise_agent_address: nowhere\n"
  "advertise.yaml: cluster.advertise_agent_address: \"nowhere\"")
expect_refused(${QF_COORDINATOR} sqlite-password.yaml
  "${coordinator}${tls}store:\n  sqlite_path: x.db\n  password_file: certs/ca.pem\n"
  "sqlite-password.yaml: store.password_file: is for store.postgres_dsn only")
# Coordinator: a manifest that does not validate names the manifest's field.
file(WRITE ${WORK_DIR}/bad-cron.tasks.yaml
  "tasks:\n  - name: t\n    enabled: true\n    schedule: \"61 * * * *\"\n    shell:\n      argv: [\"true\"]\n")
expect_refused(${QF_COORDINATOR} bad-manifest.yaml "${coordinator}${tls}manifest_file: bad-cron.tasks.yaml\n"
  "bad-manifest.yaml: manifest_file: .*bad-cron.tasks.yaml:4:[0-9]+: tasks\\[0\\]\\.schedule.*61 is out of range")
expect_refused(${QF_COORDINATOR} missing-manifest.yaml "${coordinator}${tls}manifest_file: nope.tasks.yaml\n"
  "manifest_file: .*nope.tasks.yaml")

# Agent in connected mode.
set(agent_tls "tls:\n  ca_file: certs/ca.pem\n  cert_file: certs/agent.pem\n  key_file: certs/agent.key\n")
set(agent "agent_id: agent-1\ndata_dir: data\ncoordinators: [\"127.0.0.1:7443\"]\n")
expect_refused(${QF_AGENT} agent-no-tls.yaml "${agent}" "agent-no-tls.yaml: tls.ca_file: is required in connected mode")
expect_refused(${QF_AGENT} agent-missing-key.yaml
  "${agent}tls:\n  ca_file: certs/ca.pem\n  cert_file: certs/agent.pem\n  key_file: certs/nope.key\n"
  "tls.key_file: cannot read .*nope.key: No such file or directory")
expect_refused(${QF_AGENT} agent-address.yaml
  "agent_id: agent-1\ndata_dir: data\ncoordinators: [\"127.0.0.1:7443\", \"127.0.0.1\"]\n${agent_tls}"
  "coordinators\\[1\\]: \"127.0.0.1\": no port")
expect_refused(${QF_AGENT} agent-manifest.yaml "${agent}${agent_tls}manifest_file: tasks.yaml\n"
  "manifest_file: is for standalone mode")
expect_refused(${QF_AGENT} agent-unknown.yaml "${agent}${agent_tls}coordinator: 127.0.0.1:7443\n"
  "unknown field \"coordinator\"")
# An empty file is no certificate: its common name cannot be the agent id.
expect_refused(${QF_AGENT} agent-cn.yaml
  "data_dir: data\ncoordinators: [\"127.0.0.1:7443\"]\n${agent_tls}" "tls.cert_file: .*agent.pem")

# With real certificates (OpenSSL), the coordinator gets as far as applying its manifest: a
# task bound to a group that exists nowhere is refused with the manifest's field.
if(OPENSSL)
  set(certs ${WORK_DIR}/real-certs)
  file(MAKE_DIRECTORY ${certs})
  execute_process(COMMAND ${OPENSSL} req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
                  -keyout ${certs}/ca.key -out ${certs}/ca.pem -days 2 -subj /CN=test-ca
                  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign
                  RESULT_VARIABLE ca_status OUTPUT_QUIET ERROR_QUIET)
  execute_process(COMMAND ${OPENSSL} req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
                  -keyout ${certs}/coordinator.key -out ${certs}/coordinator.csr -subj /CN=127.0.0.1
                  RESULT_VARIABLE csr_status OUTPUT_QUIET ERROR_QUIET)
  file(WRITE ${certs}/ext.cnf "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
  execute_process(COMMAND ${OPENSSL} x509 -req -in ${certs}/coordinator.csr -CA ${certs}/ca.pem -CAkey ${certs}/ca.key
                  -CAcreateserial -out ${certs}/coordinator.pem -days 2 -extfile ${certs}/ext.cnf
                  RESULT_VARIABLE sign_status OUTPUT_QUIET ERROR_QUIET)
  if(NOT ca_status EQUAL 0 OR NOT csr_status EQUAL 0 OR NOT sign_status EQUAL 0)
    message(FATAL_ERROR "openssl could not make the test certificates")
  endif()
  file(WRITE ${WORK_DIR}/unknown-group.tasks.yaml
    "groups:\n  - name: web\ntasks:\n  - name: t\n    enabled: true\n    schedule: \"@every 5s\"\n    group_ids: [web, nowhere]\n    shell:\n      argv: [\"true\"]\n")
  file(WRITE ${WORK_DIR}/unknown-group.yaml
    "data_dir: real-data\nagent_listen: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\nagent_tls:\n  ca_file: real-certs/ca.pem\n  cert_file: real-certs/coordinator.pem\n  key_file: real-certs/coordinator.key\nmanifest_file: unknown-group.tasks.yaml\n")
  execute_process(COMMAND ${QF_COORDINATOR} --config ${WORK_DIR}/unknown-group.yaml RESULT_VARIABLE status
                  ERROR_VARIABLE err OUTPUT_VARIABLE out TIMEOUT 30)
  if(NOT status EQUAL 2 OR NOT err MATCHES "manifest_file: .*unknown-group.tasks.yaml: tasks\\[0\\]\\.group_ids\\[1\\]: no group with id or name \"nowhere\"")
    message(FATAL_ERROR "unknown group: exit ${status}, expected 2\nstdout: ${out}\nstderr: ${err}")
  endif()
endif()
