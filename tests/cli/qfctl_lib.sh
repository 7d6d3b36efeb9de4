# SPDX-License-Identifier: Apache-2.0
# What the qfctl scripts against a real qf-coordinator share (sourced): stopping the
# coordinator they started, failing with its log's last lines, running qfctl with its exit
# status checked, and matching its output. The script sets QFCTL and WORK and starts the
# coordinator itself (setting coordinator_pid), logging to coordinator.log in WORK.

coordinator_pid=
# stop_coordinator: SIGTERM, then its exit status (0 when none was running).
stop_coordinator() {
  [[ -n $coordinator_pid ]] || return 0
  kill -TERM "$coordinator_pid" 2>/dev/null || true
  local status=0
  wait "$coordinator_pid" || status=$?
  coordinator_pid=
  return "$status"
}
trap 'stop_coordinator || true' EXIT

fail() {
  printf 'FAIL: %b\n' "$*" >&2
  [[ -f coordinator.log ]] && { echo "--- coordinator.log (last lines)" >&2; tail -n 20 coordinator.log >&2; }
  exit 1
}

# run STATUS ARGS...: runs qfctl; its stdout in $out, its stderr in $err.
run() {
  local expected=$1 status=0
  shift
  out=$(timeout 20 "$QFCTL" "$@" 2>"$WORK/stderr.txt") || status=$?
  err=$(<"$WORK/stderr.txt")
  [[ $status == "$expected" ]] || fail "qfctl $*: exit $status, expected $expected\nstdout:\n$out\nstderr:\n$err"
}

# has TEXT REGEX WHAT: TEXT holds a line matching the extended regex; lacks: none does.
has() { grep -qE -- "$2" <<<"$1" || fail "$3: no line matches '$2' in:\n$1"; }
lacks() { ! grep -qE -- "$2" <<<"$1" || fail "$3: a line matches '$2' in:\n$1"; }
