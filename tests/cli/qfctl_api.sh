#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# qfctl against a real qf-coordinator through its admin API, as a user runs it: login, task
# apply (dry run, create, unchanged), lists as JSON, trigger, executions, API tokens from
# QF_TOKEN, a viewer refused a delete, bad task files naming the field, edit, the audit log,
# logout, then HTTPS with the cluster CA. Exit statuses, stdout and stderr are checked.
# Usage: qfctl_api.sh QFCTL QF_COORDINATOR SAMPLE_MANIFEST WORK_DIR
set -euo pipefail
source "$(dirname "$0")/qfctl_lib.sh"

QFCTL=$1
COORDINATOR=$2
MANIFEST=$3
WORK=$4

rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
# Nothing of the caller's: config file, token and server stay inside the work directory.
export XDG_CONFIG_HOME=$WORK/config HOME=$WORK/home
unset QF_SERVER QF_TOKEN QF_CA_FILE VISUAL EDITOR
ADMIN_PASSWORD=correct-horse-battery-staple
VIEWER_PASSWORD=viewer-password-1234

# start_coordinator SCHEME: starts it and sets $server from its log (ports chosen by the kernel).
start_coordinator() {
  "$COORDINATOR" --config coordinator.yaml >coordinator.log 2>&1 &
  coordinator_pid=$!
  local port=
  for _ in $(seq 100); do
    port=$(grep -oE "admin API on $1://127\.0\.0\.1:[0-9]+" coordinator.log | grep -oE '[0-9]+$' || true)
    [[ -n $port ]] && break
    kill -0 "$coordinator_pid" 2>/dev/null || fail "qf-coordinator exited at start"
    sleep 0.1
  done
  [[ -n $port ]] || fail "qf-coordinator did not report its admin API address"
  server=$1://127.0.0.1:$port
}

# --- a coordinator with a first admin ------------------------------------------------------
run 0 certs init --dir certs
run 0 certs issue --dir certs --coordinator 127.0.0.1
cat >coordinator.yaml <<EOF
data_dir: data
agent_listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
agent_tls:
  ca_file: certs/ca.pem
  cert_file: certs/coordinator-127.0.0.1.pem
  key_file: certs/coordinator-127.0.0.1.key
log_level: info
EOF
QF_ADMIN_PASSWORD=$ADMIN_PASSWORD timeout 20 "$COORDINATOR" --config coordinator.yaml --init-admin admin >init.log 2>&1 ||
  fail "--init-admin failed: $(cat init.log)"
start_coordinator http

# --- login --------------------------------------------------------------------------------
run 2 task ls --server "$server"
has "$err" "authentication required" "task ls without a token"
has "$err" "qfctl login" "task ls without a token: the hint"
run 2 login --server "$server" --user admin --password-stdin <<<"wrong-password-0000"
run 0 login --server "$server" --user admin --password-stdin <<<"$ADMIN_PASSWORD"
has "$out" "^logged in to $server as admin \(admin\)" "login"
config_file=$XDG_CONFIG_HOME/quartzflow/qfctl.yaml
[[ $(stat -c %a "$config_file") == 600 ]] || fail "$config_file has mode $(stat -c %a "$config_file"), expected 600"
has "$(cat "$config_file")" "^server: $server$" "the config file's server"
has "$(cat "$config_file")" "^token: qfs_" "the config file's session token"
# The file's token belongs to the file's server: another server (by name) does not get it.
run 2 task ls --server "http://localhost:${server##*:}"
has "$err" "no token was sent" "the config file's token sent to another server"

# --- apply: dry run, create, unchanged -----------------------------------------------------
run 0 task apply -f "$MANIFEST" --dry-run
has "$out" "^\+ group demo$" "apply --dry-run"
has "$out" "^\+ task report$" "apply --dry-run"
has "$out" "^dry run: 4 to create, 0 to change, 0 unchanged; nothing was changed$" "apply --dry-run"
run 0 task ls
has "$out" "^no tasks match$" "task ls after a dry run"
run 0 task apply -f "$MANIFEST"
has "$out" "^\+ task heartbeat-file created$" "apply"
has "$out" "^applied: 4 created, 0 changed, 0 unchanged$" "apply"
run 0 task apply -f "$MANIFEST"
has "$out" "^= task reindex unchanged$" "apply again"
has "$out" "^applied: 0 created, 0 changed, 4 unchanged$" "apply again"

run 0 task ls -o json
for name in heartbeat-file report reindex; do has "$out" "\"name\": \"$name\"" "task ls -o json"; done
has "$out" "\"total\": \"3\"" "task ls -o json"
run 0 task ls --enabled --group demo
has "$out" "^report +report +yes +\*/10 \* \* \* \* \* " "task ls (table)"
run 0 task get report -o yaml
has "$out" "^  name: report$" "task get -o yaml"
run 0 group ls
has "$out" "^demo +demo +0 +0 +3 " "group ls"

# --- trigger and executions -----------------------------------------------------------------
run 0 task trigger report --param region=test --reason "qfctl test"
has "$out" "^report:[0-9]+$" "task trigger"
execution_id=$out
run 0 exec ls --task report
has "$out" "^$execution_id +report " "exec ls"
run 0 exec get "$execution_id"
has "$out" "^param region: +test$" "exec get"
run 2 task trigger report --param region
has "$err" "expected NAME=VALUE" "trigger with a bad --param"
run 2 task trigger report --agent ghost
has "$err" 'agent_ids\[0\]: agent "ghost" is not online' "trigger on an agent that is not online"
run 2 exec retry "$execution_id"
has "$err" "no agent of the task's groups is online" "retry of a run that reached no agent, with none online"

# --- batch, agent delete ------------------------------------------------------------------------
run 2 task batch disable reindex ghost
has "$err" 'task_ids\[1\]: no task with id "ghost"' "task batch with an unknown id"
run 0 task get reindex -o json
has "$out" '"enabled": true' "a refused batch changes nothing"
run 0 task batch disable reindex
has "$out" "^disabled task reindex$" "task batch disable"
run 0 task batch enable reindex
has "$out" "^enabled task reindex$" "task batch enable"
run 2 task batch pause reindex
run 2 agent delete nobody
has "$err" 'no agent with id "nobody"' "agent delete of an unknown agent"

# --- API tokens --------------------------------------------------------------------------------
run 0 token create ci --role operator --expires 1d
has "$out" "^qf_" "token create"
token=$out
has "$err" "shown only once" "token create"
# From the environment alone, without a config file.
XDG_CONFIG_HOME=$WORK/no-config QF_SERVER=$server QF_TOKEN=$token run 0 task disable heartbeat-file
has "$out" "^disabled task heartbeat-file" "task disable with QF_TOKEN"
QF_TOKEN=$token run 0 token ls
has "$out" " ci +operator " "token ls with QF_TOKEN"

# --- a viewer may read, not delete -----------------------------------------------------------
run 0 user create vera --role viewer --password-stdin <<<"$VIEWER_PASSWORD"
has "$out" "^created user vera \(viewer" "user create"
XDG_CONFIG_HOME=$WORK/vera run 0 login --server "$server" --user vera --password-stdin <<<"$VIEWER_PASSWORD"
XDG_CONFIG_HOME=$WORK/vera run 0 task ls
XDG_CONFIG_HOME=$WORK/vera run 2 task rm report
has "$err" "permission denied" "a viewer's task rm"
run 0 task get report

# --- bad task files name the field ----------------------------------------------------------
printf 'name: bad\nenabled: true\nschedule: "61 * * * *"\nshell:\n  argv: ["true"]\n' >bad-cron.yaml
run 2 task create -f bad-cron.yaml
has "$err" "schedule\.cron\.minute: 61 is out of range 0-59" "task create with a bad cron"
printf 'name: bad\nenabled: true\nschedul: "1 * * * *"\nshell:\n  argv: ["true"]\n' >bad-key.yaml
run 2 task create -f bad-key.yaml
has "$err" "bad-key\.yaml:3:1: unknown field \"schedul\"; did you mean \"schedule\"\?" "task create with a typo"
printf 'tasks:\n  - name: t\n    enabled: true\n    schedule: "@every 0s"\n    shell:\n      argv: ["true"]\n' >bad-manifest.yaml
run 2 task apply -f bad-manifest.yaml
has "$err" "bad-manifest\.yaml:4:[0-9]+: tasks\[0\]\.schedule" "task apply with a bad manifest"
run 0 task ls -o json
has "$out" "\"total\": \"3\"" "no task created by the bad files"

# --- edit, and apply puts the manifest back -------------------------------------------------------
EDITOR="sed -i -e s/timeout_seconds:.10/timeout_seconds:\ 20/" run 0 task edit report
has "$out" "^updated task report \(report, revision 2\)" "task edit"
run 0 task apply -f "$MANIFEST" --dry-run
has "$out" "^~ task report$" "apply --dry-run after an edit"
has "$out" "^    timeout_seconds: 20 -> 10$" "apply --dry-run after an edit"
has "$out" "^dry run: 0 to create, 2 to change, 2 unchanged" "apply --dry-run after an edit (heartbeat-file was disabled)"

# --- the audit log shows the changes --------------------------------------------------------------
run 0 audit --page-size 100
for action in group.create task.create task.trigger token.create user.create task.update access.denied; do
  has "$out" " $action " "audit"
done
has "$out" "admin \(token ci\) +task.disable +task heartbeat-file" "audit: the change made with the token"
run 0 audit --action task.trigger -o json
has "$out" "qfctl test; executions: $execution_id" "audit --action -o json"

# --- failures: unreachable server, unknown object ---------------------------------------------
run 1 task ls --server http://127.0.0.1:1
has "$err" "cannot reach the coordinator at http://127.0.0.1:1 \(GET /api/v1/tasks\): connect: " "unreachable"
run 2 task get no-such-task
has "$err" "no task with id \"no-such-task\"" "task get of an unknown task"

# --- logout ----------------------------------------------------------------------------------
run 0 logout
lacks "$(cat "$config_file")" "^token:" "the config file after logout"
run 2 task ls
has "$err" "authentication required" "task ls after logout"

# --- HTTPS with the cluster CA ---------------------------------------------------------------------
stop_coordinator || fail "qf-coordinator did not exit cleanly on SIGTERM"
cat >>coordinator.yaml <<EOF
admin_tls:
  cert_file: certs/coordinator-127.0.0.1.pem
  key_file: certs/coordinator-127.0.0.1.key
EOF
start_coordinator https
run 1 task ls --server "$server" --token "$token"
has "$err" "certificate did not verify" "HTTPS without the CA"
run 0 task ls --server "$server" --token "$token" --insecure
has "$err" "warning: --insecure" "HTTPS with --insecure"
run 0 login --server "$server" --ca-file certs/ca.pem --user admin --password-stdin <<<"$ADMIN_PASSWORD"
has "$(cat "$config_file")" "^ca_file: $WORK/certs/ca.pem$" "the config file's CA file"
run 0 task get report
has "$out" "^name: +report$" "task get over HTTPS"
run 1 task ls --server "https://localhost:${server##*:}" --ca-file certs/ca.pem --token "$token"
has "$err" "not valid for \"localhost\"" "HTTPS with a name the certificate does not hold"

stop_coordinator || fail "qf-coordinator did not exit cleanly on SIGTERM"
echo "qfctl.api: all checks passed"
