#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A crontab imported and applied to a real qf-coordinator: `qfctl import crontab` then `task
# apply` (created, then unchanged); the MAILTO e-mail channel and alert rule the manifest
# suggests are created as written; the crontab loses a job and `apply --prune --selector`
# deletes its task (shown first by --dry-run) and nothing outside the selector; --prune
# without a scope is refused.
# Usage: apply.sh QFCTL QF_COORDINATOR WORK_DIR
set -euo pipefail
source "$(dirname "$0")/../qfctl_lib.sh"

QFCTL=$1
COORDINATOR=$2
WORK=$3
HERE=$(cd "$(dirname "$0")" && pwd)

rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
export XDG_CONFIG_HOME=$WORK/config HOME=$WORK/home
unset QF_SERVER QF_TOKEN QF_CA_FILE
ADMIN_PASSWORD=correct-horse-battery-staple

run 0 certs init --dir certs
run 0 certs issue --dir certs --coordinator 127.0.0.1
cat >coordinator.yaml <<YAML
data_dir: data
agent_listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
agent_tls:
  ca_file: certs/ca.pem
  cert_file: certs/coordinator-127.0.0.1.pem
  key_file: certs/coordinator-127.0.0.1.key
YAML
QF_ADMIN_PASSWORD=$ADMIN_PASSWORD timeout 20 "$COORDINATOR" --config coordinator.yaml --init-admin admin >init.log 2>&1 ||
  fail "--init-admin failed: $(cat init.log)"
"$COORDINATOR" --config coordinator.yaml >coordinator.log 2>&1 &
coordinator_pid=$!
port=
for _ in $(seq 100); do
  port=$(grep -oE "admin API on http://127\.0\.0\.1:[0-9]+" coordinator.log | grep -oE '[0-9]+$' || true)
  [[ -n $port ]] && break
  kill -0 "$coordinator_pid" 2>/dev/null || fail "qf-coordinator exited at start"
  sleep 0.1
done
[[ -n $port ]] || fail "qf-coordinator did not report its admin API address"
run 0 login --server "http://127.0.0.1:$port" --user admin --password-stdin <<<"$ADMIN_PASSWORD"

# Another team's task in the same group, which no prune of the crontab's may touch.
cat >others.yaml <<'YAML'
groups:
  - name: workstations
tasks:
  - name: other-team-report
    schedule: "0 7 * * *"
    shell: {script: "echo report"}
    group_ids: [workstations]
YAML
run 0 task apply -f others.yaml

# --- import and apply ------------------------------------------------------------------------
run 0 import crontab "$HERE/alice.crontab" --user alice --group workstations -o alice.yaml
has "$err" "alice.crontab: 8 task\(s\) imported \(user format\)" "import"
run 0 task apply -f alice.yaml --dry-run
has "$out" "^\+ task pg-dump$" "apply --dry-run"
has "$out" "^dry run: 8 to create, 0 to change, 0 unchanged; nothing was changed$" "apply --dry-run"
run 0 task apply -f alice.yaml
has "$out" "^applied: 8 created, 0 changed, 0 unchanged$" "apply"
run 0 task apply -f alice.yaml
has "$out" "^applied: 0 created, 0 changed, 8 unchanged$" "apply again"
run 0 task get start-tunnel -o json
has "$out" '"agent_start": \{\}' "the @reboot task's schedule"
run 0 task get pg-dump -o json
has "$out" '"time_zone": "Europe/Paris"' "CRON_TZ as the zone"
has "$out" '"interpreter": \[' "SHELL as the interpreter"
has "$out" '"run_as_user": "alice"' "--user"
has "$out" '"crontab": "alice-crontab"' "the crontab label"
has "$out" '"crontab-mailto": "crontab-mail-alice-example-com"' "the MAILTO label"

# --- MAILTO: the channel and the rule, as the manifest's comments write them -----------------
sed -n 's/^#   //p' alice.yaml | sed -e 's/SMTP_HOST/127.0.0.1/' -e 's/SENDER_ADDRESS/cron@example.com/' >mail.sh
grep -q "qfctl channel create" mail.sh || fail "no channel command in the manifest's MAILTO comment:\n$(cat alice.yaml)"
PATH="$(dirname "$QFCTL"):$PATH" bash -e mail.sh >mail.out 2>&1 || fail "the MAILTO commands failed:\n$(cat mail.sh)\n$(cat mail.out)"
run 0 channel list
has "$out" "crontab-mail-alice-example-com" "the MAILTO channel"
run 0 alert rules
has "$out" "crontab-mail-alice-example-com" "the MAILTO rule"

# --- the crontab loses its @weekly and @reboot jobs: prune ----------------------------------
grep -v -e '^@weekly' -e '^@reboot' -e '^# Keep the tunnel' "$HERE/alice.crontab" >alice-smaller.crontab
run 2 task apply -f alice.yaml --prune
has "$err" "--prune: needs --selector" "--prune without a scope"
# The label names the crontab by its file name: the smaller one under the same name.
cp alice-smaller.crontab alice.crontab
run 0 import crontab alice.crontab --user alice --group workstations -o alice.yaml
run 0 task apply -f alice.yaml --prune --selector crontab=alice-crontab --dry-run
has "$out" "^- task start-tunnel$" "prune --dry-run"
has "$out" "^- task gc-images$" "prune --dry-run"
has "$out" "^dry run: 0 to create, 0 to change, 6 unchanged, 2 to delete; nothing was changed$" "prune --dry-run"
run 0 task get start-tunnel -o json
run 0 task apply -f alice.yaml --prune --selector crontab=alice-crontab
has "$out" "^- task start-tunnel deleted$" "prune"
has "$out" "^applied: 0 created, 0 changed, 6 unchanged, 2 deleted$" "prune"
run 2 task get start-tunnel
run 0 task get other-team-report
# Scoped by group: the other team's task is in the group, but the manifest's tasks are
# listed; only tasks of the group that it does not list would go, so --dry-run shows it.
run 0 task apply -f alice.yaml --prune --prune-group workstations --dry-run
has "$out" "^- task other-team-report$" "prune by group"
has "$out" "6 unchanged, 1 to delete" "prune by group"
run 0 task get other-team-report
echo "crontab apply test passed"
