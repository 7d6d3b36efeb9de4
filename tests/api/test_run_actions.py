# SPDX-License-Identifier: Apache-2.0
# The console's run actions against a real qf-coordinator with three qf-agents (two in
# `workers`, one in `edge`): trigger on chosen agents, retry on the agent a run failed on,
# the full log of a run read from its agent (300 KB, paged) and what is served when that
# agent is offline.
import json
import os
import shutil
import signal
import struct
import subprocess
import time
import urllib.parse

import pytest

from conftest import ADMIN_PASSWORD, Api, started_cluster, wait_for
from test_admin_api import WebSocket

SECOND = "api-second"
EDGE = "api-edge"
LOG_LINES = 52000
FULL_LOG = "".join(f"{i}\n" for i in range(1, LOG_LINES + 1))  # 300,894 bytes, as `seq 1 52000` prints


@pytest.fixture(scope="module")
def cluster():
    c = started_cluster()
    yield c
    c.stop()
    shutil.rmtree(c.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(cluster):
    anonymous = Api(cluster.base)
    r = anonymous.post("/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 200, r
    api = anonymous.with_token(r.data["session_token"])
    assert api.post("/api/v1/groups", {"name": "edge"}).status == 201
    cluster.second = cluster.add_agent(SECOND, "workers")
    cluster.edge = cluster.add_agent(EDGE, "edge")

    def all_online():
        agents = api.get("/api/v1/agents?state=online").data["items"]
        return {a["id"] for a in agents} == {"api-agent", SECOND, EDGE}

    wait_for(all_online, 30, "three agents online")
    return api


@pytest.fixture(scope="module")
def workers(admin):
    items = admin.get("/api/v1/groups?keyword=workers").data["items"]
    return next(g["group"]["id"] for g in items if g["group"]["name"] == "workers")


def task(admin, workers, name, argv, mode="PLACEMENT_MODE_ONE", **extra):
    body = {"name": name, "group_ids": [workers], "schedule": {"manual": {}},
            "placement": {"mode": mode, "routing": "ROUTING_STRATEGY_ROUND_ROBIN", **extra},
            "shell": {"argv": argv}, "timeout_seconds": 60}
    r = admin.post("/api/v1/tasks", body)
    assert r.status == 201, r
    return r.data["id"]


def execution_path(eid):
    return "/api/v1/executions/" + urllib.parse.quote(eid, safe="")


def final(admin, eid):
    def done():
        e = admin.get(execution_path(eid)).data
        return e if e["status"] not in ("EXECUTION_STATUS_PENDING", "EXECUTION_STATUS_RUNNING") else None

    return wait_for(done, 30, f"{eid} to end")


def executions_of(admin, tid):
    return admin.get(f"/api/v1/executions?task_id={tid}&page_size=500").data["items"]


def test_trigger_on_chosen_agents_runs_there_and_refuses_agents_not_bound(admin, workers):
    tid = task(admin, workers, "chosen-one", ["/bin/sh", "-c", "echo on $QF_AGENT_ID"])
    r = admin.post(f"/api/v1/tasks/{tid}/trigger", {"agent_ids": ["api-agent", SECOND]})
    assert r.status == 200, r
    ids = r.data["execution_ids"]
    assert len(ids) == 2
    records = [final(admin, eid) for eid in ids]
    assert [e["agent_id"] for e in records] == ["api-agent", SECOND]
    assert all(e["status"] == "EXECUTION_STATUS_SUCCESS" and e["trigger"] == "TRIGGER_TYPE_MANUAL" for e in records)
    # Refused, naming the agent and why; nothing runs.
    before = len(executions_of(admin, tid))
    not_bound = admin.post(f"/api/v1/tasks/{tid}/trigger", {"agent_ids": [SECOND, EDGE]})
    assert not_bound.status == 400, not_bound
    assert not_bound.json["details"][0]["field"] == "agent_ids[1]"
    assert EDGE in not_bound.json["message"] and "not bound" in not_bound.json["message"]
    ghost = admin.post(f"/api/v1/tasks/{tid}/trigger", {"agent_ids": ["ghost"]})
    assert ghost.status == 400 and '"ghost" is not online' in ghost.json["message"], ghost
    twice = admin.post(f"/api/v1/tasks/{tid}/trigger", {"agent_ids": [SECOND, SECOND]})
    assert twice.status == 400 and twice.json["details"][0]["field"] == "agent_ids[1]", twice
    empty = admin.post(f"/api/v1/tasks/{tid}/trigger", {"agent_ids": [""]})
    assert empty.status == 400 and empty.json["details"][0]["field"] == "agent_ids[0]", empty
    assert len(executions_of(admin, tid)) == before
    # `all` on one chosen agent: one run, there only.
    everywhere = task(admin, workers, "chosen-all", ["/bin/true"], mode="PLACEMENT_MODE_ALL")
    [eid] = admin.post(f"/api/v1/tasks/{everywhere}/trigger", {"agent_ids": [SECOND]}).data["execution_ids"]
    assert final(admin, eid)["agent_id"] == SECOND
    # `sharded` over the chosen agents: every shard on the one chosen.
    sharded = task(admin, workers, "chosen-shards", ["/bin/true"], mode="PLACEMENT_MODE_SHARDED", shard_count=2)
    shard_ids = admin.post(f"/api/v1/tasks/{sharded}/trigger", {"agent_ids": ["api-agent"]}).data["execution_ids"]
    assert len(shard_ids) == 2
    assert {final(admin, e)["agent_id"] for e in shard_ids} == {"api-agent"}


def test_retry_reruns_a_failed_run_on_its_agent_linked_to_it(admin, workers, cluster):
    tid = task(admin, workers, "fails-everywhere", ["/bin/sh", "-c", "echo failing on $QF_AGENT_ID; exit 3"],
               mode="PLACEMENT_MODE_ALL")
    ids = admin.post(f"/api/v1/tasks/{tid}/trigger").data["execution_ids"]
    assert len(ids) == 2
    failed = next(e for e in (final(admin, i) for i in ids) if e["agent_id"] == SECOND)
    assert failed["status"] == "EXECUTION_STATUS_FAILURE"
    r = admin.post(execution_path(failed["execution_id"]) + "/retry")
    assert r.status == 200, r
    [retry_id] = r.data["execution_ids"]
    retry = final(admin, retry_id)
    assert retry["agent_id"] == SECOND and retry["trigger"] == "TRIGGER_TYPE_RETRY"
    assert retry["retry_of_execution_id"] == failed["execution_id"]
    assert retry["root_execution_id"] == failed["execution_id"] and retry["attempt"] == 2
    assert retry["triggered_by"] == "admin" and "failing on" in retry["output"]
    # Only that run again: not the task on every agent.
    assert len(executions_of(admin, tid)) == 3
    # A retry of the retry keeps the root and counts the attempt.
    again = admin.post(execution_path(retry_id) + "/retry").data["execution_ids"][0]
    again_record = final(admin, again)
    assert again_record["attempt"] == 3 and again_record["root_execution_id"] == failed["execution_id"]
    assert again_record["retry_of_execution_id"] == retry_id and again_record["agent_id"] == SECOND
    listed = admin.get(f"/api/v1/executions?task_id={tid}&trigger=retry").data["items"]
    assert {e["execution_id"] for e in listed} == {retry_id, again}
    audit = admin.get("/api/v1/audit?action=execution.retry").data["items"]
    assert any(e["target_id"] == failed["execution_id"] and retry_id in e["detail"] and SECOND in e["detail"]
               for e in audit), audit
    # qfctl: the same, and --wait follows the retry to its end (exit 1: it failed again).
    status, out, err = qfctl(cluster, admin, "exec", "retry", failed["execution_id"], "--wait")
    assert status == 1 and out.startswith(f"{tid}:") and f"failure on {SECOND}" in out, (status, out, err)
    status, out, err = qfctl(cluster, admin, "task", "trigger", tid, "--agent", SECOND)
    assert status == 0 and out.strip().endswith(f":{SECOND}"), (status, out, err)
    # A run still going is not retried.
    sleeper = task(admin, workers, "retry-sleeper", ["/bin/sleep", "20"])
    [running] = admin.post(f"/api/v1/tasks/{sleeper}/trigger").data["execution_ids"]
    wait_for(lambda: admin.get(execution_path(running)).data["status"] == "EXECUTION_STATUS_RUNNING", 30, "running")
    busy = admin.post(execution_path(running) + "/retry")
    assert busy.status == 409 and "RUNNING" in busy.json["message"], busy
    assert admin.post(execution_path(running) + "/cancel").status == 200
    assert admin.post(execution_path("nope:1") + "/retry").status == 404
    assert admin.post(execution_path(retry_id) + "/retry", {"agent_id": "x"}).status == 400


def test_a_running_shell_task_streams_its_output_live_to_followers(admin, workers, cluster):
    script = "sleep 1; for i in 1 2 3 4 5 6; do echo line $i; sleep 0.4; done"
    tid = task(admin, workers, "live-tail", ["/bin/sh", "-c", script])
    ws = WebSocket(cluster.admin_port, admin.token)
    assert ws.status == 101
    [eid] = admin.post(f"/api/v1/tasks/{tid}/trigger", {"agent_ids": [SECOND]}).data["execution_ids"]
    ws.send(json.dumps({"types": ["EVENT_TYPE_EXECUTION_LOG", "EVENT_TYPE_EXECUTION_UPDATED"],
                        "task_ids": [tid], "follow_execution_ids": [eid]}))
    text, offset, first_line_at, ended_at, so_far = "", 0, None, None, None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and ended_at is None:
        opcode, payload = ws.receive()
        event = json.loads(payload)
        if event["type"] == "EVENT_TYPE_EXECUTION_LOG":
            chunk = event["log"]
            assert chunk["execution_id"] == eid and int(chunk["offset"]) == offset, (chunk, offset)
            text += chunk["data"]
            offset = int(chunk["next_offset"])
            if first_line_at is None and "line 1" in text:
                first_line_at = time.monotonic()
            if "line 2" in text and not so_far:
                # While it runs, the log has what was printed so far (from what the agent streamed).
                so_far = admin.get(f"{execution_path(eid)}/logs").data
                assert so_far["source"] == "LOG_SOURCE_AGENT" and so_far["chunk"]["eof"] is False, so_far
                assert so_far["chunk"]["data"].startswith("line 1\nline 2\n"), so_far
        elif event.get("execution", {}).get("status") == "EXECUTION_STATUS_SUCCESS":
            ended_at = time.monotonic()
    assert text == "".join(f"line {i}\n" for i in range(1, 7)), text
    # Live: the first line came while the run still had two seconds to go.
    assert first_line_at is not None and ended_at is not None and ended_at - first_line_at > 1.0
    # Nothing of it for a client that does not follow the run.
    quiet = WebSocket(cluster.admin_port, admin.token)
    quiet.send(json.dumps({"types": ["EVENT_TYPE_EXECUTION_LOG"]}))
    time.sleep(0.3)
    [other] = admin.post(f"/api/v1/tasks/{tid}/trigger", {"agent_ids": [SECOND]}).data["execution_ids"]
    final(admin, other)
    quiet.sock.settimeout(0.5)
    with pytest.raises(OSError):
        quiet.receive()


def test_output_that_is_not_utf8_keeps_the_agents_byte_offsets_live_and_in_the_log_so_far(admin, workers, cluster):
    tid = task(admin, workers, "live-binary", ["/bin/sh", "-c", "sleep 0.5; printf 'a\\377b\\n'; sleep 1; printf 'c\\n'; sleep 1"])
    ws = WebSocket(cluster.admin_port, admin.token)
    [eid] = admin.post(f"/api/v1/tasks/{tid}/trigger", {"agent_ids": [SECOND]}).data["execution_ids"]
    ws.send(json.dumps({"types": ["EVENT_TYPE_EXECUTION_LOG"], "follow_execution_ids": [eid]}))
    chunks, so_far = [], None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(chunks) < 2:
        opcode, payload = ws.receive()
        event = json.loads(payload)
        if event["type"] != "EVENT_TYPE_EXECUTION_LOG":
            continue  # sent before the subscription took effect
        chunk = event["log"]
        chunks.append((int(chunk.get("offset", 0)), int(chunk["next_offset"]), chunk["data"]))
        if len(chunks) == 1:
            so_far = admin.get(f"{execution_path(eid)}/logs").data["chunk"]
    # 4 raw bytes, one replaced by U+FFFD (3 bytes in UTF-8): the next output starts at 4.
    assert chunks == [(0, 4, "a\ufffdb\n"), (4, 6, "c\n")], chunks
    assert (so_far["data"], int(so_far["next_offset"]), int(so_far["total_bytes"])) == ("a\ufffdb\n", 4, 4), so_far
    final(admin, eid)


def test_a_running_log_so_far_keeps_its_latest_mebibyte(admin, workers, cluster):
    # 1,536,000 bytes over ~1.5 s (within the agent's streaming rate), then the run waits.
    script = "for i in $(seq 1 15); do head -c 102400 /dev/zero | tr '\\0' x; sleep 0.1; done; sleep 30"
    tid = task(admin, workers, "live-long", ["/bin/sh", "-c", script])
    [eid] = admin.post(f"/api/v1/tasks/{tid}/trigger", {"agent_ids": [SECOND]}).data["execution_ids"]

    def all_streamed():
        log = admin.get(f"{execution_path(eid)}/logs?offset=1500000").data
        return log if int(log["chunk"].get("total_bytes", 0)) == 1536000 else None

    log = wait_for(all_streamed, 20, "the whole output streamed")
    assert log["source"] == "LOG_SOURCE_AGENT"
    assert (int(log["chunk"]["offset"]), log["chunk"]["data"], int(log["chunk"]["next_offset"])) == \
        (1500000, "x" * 36000, 1536000)
    # The first bytes were let go for the last 1 MiB: from 0, the log so far starts there.
    head = admin.get(f"{execution_path(eid)}/logs?offset=0").data
    assert head["source"] == "LOG_SOURCE_RECORD", head
    assert admin.post(f"{execution_path(eid)}/cancel", {"reason": "test done"}).status == 200
    final(admin, eid)


def close_reason(ws):
    """The close frame's status code and reason, skipping any event frames before it."""
    for _ in range(100):
        opcode, payload = ws.receive()
        if opcode == 8:
            return struct.unpack(">H", payload[:2])[0], payload[2:].decode()
    raise AssertionError("no close frame")


def test_a_subscription_following_more_than_10_runs_or_an_empty_id_is_closed_naming_the_field(admin, cluster):
    ws = WebSocket(cluster.admin_port, admin.token)
    ws.send(json.dumps({"follow_execution_ids": [f"t:{i}" for i in range(11)]}))
    assert close_reason(ws) == (1008, "follow_execution_ids: at most 10 executions, got 11")
    ws = WebSocket(cluster.admin_port, admin.token)
    ws.send(json.dumps({"follow_execution_ids": ["t:1", ""]}))
    assert close_reason(ws) == (1008, "follow_execution_ids[1]: must not be empty")
    ws = WebSocket(cluster.admin_port, admin.token)
    ws.send(json.dumps({"task_ids": ["x" * 300]}))
    assert close_reason(ws) == (1008, "task_ids[0]: longer than 256 bytes")
    # Ten are fine: the connection stays and takes a new subscription.
    ws = WebSocket(cluster.admin_port, admin.token)
    ws.send(json.dumps({"follow_execution_ids": [f"t:{i}" for i in range(10)]}))
    ws.send(json.dumps({"types": ["EVENT_TYPE_TASK_CHANGED"]}))
    ws.sock.settimeout(0.5)
    with pytest.raises(OSError):
        ws.receive()


def qfctl(cluster, admin, *args):
    """Runs qfctl against the cluster with the admin's session; (exit status, stdout, stderr)."""
    env = dict(os.environ, XDG_CONFIG_HOME=os.path.join(cluster.dir, "qfctl-config"))
    for name in ("QF_SERVER", "QF_TOKEN", "QF_CA_FILE"):
        env.pop(name, None)
    r = subprocess.run([cluster.qfctl, *args, "--server", cluster.base, "--token", admin.token], env=env,
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def read_whole_log(admin, eid, page):
    """Pages through GET /executions/{id}/logs with next_offset until eof."""
    text, offset, sources = [], 0, []
    for _ in range(100):
        r = admin.get(f"{execution_path(eid)}/logs?offset={offset}&max_bytes={page}")
        assert r.status == 200, r
        chunk = r.data["chunk"]
        assert int(chunk["offset"]) == offset and int(chunk["total_bytes"]) == len(FULL_LOG)
        text.append(chunk["data"])
        sources.append(r.data["source"])
        offset = int(chunk["next_offset"])
        if chunk["eof"]:
            return "".join(text), sources
    raise AssertionError("no eof after 100 pages")


def test_a_300_kb_log_is_read_in_full_from_the_agent_and_what_is_kept_when_it_is_offline(admin, workers, cluster):
    tid = task(admin, workers, "big-log", ["/usr/bin/seq", "1", str(LOG_LINES)])
    [eid] = admin.post(f"/api/v1/tasks/{tid}/trigger", {"agent_ids": [SECOND]}).data["execution_ids"]
    record = final(admin, eid)
    assert record["status"] == "EXECUTION_STATUS_SUCCESS" and record["output_truncated"] is True
    assert int(record["output_bytes"]) == len(FULL_LOG) and len(record["output"]) == 10240
    # Within the first 10 KB: the coordinator's copy.
    head = admin.get(f"{execution_path(eid)}/logs?max_bytes=1000").data
    assert head["source"] == "LOG_SOURCE_RECORD" and head["chunk"]["data"] == FULL_LOG[:1000]
    # Past it: from the agent, paged.
    text, sources = read_whole_log(admin, eid, 65536)
    assert text == FULL_LOG
    assert len(sources) == 5 and set(sources) == {"LOG_SOURCE_AGENT"}
    whole = admin.get(f"{execution_path(eid)}/logs?max_bytes=1048576").data
    assert whole["chunk"]["data"] == FULL_LOG and whole["chunk"]["eof"] is True and whole["truncated"] is False
    tail = admin.get(f"{execution_path(eid)}/logs?offset={len(FULL_LOG) - 6}").data
    assert tail["chunk"]["data"] == "52000\n" and tail["chunk"]["eof"] is True
    status, out, err = qfctl(cluster, admin, "exec", "logs", eid)
    assert status == 0 and out == FULL_LOG, (status, len(out), err)
    assert admin.get(f"{execution_path(eid)}/logs?max_bytes=1048577").status == 400
    assert admin.get(f"{execution_path(eid)}/logs?offset=-1").status == 400
    # The agent goes away: what the coordinator keeps is still served, with why the rest is not.
    cluster.second.send_signal(signal.SIGTERM)
    cluster.second.wait(timeout=20)
    wait_for(lambda: admin.get(f"/api/v1/agents/{SECOND}").data["state"] != "AGENT_STATE_ONLINE", 30, "agent offline")
    kept = admin.get(f"{execution_path(eid)}/logs?max_bytes=65536")
    assert kept.status == 200, kept
    assert kept.data["source"] == "LOG_SOURCE_RECORD" and kept.data["truncated"] is True
    assert kept.data["chunk"]["data"] == FULL_LOG[:10240]
    assert SECOND in kept.data["agent_log_error"] and "not online" in kept.data["agent_log_error"]
    beyond = admin.get(f"{execution_path(eid)}/logs?offset=20000")
    assert beyond.status == 503, beyond
    assert SECOND in beyond.json["message"] and "not online" in beyond.json["message"]
    status, out, err = qfctl(cluster, admin, "exec", "logs", eid)
    assert status == 0 and out == FULL_LOG[:10240] and SECOND in err and "not online" in err, (status, len(out), err)
    # Nor is a run of that agent retried elsewhere.
    retry = admin.post(execution_path(eid) + "/retry")
    assert retry.status == 409 and SECOND in retry.json["message"] and "not online" in retry.json["message"], retry
