#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# qfctl's alert commands against a real qf-coordinator, as a user runs them: channels from
# YAML files (secrets shown only as hints), alert rules that must name existing channels,
# silences for a while with a reason, heartbeat monitors whose token is printed once, alerts
# listed and acknowledged, and every refusal naming its field. Exit statuses, stdout and
# stderr are checked.
# Usage: qfctl_alerts.sh QFCTL QF_COORDINATOR WORK_DIR
set -euo pipefail
source "$(dirname "$0")/qfctl_lib.sh"

QFCTL=$1
COORDINATOR=$2
WORK=$3

rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
export XDG_CONFIG_HOME=$WORK/config HOME=$WORK/home
unset QF_SERVER QF_TOKEN QF_CA_FILE
ADMIN_PASSWORD=correct-horse-battery-staple

# --- a coordinator with a first admin, logged in -----------------------------------------------
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
server=http://127.0.0.1:$port
run 0 login --server "$server" --user admin --password-stdin <<<"$ADMIN_PASSWORD"
[[ $(stat -c %a data/alert-secret.key) == 600 ]] || fail "data/alert-secret.key is not mode 600"

# --- channels ---------------------------------------------------------------------------------
cat >ops.yaml <<EOF
id: ops
type: webhook
url: https://hooks.example/ops
secret:
  value: signing-key-0042
description: on-call webhook
EOF
run 0 channel create -f ops.yaml
has "$out" "^created channel ops \(webhook\)$" "channel create"
run 0 channel list
has "$out" "^ops +webhook +https://hooks.example/ops +inline …42 +no +on-call webhook$" "channel list"
lacks "$out" "signing-key" "channel list shows no secret"
run 0 channel list -o json
has "$out" '"hint": "inline …42"' "channel list -o json"
lacks "$out" "signing-key" "channel list -o json shows no secret"
printf '{"id": "mail", "type": "CHANNEL_TYPE_EMAIL", "email": {"smtp_host": "smtp.example", "to": ["ops@example.org"]}}\n' >mail.json
run 2 channel create -f mail.json
has "$err" "email.from: is required for EMAIL channels" "an e-mail channel without a sender"
printf 'id: ftp\ntype: webhook\nurl: ftp://files.example/x\n' >ftp.yaml
run 2 channel create -f ftp.yaml
has "$err" "url: \"ftp://files.example/x\": the scheme must be http:// or https://" "a channel with an ftp URL"
printf 'id: typo\ntype: webhok\n' >typo.yaml
run 2 channel create -f typo.yaml
has "$err" "type" "a channel file with an unknown type"
run 0 channel list
lacks "$out" "^(mail|ftp|typo) " "refused channels were not created"

# --- alert rules ------------------------------------------------------------------------------
cat >rule.yaml <<EOF
id: task-failed
condition: run_failed
severity: critical
channel_ids: [ops]
escalation:
  - after_seconds: 900
    channel_ids: [ops]
EOF
run 0 alert rule-create -f rule.yaml
has "$out" "^created alert rule task-failed$" "alert rule-create"
run 0 alert rules
has "$out" "^task-failed +run_failed +critical +ops +1 +no" "alert rules"
printf 'id: lost\ncondition: run_failed\nchannel_ids: [nowhere]\n' >lost.yaml
run 2 alert rule-create -f lost.yaml
has "$err" 'channel_ids\[0\]: no channel with id "nowhere"' "a rule naming an unknown channel"
run 2 channel delete ops
has "$err" "alert rules use it: task-failed" "deleting a channel a rule uses"

# --- silences ---------------------------------------------------------------------------------
run 0 silence create --rule task-failed --task nightly --for 2h --reason "database migration"
has "$out" "^created silence s-[0-9a-f]{16} until " "silence create"
silence_id=$(grep -oE 's-[0-9a-f]{16}' <<<"$out")
run 0 silence list --active
has "$out" "^$silence_id +task-failed +nightly +- +- +.* +admin +database migration$" "silence list"
run 2 silence create --task nightly --for 2x --reason x
has "$err" '--for "2x": expected a duration' "a silence with a bad duration"
run 2 silence create --for 1h --reason "nothing named"
has "$err" "rule_ids: give what it mutes" "a silence without matchers"
run 2 silence create --rule nope --for 1h --reason x
has "$err" 'rule_ids\[0\]: no alert rule with id "nope"' "a silence naming an unknown rule"
run 0 silence delete "$silence_id"
has "$out" "^deleted silence $silence_id$" "silence delete"
run 0 silence list
has "$out" "^no silences$" "silence list after delete"

# --- monitors ---------------------------------------------------------------------------------
printf 'id: backup\ncron: "0 3 * * *"\ntime_zone: Europe/Berlin\ndescription: nightly backup on db1\n' >monitor.yaml
run 0 monitor create -f monitor.yaml
has "$out" "^created monitor backup$" "monitor create"
token=$(grep -oE 'shown this once\): [A-Za-z0-9_-]{43}$' <<<"$out" | grep -oE '[A-Za-z0-9_-]{43}$') ||
  fail "monitor create printed no token:\n$out"
run 0 monitor list
has "$out" "^backup +0 3 \* \* \* \(Europe/Berlin\) +5m.* +NEW +- +no +…${token: -4} +nightly backup on db1$" "monitor list"
lacks "$out" "$token" "monitor list shows only the token's hint"
printf 'id: bad\ncron: "0 3 * * *"\ntime_zone: Mars/Olympus\n' >bad-monitor.yaml
run 2 monitor create -f bad-monitor.yaml
has "$err" "time_zone: " "a monitor in an unknown zone"
run 0 monitor delete backup
run 0 monitor list
has "$out" "^no monitors$" "monitor list after delete"

# --- alerts -----------------------------------------------------------------------------------
run 0 alert list --state firing
has "$out" "^no alerts match$" "alert list"
run 2 alert list --state burning
has "$err" '--state "burning": expected one of' "alert list with a bad state"
run 2 alert ack task-failed:task:nightly:1 --comment "on it"
has "$err" 'no alert with id "task-failed:task:nightly:1"' "ack of an unknown alert"

# --- clean up in order; every change is in the audit log ----------------------------------------
run 0 alert rule-delete task-failed
run 0 channel delete ops
run 0 channel list
has "$out" "^no channels$" "channel list after delete"
run 0 audit --target-type channel
has "$out" "channel.create" "audit of channel changes"
has "$out" "channel.delete" "audit of channel changes"
lacks "$out" "signing-key" "the audit log shows no secret"
grep -q "signing-key" coordinator.log && fail "the coordinator logged a secret"
stop_coordinator || fail "qf-coordinator did not stop cleanly"
echo "qfctl alerts: all checks passed"
