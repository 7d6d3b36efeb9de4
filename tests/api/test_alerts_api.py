# SPDX-License-Identifier: Apache-2.0
# The alerts admin API against a running qf-coordinator: rules, channels, silences and
# monitors (create, read, list, replace, delete), alerts (list, read, acknowledge) and
# deliveries (list); every bad input named with its field and reason and writing nothing,
# secrets never shown, the viewer and operator roles, and the audit trail.
import os
import sqlite3
import stat
import time

import pytest

from conftest import wait_for

HOUR_MS = 3600 * 1000


def now_ms():
    return int(time.time() * 1000)


def violations(r):
    """{field: reason} of a refused request."""
    return {d["field"]: d["reason"] for d in r.json.get("details", [])}


def audit_of(admin, target_id):
    return admin.get(f"/api/v1/audit?target_id={target_id}&page_size=100").data["items"]


@pytest.fixture(scope="module")
def alert_viewer(admin, anonymous):
    r = admin.post("/api/v1/users", {"user": {"username": "alert-viewer", "role": "ROLE_VIEWER"},
                                     "password": "viewer password 2"})
    assert r.status == 201, r
    login = anonymous.post("/api/v1/auth/login", {"username": "alert-viewer", "password": "viewer password 2"})
    return anonymous.with_token(login.data["session_token"])


@pytest.fixture(scope="module")
def alert_operator(admin, anonymous):
    r = admin.post("/api/v1/users", {"user": {"username": "alert-operator", "role": "ROLE_OPERATOR"},
                                     "password": "operator password 2"})
    assert r.status == 201, r
    login = anonymous.post("/api/v1/auth/login", {"username": "alert-operator", "password": "operator password 2"})
    return anonymous.with_token(login.data["session_token"])


@pytest.fixture(scope="module")
def ops_channel(alert_operator):
    body = {"id": "ops-hook", "type": "CHANNEL_TYPE_WEBHOOK", "url": "https://hooks.example/ops",
            "secret": {"value": "webhook-signing-key-42"}}
    r = alert_operator.post("/api/v1/channels", body)
    assert r.status == 201, r
    return r.data


def test_channels_store_inline_secrets_encrypted_and_never_show_them(admin, alert_operator, ops_channel, cluster):
    assert ops_channel["secret"] == {"value": "", "file": "", "env": "", "set": True, "hint": "inline …42",
                                     "sealed": ""}
    for r in (admin.get("/api/v1/channels/ops-hook", pattern="/api/v1/channels/{id}"),
              admin.get("/api/v1/channels")):
        assert r.status == 200, r
        assert "webhook-signing-key" not in r.body and "v1:" not in r.body
    # Not in the database in clear either (SQLite: the store's file).
    db = os.path.join(cluster.dir, "data", "coordinator.db")
    if os.path.exists(db):
        with open(db, "rb") as f:
            assert b"webhook-signing-key-42" not in f.read()
    # The key the coordinator made at its first start: 0600 in its data directory.
    key = os.path.join(cluster.dir, "data", "alert-secret.key")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    # Nor in the audit trail or the coordinator's log.
    assert "webhook-signing-key" not in str(audit_of(admin, "ops-hook"))
    assert "webhook-signing-key" not in cluster.log("coordinator")

    # A replace without the secret keeps it; with file/env it is replaced and shown as such.
    kept = alert_operator.put("/api/v1/channels/ops-hook", {"type": "CHANNEL_TYPE_WEBHOOK",
                                                          "url": "https://hooks.example/ops2", "secret": {}},
                              pattern="/api/v1/channels/{id}")
    assert kept.status == 200, kept
    assert kept.data["secret"]["hint"] == "inline …42" and kept.data["url"] == "https://hooks.example/ops2"
    env = alert_operator.put("/api/v1/channels/ops-hook", {"type": "CHANNEL_TYPE_WEBHOOK",
                                                         "url": "https://hooks.example/ops",
                                                         "secret": {"env": "QF_OPS_HOOK_KEY"}})
    assert env.data["secret"]["hint"] == "env QF_OPS_HOOK_KEY" and env.data["secret"]["set"] is True
    back = alert_operator.put("/api/v1/channels/ops-hook", dict(ops_channel, secret={"value": "webhook-signing-key-42"},
                                                                created_unix_ms="0", updated_unix_ms="0"))
    assert back.status == 200, back

    email = {"id": "ops-mail", "type": "CHANNEL_TYPE_EMAIL",
             "email": {"smtp_host": "smtp.example", "from": "qf@example.org", "to": ["ops@example.org"],
                       "username": "qf", "password": {"value": "smtp-password-99"}}}
    r = alert_operator.post("/api/v1/channels", email)
    assert r.status == 201, r
    assert r.data["email"]["password"]["hint"] == "inline …99" and "smtp-password" not in r.body
    listed = admin.get("/api/v1/channels").data
    assert [c["id"] for c in listed["items"]] == ["ops-hook", "ops-mail"] and listed["total"] == "2"
    assert "smtp-password" not in str(listed)


def test_bad_channels_are_refused_naming_each_field_and_nothing_is_written(alert_operator, admin):
    cases = [
        ({"id": "c1", "type": "CHANNEL_TYPE_WEBHOOK", "url": "ftp://files.example/x"}, "url", "http:// or https://"),
        ({"id": "c2", "type": "CHANNEL_TYPE_SLACK"}, "url", "is required for SLACK"),
        ({"id": "c3", "type": "CHANNEL_TYPE_EMAIL", "email": {"to": ["ops@example.org"]}}, "email.smtp_host",
         "is required"),
        ({"id": "c4", "type": "CHANNEL_TYPE_EMAIL", "email": {"smtp_host": "smtp.example", "to": ["a@b.c"]}},
         "email.from", "is required"),
        ({"id": "c5", "type": "CHANNEL_TYPE_EMAIL", "email": {"smtp_host": "smtp.example", "from": "q@e.org"}},
         "email.to", "at least one recipient"),
        ({"id": "c6", "type": "CHANNEL_TYPE_PAGERDUTY"}, "secret", "routing"),
        ({"id": "c7"}, "type", "is required"),
        ({"id": "bad id!", "type": "CHANNEL_TYPE_WEBHOOK", "url": "https://x.example"}, "id", "letters, digits"),
        ({"id": "c8", "type": "CHANNEL_TYPE_WEBHOOK", "url": "https://x.example",
          "secret": {"value": "a", "env": "B"}}, "secret", "one of value, file and env"),
        ({"id": "c9", "type": "CHANNEL_TYPE_WEBHOOK", "url": "https://x.example", "secret": {"file": "relative"}},
         "secret.file", "absolute path"),
        ({"id": "c10", "type": "CHANNEL_TYPE_WECOM", "url": "https://x.example", "language": "fr"}, "language",
         "en or zh"),
    ]
    before = admin.get("/api/v1/channels").data["total"]
    for body, field, reason in cases:
        r = alert_operator.post("/api/v1/channels", body)
        assert r.status == 400, (body, r)
        assert field in violations(r), (body, r)
        assert reason in violations(r)[field], (body, r)
        assert r.json["message"].startswith("invalid channel: "), r
    assert admin.get("/api/v1/channels").data["total"] == before
    # The refusal is audited (without writing the channel), just after the answer.
    wait_for(lambda: any(e["action"] == "channel.create" and not e["success"] for e in audit_of(admin, "c1")), 10,
             "the refusal's audit entry")
    dup = alert_operator.post("/api/v1/channels", {"id": "ops-hook", "type": "CHANNEL_TYPE_WEBHOOK",
                                                   "url": "https://x.example"})
    assert dup.status == 409, dup


def test_rules_check_their_channels_and_escalation_and_are_audited(alert_operator, admin, ops_channel):
    rule = {"id": "task-failed", "description": "any run failing", "condition": "ALERT_CONDITION_RUN_FAILED",
            "channel_ids": ["ops-hook"],
            "escalation": [{"after_seconds": 600, "channel_ids": ["ops-hook"]},
                           {"after_seconds": 1800, "channel_ids": ["ops-hook"]}]}
    created = alert_operator.post("/api/v1/alert-rules", rule)
    assert created.status == 201, created
    assert created.data["created_unix_ms"] != "0"
    got = admin.get("/api/v1/alert-rules/task-failed", pattern="/api/v1/alert-rules/{id}")
    assert got.data["escalation"][1]["after_seconds"] == 1800

    bad = [
        (dict(rule, id="r1", channel_ids=["nowhere"]), "channel_ids[0]", 'no channel with id "nowhere"'),
        (dict(rule, id="r2", channel_ids=[]), "channel_ids", "at least one channel"),
        (dict(rule, id="r3", escalation=[{"after_seconds": 600, "channel_ids": ["ops-hook"]},
                                         {"after_seconds": 300, "channel_ids": ["ops-hook"]}]),
         "escalation[1].after_seconds", "does not increase"),
        (dict(rule, id="r4", escalation=[{"after_seconds": 60, "channel_ids": ["gone"]}]),
         "escalation[0].channel_ids[0]", 'no channel with id "gone"'),
        (dict(rule, id="r5", condition="ALERT_CONDITION_UNSPECIFIED"), "condition", "is required"),
        (dict(rule, id="r6", condition="ALERT_CONDITION_NO_SUCCESS_WITHIN"), "no_success_within_seconds",
         "is required"),
        (dict(rule, id="r7", condition="ALERT_CONDITION_DURATION_ABOVE"), "duration_above_seconds",
         "duration_p95_factor"),
        (dict(rule, id="r8", scope={"task_label_selector": "team"}), "scope.task_label_selector", "key=value"),
    ]
    for body, field, reason in bad:
        r = alert_operator.post("/api/v1/alert-rules", body)
        assert r.status == 400, (body, r)
        assert reason in violations(r).get(field, ""), (field, r)
    listed = admin.get("/api/v1/alert-rules").data
    assert [x["id"] for x in listed["items"]] == ["task-failed"]

    replaced = alert_operator.put("/api/v1/alert-rules/task-failed", dict(rule, description="changed", escalation=[]),
                                  pattern="/api/v1/alert-rules/{id}")
    assert replaced.status == 200 and replaced.data["description"] == "changed"
    assert replaced.data["created_unix_ms"] == created.data["created_unix_ms"]
    mismatch = alert_operator.put("/api/v1/alert-rules/task-failed", dict(rule, id="other"))
    assert mismatch.status == 400 and "id" in violations(mismatch)
    # A channel a rule uses cannot be deleted.
    in_use = alert_operator.delete("/api/v1/channels/ops-hook", pattern="/api/v1/channels/{id}")
    assert in_use.status == 409 and "task-failed" in in_use.json["message"], in_use
    actions = [(e["action"], e["success"]) for e in audit_of(admin, "task-failed")]
    assert ("alert_rule.create", True) in actions and ("alert_rule.update", True) in actions
    entry = next(e for e in audit_of(admin, "task-failed") if e["action"] == "alert_rule.create")
    assert entry["actor"] == "alert-operator"


def test_silences_need_matchers_an_end_and_a_reason(alert_operator, admin):
    r = alert_operator.post("/api/v1/silences", {})
    assert r.status == 400
    v = violations(r)
    assert "rule_ids" in v and "ends_unix_ms" in v and "reason" in v, v
    past = alert_operator.post("/api/v1/silences", {"task_ids": ["t1"], "ends_unix_ms": str(now_ms() - 1000),
                                                    "reason": "too late"})
    assert "is in the past" in violations(past).get("ends_unix_ms", ""), past
    unknown_rule = alert_operator.post("/api/v1/silences", {"rule_ids": ["nope"], "ends_unix_ms": str(now_ms() + HOUR_MS),
                                                            "reason": "x"})
    assert 'no alert rule with id "nope"' in violations(unknown_rule).get("rule_ids[0]", ""), unknown_rule
    assert admin.get("/api/v1/silences").data["total"] == "0"

    ends = now_ms() + 2 * HOUR_MS
    created = alert_operator.post("/api/v1/silences", {"rule_ids": ["task-failed"], "task_ids": ["nightly"],
                                                       "ends_unix_ms": str(ends), "reason": "database migration"})
    assert created.status == 201, created
    sid = created.data["id"]
    assert created.data["created_by"] == "alert-operator" and created.data["starts_unix_ms"] != "0"
    assert admin.get(f"/api/v1/silences/{sid}", pattern="/api/v1/silences/{id}").data["reason"] == "database migration"
    active = admin.get("/api/v1/silences?active=true").data
    assert [s["id"] for s in active["items"]] == [sid]
    shorter = alert_operator.put(f"/api/v1/silences/{sid}", dict(created.data, ends_unix_ms=str(now_ms() + 60_000)),
                                 pattern="/api/v1/silences/{id}")
    assert shorter.status == 200, shorter
    assert shorter.data["created_by"] == "alert-operator"
    # Deleting a silence lets notifications through again; it is audited.
    assert alert_operator.delete(f"/api/v1/silences/{sid}", pattern="/api/v1/silences/{id}").status == 200
    assert admin.get(f"/api/v1/silences/{sid}").status == 404
    assert [e["action"] for e in audit_of(admin, sid)].count("silence.delete") == 1


def test_monitors_show_their_token_once_and_check_the_schedule(alert_operator, admin):
    created = alert_operator.post("/api/v1/monitors", {"id": "backup-job", "cron": "0 3 * * *",
                                                       "time_zone": "Europe/Berlin", "grace_seconds": 600})
    assert created.status == 201, created
    token = created.data["token"]
    assert len(token) == 43 and "=" not in token and "+" not in token and "/" not in token
    assert created.data["status"] == "NEW"
    got = admin.get("/api/v1/monitors/backup-job", pattern="/api/v1/monitors/{id}").data
    assert got["token"] == "…" + token[-4:]
    assert token not in admin.get("/api/v1/monitors").body
    assert token not in str(audit_of(admin, "backup-job"))
    replaced = alert_operator.put("/api/v1/monitors/backup-job", {"period_seconds": 3600, "token": "mine"},
                                  pattern="/api/v1/monitors/{id}")
    assert replaced.status == 200 and replaced.data["token"] == "…" + token[-4:], replaced

    bad = [
        ({"id": "m1"}, "cron", "cron (with time_zone) or period_seconds"),
        ({"id": "m2", "cron": "61 * * * *"}, "cron", "61"),
        ({"id": "m3", "cron": "0 3 * * *", "time_zone": "Mars/Olympus"}, "time_zone", "Mars/Olympus"),
        ({"id": "m4", "cron": "0 3 * * *", "period_seconds": 60}, "period_seconds", "not both"),
        ({"id": "m5", "period_seconds": 2678401}, "period_seconds", "out of range 1-2678400"),
    ]
    for body, field, reason in bad:
        r = alert_operator.post("/api/v1/monitors", body)
        assert r.status == 400, (body, r)
        assert reason in violations(r).get(field, ""), (field, r)
    assert admin.get("/api/v1/monitors").data["total"] == "1"
    assert alert_operator.delete("/api/v1/monitors/backup-job", pattern="/api/v1/monitors/{id}").status == 200
    assert admin.get("/api/v1/monitors").data["total"] == "0"


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _alert_record(alert_id, rule_id, task_id, started):
    """An Alert (alerts.proto) in protobuf's wire format: what the alert engine stores."""
    def text(field, value):
        data = value.encode()
        return _varint(field << 3 | 2) + _varint(len(data)) + data
    return (text(1, alert_id) + text(2, rule_id) + _varint(3 << 3) + _varint(1) + text(6, task_id)
            + text(9, "3 failures in a row") + _varint(10 << 3) + _varint(started))


def insert_firing_alert(cluster, alert_id, rule_id, task_id, started):
    record = _alert_record(alert_id, rule_id, task_id, started)
    if cluster.pg is not None:
        sql = (f"INSERT INTO alerts (id, rule_id, state, task_id, started_unix_ms, record) VALUES "
               f"('{alert_id}', '{rule_id}', 1, '{task_id}', {started}, decode('{record.hex()}', 'hex'))")
        r = cluster.pg._run([os.path.join(cluster.pg.bin, "psql"), "-h", cluster.pg.dir, "-p", str(cluster.pg.port),
                             "-U", "postgres", "-d", "quartzflow", "-v", "ON_ERROR_STOP=1", "-c", sql])
        assert r.returncode == 0, r.stderr
        return
    with sqlite3.connect(os.path.join(cluster.dir, "data", "coordinator.db"), timeout=10) as db:
        db.execute("INSERT INTO alerts (id, rule_id, state, task_id, started_unix_ms, record) VALUES (?, ?, 1, ?, ?, ?)",
                   (alert_id, rule_id, task_id, started, record))


def test_alerts_are_listed_read_and_acknowledged_with_a_comment(alert_operator, alert_viewer, admin, cluster):
    started = now_ms() - 60_000
    alert_id = f"task-failed:task:nightly:{started}"
    insert_firing_alert(cluster, alert_id, "task-failed", "nightly", started)
    insert_firing_alert(cluster, "other:task:weekly:1", "other", "weekly", 1)
    listed = admin.get("/api/v1/alerts?state=FIRING&rule_id=task-failed").data
    assert [a["id"] for a in listed["items"]] == [alert_id] and listed["total"] == "1"
    assert admin.get("/api/v1/alerts?task_id=weekly").data["items"][0]["rule_id"] == "other"
    assert admin.get("/api/v1/alerts").data["total"] == "2"
    path = "/api/v1/alerts/" + alert_id.replace(":", "%3A")
    got = alert_viewer.get(path, pattern="/api/v1/alerts/{id}")
    assert got.status == 200 and got.data["summary"] == "3 failures in a row", got

    denied = alert_viewer.post(path + "/ack", {"comment": "mine"}, pattern="/api/v1/alerts/{id}/ack")
    assert denied.status == 403
    too_long = alert_operator.post(path + "/ack", {"comment": "x" * 1001})
    assert too_long.status == 400 and "comment" in violations(too_long)
    acked = alert_operator.post(path + "/ack", {"comment": "looking at the backup disk"})
    assert acked.status == 200, acked
    assert acked.data["acknowledged_by"] == "alert-operator"
    assert acked.data["acknowledge_comment"] == "looking at the backup disk"
    assert admin.get(path).data["acknowledged_unix_ms"] != "0"
    assert any(e["action"] == "alert.ack" and e["detail"] == "looking at the backup disk"
               for e in audit_of(admin, alert_id))
    assert admin.get("/api/v1/alerts/nope").status == 404
    assert alert_operator.post("/api/v1/alerts/nope/ack", {}).status == 404


def test_deliveries_list_filters_and_pages(admin, alert_viewer):
    r = alert_viewer.get("/api/v1/deliveries?state=FAILED&channel_id=ops-hook&page_size=5")
    assert r.status == 200, r
    assert r.data["page_size"] == 5 and isinstance(r.data["items"], list)
    bad = admin.get("/api/v1/deliveries?state=LOST")
    assert bad.status == 400 and "state" in bad.json["message"]


def test_a_viewer_reads_alert_objects_but_every_write_is_refused_and_audited(alert_viewer, admin):
    for path in ("/api/v1/alert-rules", "/api/v1/channels", "/api/v1/silences", "/api/v1/monitors", "/api/v1/alerts"):
        assert alert_viewer.get(path).status == 200, path
    writes = [
        ("POST", "/api/v1/alert-rules", {"id": "v-rule"}),
        ("POST", "/api/v1/channels", {"id": "v-chan", "type": "CHANNEL_TYPE_WEBHOOK", "url": "https://x.example"}),
        ("POST", "/api/v1/silences", {"task_ids": ["t"], "ends_unix_ms": str(now_ms() + HOUR_MS), "reason": "x"}),
        ("POST", "/api/v1/monitors", {"id": "v-mon", "period_seconds": 3600}),
        ("DELETE", "/api/v1/channels/ops-mail", None),
    ]
    for method, path, body in writes:
        r = alert_viewer.call(method, path, body)
        assert r.status == 403 and "operator" in r.json["message"], (path, r)
    assert admin.get("/api/v1/channels/ops-mail").status == 200

    def denied_targets():  # access.denied entries are written after the answer
        items = admin.get("/api/v1/audit?action=access.denied&actor=alert-viewer&page_size=100").data["items"]
        targets = {e["target_id"] for e in items}
        return targets >= {"/api/v1/alert-rules", "/api/v1/channels", "/api/v1/silences", "/api/v1/monitors",
                           "/api/v1/channels/{id}"}
    wait_for(denied_targets, 10, "the access.denied audit entries")


def test_deleting_a_rule_then_its_channel_is_allowed_and_audited(alert_operator, admin):
    assert alert_operator.delete("/api/v1/alert-rules/task-failed", pattern="/api/v1/alert-rules/{id}").status == 200
    assert alert_operator.delete("/api/v1/alert-rules/task-failed").status == 404
    assert alert_operator.delete("/api/v1/channels/ops-hook").status == 200
    assert admin.get("/api/v1/channels/ops-hook").status == 404
    deleted = [e for e in audit_of(admin, "ops-hook") if e["action"] == "channel.delete"]
    assert deleted and deleted[0]["success"] and "webhook-signing-key" not in str(deleted)


def test_a_tasks_callback_secrets_are_sealed_redacted_and_kept_on_edit(admin, cluster):
    groups = admin.get("/api/v1/groups?keyword=workers").data["items"]
    workers = next(g["group"]["id"] for g in groups if g["group"]["name"] == "workers")
    body = {"name": "alerts-callback", "group_ids": [workers], "schedule": {"manual": {}},
            "shell": {"argv": ["/bin/true"]},
            "callbacks": [{"url": "https://results.example/hook", "secret": {"value": "callback-secret-77"}},
                          {"url": "http://results.example/plain"}]}
    created = admin.post("/api/v1/tasks", body)
    assert created.status == 201, created
    tid = created.data["id"]
    assert created.data["callbacks"][0]["secret"]["hint"] == "inline …77"
    assert created.data["callbacks"][0]["secret"]["set"] is True
    plain = created.data["callbacks"][1]
    assert "secret" not in plain or plain["secret"]["set"] is False, plain
    for r in (admin.get(f"/api/v1/tasks/{tid}"), admin.get("/api/v1/tasks?keyword=alerts-callback"), created):
        assert "callback-secret" not in r.body and '"v1:' not in r.body, r
    db = os.path.join(cluster.dir, "data", "coordinator.db")
    if os.path.exists(db):
        with open(db, "rb") as f:
            assert b"callback-secret-77" not in f.read()
    # An edit that sends the secret back as the API showed it keeps the stored one.
    shown = created.data
    edited = admin.put(f"/api/v1/tasks/{tid}", dict(shown, description="edited"))
    assert edited.status == 200, edited
    assert edited.data["callbacks"][0]["secret"]["hint"] == "inline …77"
    # Bad callbacks are named and nothing changes.
    bad = admin.put(f"/api/v1/tasks/{tid}", dict(shown, callbacks=[{"url": "ftp://results.example/x"},
                                                                  {"url": "https://x.example", "timeout_seconds": 999,
                                                                   "secret": {"file": "relative/path"}}]))
    assert bad.status == 400, bad
    v = violations(bad)
    assert "http:// or https://" in v.get("callbacks[0].url", ""), v
    assert "out of range" in v.get("callbacks[1].timeout_seconds", ""), v
    assert "absolute path" in v.get("callbacks[1].secret.file", ""), v
    assert admin.get(f"/api/v1/tasks/{tid}").data["task"]["callbacks"][0]["url"] == "https://results.example/hook"
    assert admin.delete(f"/api/v1/tasks/{tid}").status == 200
