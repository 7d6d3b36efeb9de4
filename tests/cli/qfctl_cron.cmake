# SPDX-License-Identifier: Apache-2.0
# qfctl cron as a user sees it: stdout, stderr and exit status. Run with -DQFCTL=<path>.
function(run expected_status expected_stdout expected_stderr)
  execute_process(COMMAND ${QFCTL} ${ARGN} RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err)
  string(REPLACE ";" " " shown "${ARGN}")
  if(NOT status EQUAL expected_status)
    message(FATAL_ERROR "qfctl ${shown}: exit ${status}, expected ${expected_status}\nstdout: ${out}\nstderr: ${err}")
  endif()
  if(NOT "${expected_stdout}" STREQUAL "*" AND NOT out STREQUAL expected_stdout)
    message(FATAL_ERROR "qfctl ${shown}: stdout\n${out}\nexpected\n${expected_stdout}")
  endif()
  if(NOT "${expected_stderr}" STREQUAL "" AND NOT err MATCHES "${expected_stderr}")
    message(FATAL_ERROR "qfctl ${shown}: stderr\n${err}\ndoes not match ${expected_stderr}")
  endif()
endfunction()

# The fires around the US spring-forward gap, as RFC 3339 UTC instants.
run(0 "2026-03-08T07:00:00Z\n2026-03-09T06:30:00Z\n" ""
    cron next --tz America/New_York --from 2026-03-07T12:00:00Z --count 2 "30 2 * * *")
run(0 "2026-03-09T06:30:00Z\n" ""
    cron next --tz America/New_York --gap skip --from 2026-03-07T12:00:00Z --count 1 "30 2 * * *")
# The words of an expression may also come unquoted.
run(0 "2026-01-01T00:15:00Z\n" "" cron next --from 2026-01-01T00:00:00Z --count 1 */15 * * * *)
run(0 "2026-01-01T00:01:30Z\n2026-01-01T00:03:00Z\n" ""
    cron next --from 2026-01-01T00:00:00Z --count 2 "@every 90s")
# --explain shows local time, offset and the rule.
run(0 "*" "" cron next --tz America/New_York --from 2026-03-07T12:00:00Z --count 1 --explain "30 2 * * *")
execute_process(COMMAND ${QFCTL} cron next --tz America/New_York --from 2026-03-07T12:00:00Z --count 1
                --explain "30 2 * * *" OUTPUT_VARIABLE out)
if(NOT out MATCHES "^2026-03-08T07:00:00Z  2026-03-08T03:00:00-04:00 EDT  DST gap")
  message(FATAL_ERROR "--explain output unexpected: ${out}")
endif()
run(0 "At 02:00, every day\n" "" cron describe "0 2 * * *")

# Invalid input: status 2, the reason on stderr, nothing on stdout.
run(2 "" "minute: 61 is out of range 0-59" cron next "61 * * * *")
run(2 "" "Mars/Base.*not a known IANA time zone" cron next --tz Mars/Base "0 2 * * *")
run(2 "" "invalid --from" cron next --from yesterday "0 2 * * *")
run(2 "" "never fires" cron next "0 0 30 2 *")
run(2 "" "count" cron next --count 0 "0 2 * * *")
run(2 "" "" cron next)
run(2 "" "overlap" cron next --overlap sometimes "0 2 * * *")
