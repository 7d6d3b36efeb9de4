# SPDX-License-Identifier: Apache-2.0
# Monitor pings (POST /api/v1/ping/{token}, /start, /fail: no authentication, the token is the
# credential) and channel tests, in the api.admin session on both stores. What reaches a
# receiver end to end is in test_alerts_e2e.py (a cluster of its own).
from conftest import free_port


def test_pings_record_the_monitor_state_and_an_unknown_token_is_refused(admin, anonymous):
    created = admin.post("/api/v1/monitors", {"id": "ping-job", "period_seconds": 3600})
    assert created.status == 201, created
    token = created.data["token"]
    started = anonymous.post(f"/api/v1/ping/{token}/start", raw=b"", pattern="/api/v1/ping/{token}/start")
    assert started.status == 200 and int(started.data["last_start_unix_ms"]) > 0, started
    assert started.data["status"] == "NEW" and token not in started.body
    failed = anonymous.post(f"/api/v1/ping/{token}/fail", raw=b"", pattern="/api/v1/ping/{token}/fail")
    assert failed.status == 200 and failed.data["status"] == "DOWN", failed
    ok = anonymous.post(f"/api/v1/ping/{token}", raw=b"", pattern="/api/v1/ping/{token}")
    assert ok.status == 200 and ok.data["status"] == "UP", ok
    stored = admin.get("/api/v1/monitors/ping-job").data
    assert stored["status"] == "UP" and stored["last_ping_unix_ms"] == ok.data["last_ping_unix_ms"]
    unknown = anonymous.post("/api/v1/ping/" + "x" * 43, raw=b"", pattern="/api/v1/ping/{token}")
    assert unknown.status == 404 and unknown.json["details"][0]["field"] == "token", unknown
    big = anonymous.post(f"/api/v1/ping/{token}", raw=b"{}" + b" " * 20000, pattern="/api/v1/ping/{token}")
    assert big.status == 400 and big.json["details"][0]["field"] == "body", big
    assert admin.get("/api/v1/monitors/ping-job").data["last_ping_unix_ms"] == ok.data["last_ping_unix_ms"]
    assert admin.delete("/api/v1/monitors/ping-job").status == 200


def test_channel_test_answers_with_the_failed_attempt_and_records_it(admin, anonymous):
    closed = {"id": "test-closed", "type": "CHANNEL_TYPE_WEBHOOK", "url": f"http://127.0.0.1:{free_port()}/x",
              "timeout_seconds": 2}
    assert admin.post("/api/v1/channels", closed).status == 201
    r = admin.post("/api/v1/channels/test-closed/test", raw=b"", pattern="/api/v1/channels/{id}/test")
    assert r.status == 200, r
    assert r.data["state"] == "DELIVERY_STATE_FAILED" and r.data["attempts"][0]["error"], r
    assert r.data["notification"]["kind"] == "NOTIFICATION_KIND_TEST"
    listed = admin.get("/api/v1/deliveries?channel_id=test-closed").data["items"]
    assert [d["id"] for d in listed] == [r.data["id"]]
    assert admin.post("/api/v1/channels/nope/test", raw=b"", pattern="/api/v1/channels/{id}/test").status == 404
    assert anonymous.post("/api/v1/channels/test-closed/test", raw=b"",
                          pattern="/api/v1/channels/{id}/test").status == 401
    assert admin.delete("/api/v1/channels/test-closed").status == 200
