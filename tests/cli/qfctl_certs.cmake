# SPDX-License-Identifier: Apache-2.0
# qfctl certs as a user runs it: files written, `openssl verify` of the results, error exits.
# Run with -DQFCTL=<path> -DWORK_DIR=<scratch dir> [-DOPENSSL=<openssl binary>].
function(run expected_status expected_stdout expected_stderr)
  execute_process(COMMAND ${QFCTL} ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REPLACE ";" " " shown "${ARGN}")
  if(NOT status EQUAL expected_status)
    message(FATAL_ERROR "qfctl ${shown}: exit ${status}, expected ${expected_status}\nstdout: ${out}\nstderr: ${err}")
  endif()
  if(NOT "${expected_stdout}" STREQUAL "*")  # CMake's if() does not short-circuit: "*" is no regex
    if(NOT out MATCHES "${expected_stdout}")
      message(FATAL_ERROR "qfctl ${shown}: stdout\n${out}\ndoes not match ${expected_stdout}")
    endif()
  endif()
  if(NOT "${expected_stderr}" STREQUAL "" AND NOT err MATCHES "${expected_stderr}")
    message(FATAL_ERROR "qfctl ${shown}: stderr\n${err}\ndoes not match ${expected_stderr}")
  endif()
  if(expected_status EQUAL 0 AND NOT err STREQUAL "")
    message(FATAL_ERROR "qfctl ${shown}: unexpected stderr\n${err}")
  endif()
  if(NOT expected_status EQUAL 0 AND NOT out STREQUAL "")
    message(FATAL_ERROR "qfctl ${shown}: failed but printed on stdout\n${out}")
  endif()
endfunction()

function(expect_files)
  file(GLOB present RELATIVE "${dir}" "${dir}/*" "${dir}/.*")
  list(SORT present)
  set(expected ${ARGN})
  list(SORT expected)
  if(NOT present STREQUAL expected)
    message(FATAL_ERROR "files in ${dir}: ${present}\nexpected: ${expected}")
  endif()
endfunction()

function(verify purpose cert)
  if(NOT OPENSSL)
    return()
  endif()
  execute_process(COMMAND ${OPENSSL} verify -CAfile "${dir}/ca.pem" -purpose ${purpose} "${cert}"
                  RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT status EQUAL 0 OR NOT out MATCHES ": OK")
    message(FATAL_ERROR "openssl verify ${cert}: ${status}\n${out}${err}")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
set(dir "${WORK_DIR}/pki")

# init: the CA pair, one path a line, then how to go on.
run(0 "^${dir}/ca.pem\n${dir}/ca.key\nnext: qfctl certs issue --dir ${dir} " "" certs init --dir ${dir})
expect_files(ca.key ca.pem)
run(1 "" "ca.pem already exists.*--force" certs init --dir ${dir})
run(0 "^${dir}/ca.pem\n${dir}/ca.key\n" "" certs init --dir ${dir} --force --days 7300)

# An agent and a coordinator on loopback.
run(0 "^${dir}/agent-worker-1.pem\n${dir}/agent-worker-1.key\nagent config: tls: .*\"worker-1\"\n$" ""
    certs issue --dir ${dir} --agent worker-1)
run(0 "^${dir}/coordinator-127.0.0.1.pem\n${dir}/coordinator-127.0.0.1.key\ncoordinator config: agent_tls: " ""
    certs issue --dir ${dir} --coordinator 127.0.0.1 --san localhost --san ::1 --days 30)
expect_files(agent-worker-1.key agent-worker-1.pem ca.key ca.pem coordinator-127.0.0.1.key coordinator-127.0.0.1.pem)
verify(sslclient "${dir}/agent-worker-1.pem")
verify(sslserver "${dir}/coordinator-127.0.0.1.pem")
if(OPENSSL)
  execute_process(COMMAND ${OPENSSL} x509 -in "${dir}/coordinator-127.0.0.1.pem" -noout -subject -ext subjectAltName
                  OUTPUT_VARIABLE out)
  if(NOT out MATCHES "CN *= *127\\.0\\.0\\.1" OR NOT out MATCHES "IP Address:127\\.0\\.0\\.1"
     OR NOT out MATCHES "DNS:localhost" OR NOT out MATCHES "IP Address:0:0:0:0:0:0:0:1")
    message(FATAL_ERROR "coordinator certificate subject/SAN unexpected:\n${out}")
  endif()
  # A certificate of another CA does not verify.
  run(0 "*" "" certs init --dir ${WORK_DIR}/other)
  run(0 "*" "" certs issue --dir ${WORK_DIR}/other --agent worker-1)
  execute_process(COMMAND ${OPENSSL} verify -CAfile "${dir}/ca.pem" "${WORK_DIR}/other/agent-worker-1.pem"
                  RESULT_VARIABLE status OUTPUT_QUIET ERROR_QUIET)
  if(status EQUAL 0)
    message(FATAL_ERROR "a certificate of another CA verified against ${dir}/ca.pem")
  endif()
endif()

# Bad input: status 2, the flag and the reason on stderr, nothing written.
run(2 "" "agent: \"a b\" must be 1-253 printable ASCII characters without spaces or '/'"
    certs issue --dir ${dir} --agent "a b")
run(2 "" "coordinator: \"coord:4433\" must be an IPv4 or IPv6 address or a DNS name"
    certs issue --dir ${dir} --coordinator coord:4433)
run(2 "" "san: \"bad name\" must be" certs issue --dir ${dir} --coordinator 127.0.0.1 --san "bad name")
run(2 "" "days: 0 is out of range 1-36500" certs issue --dir ${dir} --agent worker-2 --days 0)
run(2 "" "days: 40000 is out of range 1-36500" certs init --dir ${WORK_DIR}/never --days 40000)
run(2 "" "exactly one of --agent NAME or --coordinator HOST" certs issue --dir ${dir})
run(2 "" "exactly one of --agent NAME or --coordinator HOST"
    certs issue --dir ${dir} --agent worker-2 --coordinator 127.0.0.1)
run(2 "" "--dir" certs issue --agent worker-2)
expect_files(agent-worker-1.key agent-worker-1.pem ca.key ca.pem coordinator-127.0.0.1.key coordinator-127.0.0.1.pem)
if(EXISTS "${WORK_DIR}/never")
  message(FATAL_ERROR "a refused init created ${WORK_DIR}/never")
endif()

# No CA yet: the file and the command that creates it.
run(1 "" "empty/ca.pem does not exist: create the cluster CA first with `qfctl certs init --dir "
    certs issue --dir ${WORK_DIR}/empty --agent worker-1)
