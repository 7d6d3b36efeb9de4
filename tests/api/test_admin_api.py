# SPDX-License-Identifier: Apache-2.0
# The admin API through a real HTTP client against a running qf-coordinator with one
# qf-agent: every endpoint of the OpenAPI document, roles, bad input, audit, events.
import base64
import json
import os
import signal
import socket
import stat
import struct
import time
import urllib.parse

import pytest

from conftest import ADMIN_PASSWORD, Api, free_port, wait_for

SHELL_TASK = {
    "name": "api-echo",
    "description": "says hello",
    "enabled": True,
    "schedule": {"manual": {}},
    "placement": {"mode": "PLACEMENT_MODE_ONE", "routing": "ROUTING_STRATEGY_ROUND_ROBIN"},
    "shell": {"argv": ["/bin/sh", "-c", "echo hello from $QF_PARAM_WHO; sleep 0.2"]},
    "params": [{"name": "who", "default_value": "nobody"}],
    "timeout_seconds": 30,
}


def group_id(admin, name):
    items = admin.get("/api/v1/groups?keyword=" + name).data["items"]
    return next(g["group"]["id"] for g in items if g["group"]["name"] == name)


@pytest.fixture(scope="module")
def workers(admin):
    return group_id(admin, "workers")


@pytest.fixture(scope="module")
def echo_task(admin, workers):
    body = dict(SHELL_TASK, group_ids=[workers])
    r = admin.post("/api/v1/tasks", body)
    assert r.status == 201, r
    return r.data


@pytest.fixture(scope="module")
def viewer(admin, anonymous):
    r = admin.post("/api/v1/users", {"user": {"username": "vera", "role": "ROLE_VIEWER"}, "password": "viewer password 1"})
    assert r.status == 201, r
    login = anonymous.post("/api/v1/auth/login", {"username": "vera", "password": "viewer password 1"})
    assert login.status == 200, login
    return anonymous.with_token(login.data["session_token"])


def test_health_ready_metrics(anonymous):
    assert anonymous.get("/healthz").status == 200
    assert anonymous.get("/readyz").status == 200
    metrics = anonymous.get("/metrics")
    assert metrics.status == 200
    for name in ("qf_scheduler_fires_total", "qf_dispatch_latency_seconds_bucket", 'qf_runs_total{task="_other",group="_other",status="success"}',
                 "qf_agents_online", "qf_push_failures_total", "qf_store_latency_seconds_count"):
        assert name in metrics.body, name


def test_a_single_coordinator_leads_its_cluster_from_its_start(admin, anonymous):
    r = admin.get("/api/v1/cluster")
    assert r.status == 200, r
    status = r.data
    assert status["state"] == "COORDINATOR_STATE_LEADER", status
    assert status["leader_id"] == status["coordinator_id"], status
    assert int(status["epoch"]) >= 1, status
    assert int(status["lease_ttl_ms"]) == 1500, status
    assert int(status["lease_expires_unix_ms"]) > time.time() * 1000 - 5000, status
    me = [c for c in status.get("coordinators", []) if c["id"] == status["coordinator_id"]]
    assert len(me) == 1 and me[0].get("alive") and me[0]["state"] == "COORDINATOR_STATE_LEADER", status
    metrics = anonymous.get("/metrics").body
    leader = [line for line in metrics.splitlines() if line.startswith("qf_cluster_leader{")]
    assert leader and leader[0].endswith(" 1"), leader
    assert f"qf_cluster_epoch {int(status['epoch'])}" in metrics


def test_login_sets_a_strict_http_only_cookie_and_the_cookie_authenticates(anonymous):
    r = anonymous.post("/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 200
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and cookie.startswith("qf_session=qfs_")
    me = anonymous.get("/api/v1/auth/me", headers={"Cookie": cookie.split(";")[0]})
    assert me.status == 200 and me.data["username"] == "admin" and me.data["role"] == "ROLE_ADMIN"


def test_missing_forged_and_wrong_credentials_are_refused(anonymous, admin):
    r = anonymous.get("/api/v1/tasks")
    assert r.status == 401 and r.json["error"] == "UNAUTHENTICATED"
    assert anonymous.with_token("qf_forged").get("/api/v1/tasks").status == 401
    assert anonymous.with_token("qfs_" + "A" * 43).get("/api/v1/tasks").status == 401
    bad = anonymous.post("/api/v1/auth/login", {"username": "admin", "password": "wrong"})
    assert bad.status == 401 and "invalid username or password" in bad.json["message"]
    audit = admin.get("/api/v1/audit?action=auth.login_failed").data
    assert int(audit["total"]) >= 1


def test_failed_logins_from_one_address_are_answered_ever_later(anonymous):
    for expected_delay in (0.0, 0.25, 0.5, 1.0):
        started = time.monotonic()
        r = anonymous.post("/api/v1/auth/login", {"username": "nobody-here", "password": "wrong password"})
        assert r.status == 401
        assert time.monotonic() - started >= expected_delay * 0.9
    started = time.monotonic()
    ok = anonymous.post("/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert ok.status == 200 and time.monotonic() - started >= 2.0 * 0.9  # the next one waits too
    started = time.monotonic()
    assert anonymous.post("/api/v1/auth/login", {"username": "nobody-here", "password": "x"}).status == 401
    # A success cleared the address's record: without that this answer would wait 4 s (the
    # rest is the password hash, up to a second on a loaded machine).
    assert time.monotonic() - started < 3.0


def test_task_lifecycle_through_the_api(admin, echo_task, workers):
    tid = echo_task["id"]
    assert echo_task["revision"] == "1" and echo_task["created_by"] == "admin"
    listed = admin.get("/api/v1/tasks?keyword=api-echo&sort=-name&page=1&page_size=5").data
    assert listed["total"] == "1" and listed["items"][0]["task"]["name"] == "api-echo"
    assert admin.get(f"/api/v1/tasks?group_id={workers}&enabled=enabled").data["total"] == "1"
    got = admin.get(f"/api/v1/tasks/{tid}", pattern="/api/v1/tasks/{id}").data
    assert got["task"]["id"] == tid and got["schedule_description"]
    changed = dict(echo_task, description="says hello, changed")
    r = admin.put(f"/api/v1/tasks/{tid}", changed, pattern="/api/v1/tasks/{id}")
    assert r.status == 200 and r.data["revision"] == "2"
    assert admin.post(f"/api/v1/tasks/{tid}/disable", pattern="/api/v1/tasks/{id}/disable").data["enabled"] is False
    assert admin.post(f"/api/v1/tasks/{tid}/enable", pattern="/api/v1/tasks/{id}/enable").data["enabled"] is True
    audit = admin.get(f"/api/v1/audit?target_id={tid}").data["items"]
    actions = {e["action"] for e in audit}
    assert {"task.create", "task.update", "task.disable", "task.enable"} <= actions
    update = next(e for e in audit if e["action"] == "task.update")
    assert "says hello, changed" in update["after_json"] and "says hello, changed" not in update["before_json"]
    assert update["actor"] == "admin" and update["source_ip"] == "127.0.0.1" and update["request_id"]


def test_trigger_runs_on_the_agent_and_the_execution_is_queryable(admin, echo_task, cluster):
    tid = echo_task["id"]
    wait_for(lambda: admin.get("/api/v1/agents?state=online").data["total"] == "1", 30, "the agent online")
    agent = admin.get("/api/v1/agents").data["items"][0]
    assert agent["id"] == "api-agent" and agent["state"] == "AGENT_STATE_ONLINE"
    assert admin.get("/api/v1/agents/api-agent", pattern="/api/v1/agents/{id}").data["hostname"]
    r = admin.post(f"/api/v1/tasks/{tid}/trigger", {"params": {"who": "pytest"}, "reason": "test"},
                   pattern="/api/v1/tasks/{id}/trigger")
    assert r.status == 200, r
    [eid] = r.data["execution_ids"]

    def finished():
        e = admin.get("/api/v1/executions/" + urllib.parse.quote(eid, safe=""), pattern="/api/v1/executions/{id}")
        return e.data if e.data["status"] == "EXECUTION_STATUS_SUCCESS" else None

    record = wait_for(finished, 30, "the triggered run to succeed")
    assert record["agent_id"] == "api-agent" and record["triggered_by"] == "admin"
    logs = admin.get(f"/api/v1/executions/{urllib.parse.quote(eid, safe='')}/logs",
                     pattern="/api/v1/executions/{id}/logs").data
    assert "hello from pytest" in logs["chunk"]["data"] and logs["truncated"] is False
    summary = admin.get("/api/v1/tasks?keyword=api-echo").data["items"][0]
    assert summary["last_execution_id"] == eid and summary["last_status"] == "EXECUTION_STATUS_SUCCESS"
    listed = admin.get(f"/api/v1/executions?task_id={tid}&status=success").data
    assert eid in [e["execution_id"] for e in listed["items"]]
    retry = admin.post(f"/api/v1/executions/{urllib.parse.quote(eid, safe='')}/retry",
                       pattern="/api/v1/executions/{id}/retry")
    assert retry.status == 200 and retry.data["execution_ids"][0] != eid
    again = admin.post(f"/api/v1/executions/{urllib.parse.quote(eid, safe='')}/cancel", {"reason": "too late"},
                       pattern="/api/v1/executions/{id}/cancel")
    assert again.status == 409 and "already finished" in again.json["message"]
    stats = admin.get(f"/api/v1/executions/stats?task_id={tid}&range=1d").data
    assert int(stats["summary"]["success"]) >= 1
    # Broken down per task and per agent in one answer each: this task's entry counts its runs.
    by_task = admin.get("/api/v1/executions/stats?range=1d&group_by=task").data
    entry = next(g for g in by_task["groups"] if g["key"] == tid)
    assert entry["name"] == "api-echo" and int(entry["stats"]["success"]) >= int(stats["summary"]["success"]), entry
    assert by_task["group_count"] == len(by_task["groups"])
    by_agent = admin.get(f"/api/v1/executions/stats?range=1d&task_id={tid}&group_by=agent").data
    assert "api-agent" in [g["key"] for g in by_agent["groups"]], by_agent
    assert sum(int(g["stats"]["total"]) for g in by_agent["groups"]) == int(by_agent["summary"]["total"])
    refused = admin.get("/api/v1/executions/stats?group_by=host")
    assert refused.status == 400 and "group_by" in refused.json["message"], refused
    daily = admin.get("/api/v1/stats/daily")
    assert daily.status == 200 and "items" in daily.data
    assert admin.get("/api/v1/stats/daily?from_date=2026-02-30").status == 400
    audit = admin.get("/api/v1/audit?action=task.trigger").data["items"]
    assert any(e["target_id"] == tid and eid in e["detail"] for e in audit)


COUNT_FIELDS = ("run_count", "success_count", "failure_count", "running_count", "target_agent_count",
                "online_agent_count")


def counts_of(summary):
    """The run and placement counts of a TaskSummary (protobuf JSON omits zeros, gives uint64 as text)."""
    return {k: int(summary.get(k, 0)) for k in COUNT_FIELDS}


def test_the_task_list_carries_the_same_run_and_agent_counts_as_the_single_read(admin, workers):
    wait_for(lambda: admin.get("/api/v1/agents/api-agent").data["state"] == "AGENT_STATE_ONLINE", 30, "api-agent online")
    body = dict(SHELL_TASK, name="api-counted", group_ids=[workers], shell={"argv": ["/bin/sh", "-c", "exit $QF_PARAM_CODE"]},
                params=[{"name": "code", "default_value": "0"}],
                overlap_policy="OVERLAP_POLICY_ALLOW")  # three quick triggers: none skipped as overlapping
    tid = admin.post("/api/v1/tasks", body).data["id"]
    everywhere = admin.post("/api/v1/tasks", dict(SHELL_TASK, name="api-counted-everywhere", all_agents=True)).data["id"]
    eids = [admin.post(f"/api/v1/tasks/{tid}/trigger", {"params": {"code": code}}).data["execution_ids"][0]
            for code in ("0", "0", "3")]

    def final(eid):
        status = admin.get("/api/v1/executions/" + urllib.parse.quote(eid, safe="")).data["status"]
        return status not in ("EXECUTION_STATUS_PENDING", "EXECUTION_STATUS_RUNNING")

    wait_for(lambda: all(final(e) for e in eids), 30, "the three runs to end")
    group = admin.get(f"/api/v1/groups/{workers}").data
    single = counts_of(admin.get(f"/api/v1/tasks/{tid}").data)
    assert single == {"run_count": 3, "success_count": 2, "failure_count": 1, "running_count": 0,
                      "target_agent_count": group["agent_count"], "online_agent_count": group["online_agent_count"]}
    assert single["online_agent_count"] >= 1
    [listed] = admin.get("/api/v1/tasks?keyword=api-counted&enabled=enabled&sort=name&page_size=1").data["items"]
    assert listed["task"]["id"] == tid and counts_of(listed) == single

    agents = admin.get("/api/v1/agents?page_size=500").data
    online = sum(1 for a in agents["items"] if a["state"] == "AGENT_STATE_ONLINE")
    global_counts = counts_of(admin.get(f"/api/v1/tasks/{everywhere}").data)
    assert global_counts == dict.fromkeys(COUNT_FIELDS, 0) | {"target_agent_count": int(agents["total"]),
                                                             "online_agent_count": online}

    # Every task of a page (filled by one grouped query) agrees with its own read.
    def page_agrees():
        page = admin.get("/api/v1/tasks?page_size=500").data["items"]
        return page if all(counts_of(s) == counts_of(admin.get(f"/api/v1/tasks/{s['task']['id']}").data)
                           for s in page) else None

    page = wait_for(page_agrees, 10, "every listed task's counts to equal its single read")
    assert {tid, everywhere} <= {s["task"]["id"] for s in page}


def test_cancel_a_running_execution(admin, workers):
    body = dict(SHELL_TASK, name="api-sleeper", group_ids=[workers], shell={"argv": ["/bin/sleep", "30"]})
    task = admin.post("/api/v1/tasks", body).data
    [eid] = admin.post(f"/api/v1/tasks/{task['id']}/trigger").data["execution_ids"]
    path = "/api/v1/executions/" + urllib.parse.quote(eid, safe="")
    wait_for(lambda: admin.get(path).data["status"] == "EXECUTION_STATUS_RUNNING", 30, "the run to start")
    r = admin.post(path + "/cancel", {"reason": "pytest cancels"})
    assert r.status == 200, r
    wait_for(lambda: admin.get(path).data["status"] == "EXECUTION_STATUS_CANCELLED", 30, "the run cancelled")
    record = admin.get(path).data
    assert record["cancelled_by"] == "admin" and record["error_message"] == "cancelled by admin: pytest cancels"


def test_cron_preview_and_next_fires(admin, echo_task):
    r = admin.get("/api/v1/tasks/cron/parse?expr=" + urllib.parse.quote("30 2 * * *") +
                  "&time_zone=America/New_York&count=3&from_unix_ms=1772884800000")
    assert r.status == 200, r
    fires = r.data["next_fires"]
    assert len(fires) == 3 and fires[0]["dst_rule"] == "DST_RULE_GAP_SHIFTED" and r.data["fixed_time"] is True
    assert r.data["dst_notes"] and "At 02:30" in r.data["description"]
    bad = admin.get("/api/v1/tasks/cron/parse?expr=" + urllib.parse.quote("61 * * * *"))
    assert bad.status == 400 and "61 is out of range 0-59" in bad.json["message"] and bad.json["details"][0]["field"] == "expr"
    zone = admin.get("/api/v1/tasks/cron/parse?expr=@hourly&time_zone=Mars/Olympus")
    assert zone.status == 400 and zone.json["details"][0]["field"] == "time_zone"
    nxt = admin.get(f"/api/v1/tasks/{echo_task['id']}/next?count=2", pattern="/api/v1/tasks/{id}/next")
    assert nxt.status == 200 and nxt.data["next_fires"] == []  # a manual task never fires by itself


def test_groups_and_agent_moves(admin):
    r = admin.post("/api/v1/groups", {"name": "api-web", "description": "web hosts", "tags": ["web"]})
    assert r.status == 201, r
    gid = r.data["id"]
    assert admin.put(f"/api/v1/groups/{gid}", dict(r.data, description="changed"),
                     pattern="/api/v1/groups/{id}").data["description"] == "changed"
    summary = admin.get(f"/api/v1/groups/{gid}", pattern="/api/v1/groups/{id}").data
    assert summary["group"]["name"] == "api-web" and summary["agent_count"] == 0
    moved = admin.post("/api/v1/agents/move", {"agent_ids": ["api-agent"], "group_id": gid})
    assert moved.status == 200 and moved.data["results"][0]["ok"] is True
    members = admin.get(f"/api/v1/groups/{gid}/agents", pattern="/api/v1/groups/{id}/agents").data
    assert [a["id"] for a in members["items"]] == ["api-agent"]
    clients = admin.get(f"/api/v1/groups/{gid}/clients", pattern="/api/v1/groups/{id}/clients").data
    assert [a["id"] for a in clients["items"]] == ["api-agent"]  # (its versions may move meanwhile)
    assert admin.get("/api/v1/groups/nope/agents").status == 404
    back = admin.post("/api/v1/agents/move", {"agent_ids": ["api-agent"], "group_id": group_id(admin, "workers")})
    assert back.status == 200
    assert admin.delete(f"/api/v1/groups/{gid}", pattern="/api/v1/groups/{id}").status == 200
    assert admin.get(f"/api/v1/groups/{gid}").status == 404


def test_bad_input_gets_the_right_4xx_and_changes_nothing(admin, workers):
    before = admin.get("/api/v1/tasks").data["total"]
    cases = [
        (admin.call("POST", "/api/v1/tasks", raw=b"{not json"), 400, "body"),
        (admin.post("/api/v1/tasks", dict(SHELL_TASK, name="typed", timeout_seconds="soon")), 400, "timeout_seconds"),
        (admin.post("/api/v1/tasks", dict(SHELL_TASK, name="unknown", colour="blue")), 400, "colour"),
        (admin.post("/api/v1/tasks", dict(SHELL_TASK, name="x" * 300, group_ids=[workers])), 400, "name"),
        (admin.post("/api/v1/tasks", dict(SHELL_TASK, name="badcron", schedule={"cron": "61 * * * *"})), 400, None),
        (admin.get("/api/v1/tasks?colour=blue"), 400, "colour"),
        (admin.get("/api/v1/tasks?page=minus-one"), 400, "page"),
        (admin.get("/api/v1/executions?status=exploded"), 400, "status"),
        (admin.get("/api/v1/tasks/..%2F..%2Fetc%2Fpasswd"), 400, "id"),
        (admin.get("/api/v1/tasks/does-not-exist"), 404, None),
        (admin.call("DELETE", "/api/v1/tasks"), 400, "method"),
        (admin.get("/api/v1/nothing-here"), 404, None),
    ]
    for response, status, field in cases:
        assert response.status == status, response
        assert response.json["code"] != 0 and response.json["message"], response
        if field:
            assert field in [d["field"] for d in response.json["details"]], response
    # A body over 1 MB is refused from its Content-Length, before it is read.
    with socket.create_connection(("127.0.0.1", int(admin.base.rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(f"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin.token}\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {2 * 1024 * 1024}\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 413")
    # Headers over 16 KB: 431.
    with socket.create_connection(("127.0.0.1", int(admin.base.rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(b"GET /api/v1/tasks HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 20000 + b"\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 431")
    assert admin.get("/api/v1/tasks").data["total"] == before


def test_a_viewer_reads_but_cannot_write_and_the_attempt_is_audited(viewer, admin, echo_task):
    assert viewer.get("/api/v1/tasks").status == 200
    tid = echo_task["id"]
    r = viewer.delete(f"/api/v1/tasks/{tid}")
    assert r.status == 403 and "operator" in r.json["message"]
    assert viewer.post(f"/api/v1/tasks/{tid}/trigger").status == 403
    assert viewer.get("/api/v1/users").status == 403
    assert viewer.get("/api/v1/audit").status == 403
    assert admin.get(f"/api/v1/tasks/{tid}").status == 200
    # The entries are written after the 403 went out: a moment later at most.
    wait_for(lambda: int(admin.get("/api/v1/audit?action=access.denied&actor=vera").data["total"]) >= 2, 10,
             "the access.denied audit entries")


def test_users_tokens_and_passwords(admin, anonymous):
    r = admin.post("/api/v1/users", {"user": {"username": "olga", "role": "ROLE_OPERATOR"}, "password": "operator password"})
    assert r.status == 201, r
    uid = r.data["id"]
    assert admin.post("/api/v1/users", {"user": {"username": "olga", "role": "ROLE_VIEWER"},
                                        "password": "another password"}).status == 409
    short = admin.post("/api/v1/users", {"user": {"username": "pat", "role": "ROLE_VIEWER"}, "password": "short"})
    assert short.status == 400 and "password" in [d["field"] for d in short.json["details"]]
    assert any(u["username"] == "olga" for u in admin.get("/api/v1/users").data["items"])
    assert admin.get(f"/api/v1/users/{uid}", pattern="/api/v1/users/{id}").data["role"] == "ROLE_OPERATOR"
    olga = anonymous.with_token(anonymous.post("/api/v1/auth/login", {"username": "olga", "password": "operator password"})
                                .data["session_token"])
    # A token scoped below its owner's role, used as a bearer token, then revoked.
    created = olga.post("/api/v1/tokens", {"name": "ci", "role": "ROLE_VIEWER"})
    assert created.status == 201 and created.data["secret"].startswith("qf_")
    assert olga.post("/api/v1/tokens", {"name": "too-high", "role": "ROLE_ADMIN"}).status == 403
    token = anonymous.with_token(created.data["secret"])
    assert token.get("/api/v1/tasks").status == 200
    assert token.post("/api/v1/groups", {"name": "nope"}).status == 403
    assert [t["name"] for t in olga.get("/api/v1/tokens").data["items"]] == ["ci"]
    tok_id = created.data["token"]["id"]
    assert olga.delete(f"/api/v1/tokens/{tok_id}", pattern="/api/v1/tokens/{id}").status == 200
    assert token.get("/api/v1/tasks").status == 401
    # Own password needs the current one; the old session of another login ends.
    assert olga.put(f"/api/v1/users/{uid}/password", {"current_password": "wrong", "new_password": "a new password 2"},
                    pattern="/api/v1/users/{id}/password").status == 400
    assert olga.put(f"/api/v1/users/{uid}/password", {"current_password": "operator password",
                                                      "new_password": "a new password 2"}).status == 200
    assert admin.put(f"/api/v1/users/{uid}", {"username": "olga", "role": "ROLE_OPERATOR", "disabled": True},
                     pattern="/api/v1/users/{id}").data["disabled"] is True
    assert olga.get("/api/v1/tasks").status == 401
    assert admin.delete(f"/api/v1/users/{uid}", pattern="/api/v1/users/{id}").status == 200
    actions = {e["action"] for e in admin.get("/api/v1/audit?action=user.&page_size=100").data["items"]}
    assert {"user.create", "user.update", "user.delete", "user.password"} <= actions
    tokens = {e["action"] for e in admin.get("/api/v1/audit?action=token.").data["items"]}
    assert {"token.create", "token.revoke"} <= tokens


def test_totp_enrolment_and_login(admin, anonymous):
    r = admin.post("/api/v1/users", {"user": {"username": "tina", "role": "ROLE_VIEWER"}, "password": "totp user password"})
    assert r.status == 201
    tina = anonymous.with_token(anonymous.post("/api/v1/auth/login", {"username": "tina", "password": "totp user password"})
                                .data["session_token"])
    enrol = tina.post("/api/v1/auth/totp/enroll")
    assert enrol.status == 200 and enrol.data["otpauth_uri"].startswith("otpauth://totp/")
    secret = base64.b32decode(enrol.data["secret_base32"] + "=" * (-len(enrol.data["secret_base32"]) % 8))
    assert tina.post("/api/v1/auth/totp/confirm", {"code": "000000" if totp(secret) != "000000" else "111111"}).status == 400
    assert tina.post("/api/v1/auth/totp/confirm", {"code": totp(secret)}).data["totp_enabled"] is True
    need = anonymous.post("/api/v1/auth/login", {"username": "tina", "password": "totp user password"})
    assert need.status == 401 and need.json["error"] == "TOTP_REQUIRED"
    ok = anonymous.post("/api/v1/auth/login", {"username": "tina", "password": "totp user password",
                                               "totp_code": totp(secret, time.time() + 30)})
    assert ok.status == 200, ok
    assert tina.post("/api/v1/auth/logout").status == 200
    assert tina.get("/api/v1/tasks").status == 401


def totp(secret, now=None):
    import hashlib
    import hmac
    step = int((now if now is not None else time.time()) // 30)
    digest = hmac.new(secret, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    code = (struct.unpack(">I", digest[offset:offset + 4])[0] & 0x7FFFFFFF) % 1000000
    return f"{code:06d}"


class WebSocket:
    """A minimal RFC 6455 client: text frames, client masking, enough for the events API."""

    def __init__(self, port, token):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Authorization: Bearer {token}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "closed during the handshake"
            head += chunk
        self.status = int(head.split(b" ")[1])
        self.buffer = head.split(b"\r\n\r\n", 1)[1]

    def send(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81]) + (bytes([0x80 | len(payload)]) if len(payload) < 126
                                  else bytes([0x80 | 126]) + struct.pack(">H", len(payload)))
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _read(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk
        out, self.buffer = self.buffer[:n], self.buffer[n:]
        return out

    def receive(self):
        """(opcode, payload) of the next frame."""
        b0, b1 = self._read(2)
        length = b1 & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        return b0 & 0x0F, self._read(length)


def without_request_id(response):
    body = dict(response.json)
    body.pop("request_id", None)
    return response.status, body


def test_a_locked_account_answers_like_an_unknown_one_locks_one_address_only_and_an_admin_unlocks(admin, anonymous):
    r = admin.post("/api/v1/users", {"user": {"username": "lou", "role": "ROLE_VIEWER"}, "password": "a locked user's pass"})
    assert r.status == 201, r
    uid = r.data["id"]
    attacker = anonymous.from_address("127.0.0.3")
    for _ in range(5):  # the coordinator's default max_failed_logins
        bad = attacker.post("/api/v1/auth/login", {"username": "lou", "password": "not lou's password"})
        assert bad.status == 401 and bad.json["message"] == "invalid username or password", bad
    # Locked from 127.0.0.3: the right password gets exactly what an unknown user gets.
    locked = attacker.post("/api/v1/auth/login", {"username": "lou", "password": "a locked user's pass"})
    unknown = anonymous.from_address("127.0.0.4").post("/api/v1/auth/login",
                                                       {"username": "nobody-at-all", "password": "a locked user's pass"})
    assert without_request_id(locked) == without_request_id(unknown)
    assert locked.status == 401 and locked.json["error"] == "UNAUTHENTICATED"
    assert locked.json["message"] == "invalid username or password"
    # Another address is not locked out.
    elsewhere = anonymous.from_address("127.0.0.2").post("/api/v1/auth/login",
                                                         {"username": "lou", "password": "a locked user's pass"})
    assert elsewhere.status == 200, elsewhere
    failed = admin.get(f"/api/v1/audit?action=auth.login_failed&target_id={uid}&page_size=50").data["items"]
    assert any("locked for 900 s for this address" in e["detail"] and e["source_ip"] == "127.0.0.3" for e in failed)
    # Only an admin lifts the lock; then the locked address gets in.
    lou = anonymous.with_token(elsewhere.data["session_token"])
    assert lou.post(f"/api/v1/users/{uid}/unlock").status == 403
    assert admin.post("/api/v1/users/usr_missing/unlock", pattern="/api/v1/users/{id}/unlock").status == 404
    unlocked = admin.post(f"/api/v1/users/{uid}/unlock", pattern="/api/v1/users/{id}/unlock")
    assert unlocked.status == 200 and unlocked.data["username"] == "lou"
    audited = admin.get(f"/api/v1/audit?action=user.unlock&target_id={uid}").data["items"]
    assert len(audited) == 1 and audited[0]["actor"] == "admin"
    assert audited[0]["detail"] == "login locks lifted for 1 source address"
    ok = attacker.post("/api/v1/auth/login", {"username": "lou", "password": "a locked user's pass"})
    assert ok.status == 200, ok


def test_a_weak_password_is_refused_naming_the_field(admin):
    for password, reason in (("password1234", "is one of the most commonly used passwords"),
                             ("Sunshine2024!!", "is a commonly used password with digits or symbols around it"),
                             ("123456789012345", "is a sequence of neighbouring keys or characters"),
                             ("weakling's own pass", "must not contain the username"),
                             ("quartzflow is great", "must not contain the name of the service (quartzflow)"),
                             ("short", "must be at least 12 characters")):
        r = admin.post("/api/v1/users", {"user": {"username": "weakling", "role": "ROLE_VIEWER"}, "password": password})
        assert r.status == 400 and r.json["error"] == "INVALID_ARGUMENT", (password, r)
        assert [d["field"] for d in r.json["details"]] == ["password"], r
        assert r.json["details"][0]["reason"].startswith(reason), r
        assert password not in r.body
    assert not any(u["username"] == "weakling" for u in admin.get("/api/v1/users").data["items"])
    me = admin.get("/api/v1/auth/me").data
    r = admin.put(f"/api/v1/users/{me['id']}/password", {"current_password": ADMIN_PASSWORD,
                                                          "new_password": "qwertyuiop1234"},
                  pattern="/api/v1/users/{id}/password")
    assert r.status == 400 and [d["field"] for d in r.json["details"]] == ["new_password"], r


def test_a_user_who_must_change_the_password_can_do_nothing_else_first(admin, anonymous):
    r = admin.post("/api/v1/users", {"user": {"username": "mona", "role": "ROLE_OPERATOR"},
                                     "password": "first day password", "require_password_change": True})
    assert r.status == 201 and r.data["password_change_required"] is True, r
    uid = r.data["id"]
    login = anonymous.post("/api/v1/auth/login", {"username": "mona", "password": "first day password"})
    assert login.status == 200 and login.data["user"]["password_change_required"] is True
    mona = anonymous.with_token(login.data["session_token"])
    for refused in (mona.get("/api/v1/tasks"), mona.post("/api/v1/tokens", {"name": "sneaky"}),
                    mona.put(f"/api/v1/users/{admin.get('/api/v1/auth/me').data['id']}/password",
                             {"new_password": "an admin's new password"})):
        assert refused.status == 403 and refused.json["error"] == "PERMISSION_DENIED", refused
        assert "password must be changed first" in refused.json["message"]
    me = mona.get("/api/v1/auth/me")
    assert me.status == 200 and me.data["password_change_required"] is True
    same = mona.put(f"/api/v1/users/{uid}/password", {"current_password": "first day password",
                                                      "new_password": "first day password"})
    assert same.status == 400 and same.json["details"][0]["field"] == "new_password"
    changed = mona.put(f"/api/v1/users/{uid}/password", {"current_password": "first day password",
                                                         "new_password": "my very own passphrase"})
    assert changed.status == 200, changed
    assert mona.get("/api/v1/tasks").status == 200
    assert mona.get("/api/v1/auth/me").data["password_change_required"] is False
    assert mona.post("/api/v1/auth/logout").status == 200


def test_the_first_start_password_goes_to_a_0600_file_not_the_log_and_must_be_changed(cluster):
    data_dir = os.path.join(cluster.dir, "bootstrap-data")
    admin_port = free_port()
    config = os.path.join(cluster.dir, "bootstrap.yaml")
    with open(cluster.config) as f:
        text = f.read()
    text = (text.replace("data_dir: data", "data_dir: bootstrap-data")
            .replace(f"127.0.0.1:{cluster.admin_port}", f"127.0.0.1:{admin_port}")
            .replace(f"agent_listen: 127.0.0.1:{cluster.agent_port}",
                     f"agent_listen: 127.0.0.1:{free_port(socket.SOCK_DGRAM)}"))
    if cluster.pg is not None:  # a first start needs a database of its own
        cluster.pg.create_database("bootstrap")
        text = text.replace(cluster.pg.dsn("quartzflow"), cluster.pg.dsn("bootstrap"))
    with open(config, "w") as f:
        f.write(text)
    password = None
    process = cluster.start("bootstrap", [cluster.coordinator_bin, "--config", config])  # stderr: a file
    try:
        api = Api(f"http://127.0.0.1:{admin_port}")
        path = os.path.join(data_dir, "initial-admin-password")
        wait_for(lambda: os.path.exists(path) and api.get("/readyz").status == 200, 30, "the first start")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path) as f:
            password = f.read().strip()
        assert len(password) == 24
        log = cluster.log("bootstrap")
        assert password not in log and "initial-admin-password" in log
        login = api.post("/api/v1/auth/login", {"username": "admin", "password": password})
        assert login.status == 200 and login.data["user"]["password_change_required"] is True
        first = api.with_token(login.data["session_token"])
        denied = first.get("/api/v1/tasks")
        assert denied.status == 403 and "password must be changed first" in denied.json["message"]
        uid = login.data["user"]["id"]
        assert first.put(f"/api/v1/users/{uid}/password", {"current_password": password,
                                                           "new_password": "the operator's own choice"}).status == 200
        assert first.get("/api/v1/tasks").status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert password and password not in cluster.log("bootstrap")


def test_events_websocket_streams_task_changes_and_runs_filtered_by_task(admin, cluster, workers):
    anonymous_ws = WebSocket(cluster.admin_port, "qf_forged")
    assert anonymous_ws.status == 401
    ws = WebSocket(cluster.admin_port, admin.token)
    assert ws.status == 101
    admin.hits.add(("GET", "/api/v1/events"))
    elsewhere = WebSocket(cluster.admin_port, admin.token)  # subscribed to another group: hears nothing
    elsewhere.send(json.dumps({"group_ids": ["no-such-group"]}))
    by_group = WebSocket(cluster.admin_port, admin.token)
    by_group.send(json.dumps({"group_ids": [workers], "types": ["EVENT_TYPE_TASK_CHANGED"]}))
    time.sleep(0.3)
    task = admin.post("/api/v1/tasks", dict(SHELL_TASK, name="api-events", group_ids=[workers])).data
    opcode, payload = by_group.receive()
    assert json.loads(payload)["task_change"]["task_id"] == task["id"]
    ws.send(json.dumps({"task_ids": [task["id"]]}))
    time.sleep(0.3)  # the subscription is applied before the next change
    admin.post("/api/v1/tasks/other/disable")  # another task: filtered out (and 404 anyway)
    admin.post(f"/api/v1/tasks/{task['id']}/disable")
    admin.post(f"/api/v1/tasks/{task['id']}/enable")
    [eid] = admin.post(f"/api/v1/tasks/{task['id']}/trigger").data["execution_ids"]
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        opcode, payload = ws.receive()
        assert opcode == 1, (opcode, payload)
        event = json.loads(payload)
        seen.append(event)
        if event.get("execution", {}).get("status") == "EXECUTION_STATUS_SUCCESS":
            break
    kinds = [e["type"] for e in seen]
    assert "EVENT_TYPE_TASK_CHANGED" in kinds and "EVENT_TYPE_EXECUTION_UPDATED" in kinds
    assert all(e.get("task_change", {}).get("task_id", task["id"]) == task["id"] for e in seen)
    assert any(e.get("execution", {}).get("execution_id") == eid for e in seen)
    elsewhere.sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        elsewhere.receive()
    actions = [e["task_change"]["action"] for e in seen if "task_change" in e]
    assert actions[-2:] == ["TASK_CHANGE_ACTION_DISABLED", "TASK_CHANGE_ACTION_ENABLED"]


def test_delete_task(admin, workers):
    task = admin.post("/api/v1/tasks", dict(SHELL_TASK, name="api-doomed", group_ids=[workers])).data
    assert admin.delete(f"/api/v1/tasks/{task['id']}", pattern="/api/v1/tasks/{id}").status == 200
    assert admin.get(f"/api/v1/tasks/{task['id']}").status == 404
    assert any(e["action"] == "task.delete" for e in admin.get(f"/api/v1/audit?target_id={task['id']}").data["items"])


def test_batch_enable_disable_delete_is_all_or_nothing_and_audited(admin, workers):
    ids = [admin.post("/api/v1/tasks", dict(SHELL_TASK, name=f"api-batch-{i}", group_ids=[workers])).data["id"]
           for i in range(3)]

    def states():
        return [admin.get(f"/api/v1/tasks/{i}").data["task"]["enabled"] for i in ids]

    r = admin.post("/api/v1/tasks/batch", {"task_ids": ids, "action": "BATCH_TASK_ACTION_DISABLE"})
    assert r.status == 200, r
    assert [(x["id"], x["ok"]) for x in r.data["results"]] == [(i, True) for i in ids]
    assert states() == [False, False, False]
    # Every bad id is named and nothing changes, not even the good ones.
    bad = admin.post("/api/v1/tasks/batch", {"task_ids": [ids[0], "ghost-1", ids[1], "ghost-2"],
                                             "action": "BATCH_TASK_ACTION_ENABLE"})
    assert bad.status == 400, bad
    fields = [(d["field"], d["reason"]) for d in bad.json["details"]]
    assert fields == [("task_ids[1]", 'no task with id "ghost-1"'), ("task_ids[3]", 'no task with id "ghost-2"')]
    assert "nothing was changed" in bad.json["message"]
    assert states() == [False, False, False]
    for body, field in [({"task_ids": ids}, "action"), ({"task_ids": [], "action": "BATCH_TASK_ACTION_ENABLE"}, "task_ids"),
                        ({"task_ids": [ids[0], ids[0]], "action": "BATCH_TASK_ACTION_ENABLE"}, "task_ids[1]"),
                        ({"task_ids": [ids[0], ""], "action": "BATCH_TASK_ACTION_ENABLE"}, "task_ids[1]"),
                        ({"task_ids": ids, "action": "BATCH_TASK_ACTION_TRIGGER"}, "action"),
                        ({"task_ids": [f"t{i}" for i in range(1001)], "action": "BATCH_TASK_ACTION_ENABLE"}, "task_ids"),
                        ({"task_ids": ids, "action": "BATCH_TASK_ACTION_ENABLE", "extra": 1}, "extra")]:
        r = admin.post("/api/v1/tasks/batch", body)
        assert r.status == 400 and field in [d["field"] for d in r.json["details"]], (body, r)
    assert states() == [False, False, False]
    r = admin.post("/api/v1/tasks/batch", {"task_ids": ids[:2], "action": "BATCH_TASK_ACTION_ENABLE"})
    assert r.status == 200, r
    assert states() == [True, True, False]
    audit = admin.get("/api/v1/audit?action=task.batch").data["items"]
    assert any(e["success"] and "enable 2 task(s)" in e["detail"] for e in audit), audit
    assert any(not e["success"] and "ghost-1" in e["detail"] for e in audit), audit
    assert {e["action"] for e in admin.get(f"/api/v1/audit?target_id={ids[0]}").data["items"]} >= {"task.disable",
                                                                                                   "task.enable"}
    viewer_like = admin.post("/api/v1/tasks/batch", raw=b"not json")
    assert viewer_like.status == 400
    r = admin.post("/api/v1/tasks/batch", {"task_ids": ids, "action": "BATCH_TASK_ACTION_DELETE"})
    assert r.status == 200, r
    assert all(admin.get(f"/api/v1/tasks/{i}").status == 404 for i in ids)
    assert any(e["action"] == "task.delete" for e in admin.get(f"/api/v1/audit?target_id={ids[2]}").data["items"])


def test_delete_an_agent_that_is_gone_but_not_one_online(admin, cluster):
    wait_for(lambda: admin.get("/api/v1/agents/api-agent").data["state"] == "AGENT_STATE_ONLINE", 30, "api-agent online")
    online = admin.delete("/api/v1/agents/api-agent", pattern="/api/v1/agents/{id}")
    assert online.status == 409, online
    assert "ONLINE" in online.json["message"] and "api-agent" in online.json["message"]
    assert admin.get("/api/v1/agents/api-agent").status == 200
    assert admin.delete("/api/v1/agents/no-such-agent").status == 404
    gone = cluster.add_agent("api-gone")
    wait_for(lambda: admin.get("/api/v1/agents/api-gone").status == 200
             and admin.get("/api/v1/agents/api-gone").data["state"] == "AGENT_STATE_ONLINE", 30, "api-gone online")
    assert admin.delete("/api/v1/agents/api-gone").status == 409
    gone.send_signal(signal.SIGTERM)
    gone.wait(timeout=20)
    wait_for(lambda: admin.get("/api/v1/agents/api-gone").data["state"] != "AGENT_STATE_ONLINE", 30, "api-gone offline")
    r = admin.delete("/api/v1/agents/api-gone")
    assert r.status == 200, r
    assert admin.get("/api/v1/agents/api-gone").status == 404
    assert "api-gone" not in [a["id"] for a in admin.get("/api/v1/agents?page_size=500").data["items"]]
    audit = admin.get("/api/v1/audit?target_id=api-gone").data["items"]
    assert any(e["action"] == "agent.delete" and e["success"] for e in audit), audit
    assert any(e["action"] == "agent.delete" and not e["success"] for e in audit), audit


def test_zz_openapi_lists_every_route_and_each_was_exercised(anonymous, admin):
    doc = anonymous.get("/api/v1/openapi.json")
    assert doc.status == 200
    spec = json.loads(doc.body)
    assert spec["openapi"].startswith("3.")
    listed = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    missing = sorted(listed - admin.hits)
    assert not missing, f"routes in the OpenAPI document no test called: {missing}"
    for path, item in spec["paths"].items():
        for op in item.values():
            ref = op["responses"]
            assert "default" in ref


def test_a_task_created_without_enabled_runs_and_an_edit_without_it_keeps_it(admin, workers):
    # Issue: a task left without `enabled` was created disabled, silently.
    body = {"name": "api-implicit", "group_ids": [workers], "schedule": {"cron": "0 3 * * *"},
            "shell": {"argv": ["/bin/true"]}}
    created = admin.post("/api/v1/tasks", body)
    assert created.status == 201, created
    assert created.data["enabled"] is True
    tid = created.data["id"]
    assert admin.post(f"/api/v1/tasks/{tid}/disable").data["enabled"] is False
    edited = admin.put(f"/api/v1/tasks/{tid}", dict(body, description="edited, enabled not said"))
    assert edited.status == 200, edited
    assert edited.data["enabled"] is False  # an edit that does not say keeps the state
    explicit = admin.put(f"/api/v1/tasks/{tid}", dict(body, enabled=True))
    assert explicit.data["enabled"] is True
    assert admin.delete(f"/api/v1/tasks/{tid}").status in (200, 204)
