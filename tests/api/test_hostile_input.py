# SPDX-License-Identifier: Apache-2.0
# Hostile input against a real qf-coordinator: datagrams that are not QUIC, bytes that are
# not UTF-8, lists without end, cross-origin writes, one client hoarding connections.
import http.client
import json
import os
import socket
import stat
import time

from conftest import wait_for

TASK = {
    "name": "hostile-probe",
    "schedule": {"manual": {}},
    "shell": {"argv": ["/bin/true"]},
}


def test_empty_and_truncated_datagrams_do_not_crash_the_coordinator(cluster, anonymous):
    # The report: two empty datagrams one second apart aborted qf-coordinator inside
    # ngtcp2 (an assertion), before any authentication.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        target = ("127.0.0.1", cluster.agent_port)
        s.sendto(b"", target)
        time.sleep(1)
        s.sendto(b"", target)
        for n in range(1, 40):  # every prefix of a long header, then short headers
            s.sendto((b"\xc3\x00\x00\x00\x01\x12" + b"d" * 18 + b"\x08" + b"s" * 8)[:n], target)
            s.sendto(b"\x40" * n, target)
        s.sendto(b"\xc3\x00\x00\x00\x01\xff", target)
    time.sleep(0.5)
    assert cluster.coordinator.poll() is None, cluster.log("coordinator")[-2000:]
    assert anonymous.get("/readyz").status == 200
    # The connected agent's session survived too: it is still online.
    wait_for(lambda: cluster.coordinator.poll() is None and "dropped a datagram" in cluster.log("coordinator"), 5,
             "the coordinator's note of dropped datagrams")


def test_a_body_that_is_not_utf8_is_refused_with_a_json_reply(admin):
    raw = json.dumps(dict(TASK, name="PLACEHOLDER")).encode().replace(b"PLACEHOLDER", b"bad\xff\xfename")
    r = admin.call("POST", "/api/v1/tasks", raw=raw)
    assert r.status == 400, r
    assert r.json is not None, r.body  # valid JSON, hence valid UTF-8
    assert r.json["details"][0]["field"] == "body"
    assert "not valid UTF-8" in r.json["message"]


def test_query_values_and_path_ids_that_are_not_utf8_are_refused(admin):
    # Found by fuzzing: an overlong sequence in a query value reached a reply that was not UTF-8.
    for path in ("/api/v1/executions?task_id=%E0%8C%8B", "/api/v1/executions?task_id=%FF", "/api/v1/tasks/%FF%FE"):
        r = admin.get(path)
        assert r.status == 400, (path, r)
        assert r.json is not None, r.body


def test_error_messages_quoting_input_stay_utf8(admin):
    # A name with a valid but unusual character is echoed; the reply is still JSON.
    r = admin.post("/api/v1/tasks", dict(TASK, name="caf\u00e9 \u0000x"))
    assert r.status == 400, r
    assert r.json is not None and r.json["details"][0]["field"] == "name"


def test_huge_and_duplicate_lists_are_refused_and_change_nothing(admin):
    workers = next(g["group"]["id"] for g in admin.get("/api/v1/groups").data["items"] if g["group"]["name"] == "workers")
    before = admin.get("/api/v1/tasks?page_size=200").data
    # The report's body: half a million exit codes in just under 1 MiB, accepted then.
    huge = dict(TASK, retry={"max_retries": 1, "retry_on_exit_codes": [3] * 500000})
    raw = json.dumps(huge, separators=(",", ":")).encode()
    assert len(raw) < 1024 * 1024
    r = admin.call("POST", "/api/v1/tasks", raw=raw)
    assert r.status == 400, r
    assert r.json["details"][0]["field"] == "retry.retry_on_exit_codes", r
    assert "has 500000 elements; at most 10000" in r.json["details"][0]["reason"]
    over = dict(TASK, retry={"max_retries": 1, "retry_on_exit_codes": list(range(1, 256)) * 50})
    r = admin.post("/api/v1/tasks", over)
    assert r.status == 400, r
    assert r.json["details"][0]["field"] == "retry.retry_on_exit_codes", r
    assert "at most 10000" in r.json["details"][0]["reason"]
    dup_exit = dict(TASK, retry={"max_retries": 1, "retry_on_exit_codes": [3, 4, 3]})
    r = admin.post("/api/v1/tasks", dup_exit)
    assert r.status == 400, r
    assert r.json["details"][0] == {"field": "retry.retry_on_exit_codes[2]", "reason": "repeats retry.retry_on_exit_codes[0]"}
    dup_groups = dict(TASK, group_ids=[workers] * 5)
    r = admin.post("/api/v1/tasks", dup_groups)
    assert r.status == 400, r
    assert r.json["details"][0]["field"] == "group_ids[1]"
    many_groups = dict(TASK, group_ids=[f"g{i}" for i in range(65)])
    r = admin.post("/api/v1/tasks", many_groups)
    assert r.status == 400 and "at most 64" in r.json["details"][0]["reason"], r
    after = admin.get("/api/v1/tasks?page_size=200").data
    assert after["total"] == before["total"]


def test_the_openapi_document_states_the_bounds(anonymous, admin):
    r = admin.get("/api/v1/openapi.json")
    assert r.status == 200, r
    text = r.body
    assert "maxItems" in text, "the OpenAPI document names no list bound"


def test_cross_origin_writes_are_refused_same_origin_and_no_origin_pass(cluster, admin):
    host = f"127.0.0.1:{cluster.admin_port}"
    r = admin.post("/api/v1/tasks", dict(TASK, name="from-evil"), headers={"Origin": "http://evil.example"})
    assert r.status == 403, r
    assert "cross-origin" in r.json["message"]
    assert int(admin.get("/api/v1/tasks?keyword=from-evil").data["total"]) == 0
    # Reads from anywhere are fine (CORS decides what a page may see).
    assert admin.get("/api/v1/tasks", headers={"Origin": "http://evil.example"}).status == 200
    r = admin.post("/api/v1/tasks", dict(TASK, name="same-origin"), headers={"Origin": f"http://{host}"})
    assert r.status == 201, r
    assert admin.delete(f"/api/v1/tasks/{r.data['id']}").status in (200, 204)


def test_one_address_hoarding_connections_does_not_lock_out_others(cluster, anonymous):
    # 80 idle connections from 127.0.0.3: beyond 64 they are answered 503 at once, while
    # 127.0.0.1 is still served.
    held = []
    try:
        refused = 0
        for _ in range(80):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.3", 0))
            s.connect(("127.0.0.1", cluster.admin_port))
            held.append(s)
        time.sleep(0.3)
        for s in held:
            s.setblocking(False)
            try:
                if s.recv(64).startswith(b"HTTP/1.1 503"):
                    refused += 1
            except BlockingIOError:
                pass
        assert refused == 16, refused
        assert anonymous.get("/readyz").status == 200
        conn = http.client.HTTPConnection("127.0.0.1", cluster.admin_port, timeout=5, source_address=("127.0.0.2", 0))
        conn.request("GET", "/healthz")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        for s in held:
            s.close()


def test_databases_and_keys_are_private(cluster):
    db = os.path.join(cluster.dir, "data", "coordinator.db")
    if cluster.pg is None:  # on PostgreSQL the coordinator keeps no database file
        assert stat.S_IMODE(os.stat(db).st_mode) == 0o600, oct(os.stat(db).st_mode)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(db + suffix):
                assert stat.S_IMODE(os.stat(db + suffix).st_mode) & 0o077 == 0, suffix
    else:
        assert not os.path.exists(db)
    agent_db = os.path.join(cluster.dir, "agent-data", "agent.db")
    assert stat.S_IMODE(os.stat(agent_db).st_mode) == 0o600
