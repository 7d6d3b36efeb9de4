# SPDX-License-Identifier: Apache-2.0
# Alerting end to end, counted at a receiver: a real qf-coordinator and qf-agent, a local
# HTTP receiver that checks every webhook and callback signature (README "Alerts") and counts
# what it acknowledged by notification id. Its own cluster: the coordinator is killed (-9).
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ADMIN_PASSWORD, Api, free_port, started_cluster, wait_for

HOOK_SECRET = "hook-signing-key"
CALLBACK_SECRET = "callback-signing-key"


class Receiver:
    """Answers POSTs with the status set for their path (200 by default), after an optional
    delay; records each request when it arrives and when it was answered."""

    def __init__(self):
        self.lock = threading.Lock()
        self.arrived = []  # every request, when it arrived
        self.status = {}
        self.delay = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                path = self.path
                secret = CALLBACK_SECRET if path.startswith("/callback") else HOOK_SECRET
                timestamp = self.headers.get("X-QuartzFlow-Timestamp", "")
                expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                                                hashlib.sha256).hexdigest()
                record = {"path": path, "headers": dict(self.headers), "body": json.loads(body), "at": time.time(),
                          "signed": hmac.compare_digest(expected, self.headers.get("X-QuartzFlow-Signature", "")),
                          "answered": None}
                with receiver.lock:
                    receiver.arrived.append(record)
                    status = receiver.status.get(path, 200)
                    delay = receiver.delay.get(path, 0)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                    record["answered"] = status
                except OSError:
                    pass  # the sender died meanwhile

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def acknowledged(self, path, kind=None):
        """Notifications (or callbacks) answered 2xx on `path`, of `kind` when given."""
        with self.lock:
            return [r for r in self.arrived if r["path"] == path and r["answered"] == 200 and
                    (kind is None or r["body"].get("kind") == kind)]

    def ids(self, path):
        counts = {}
        for r in self.acknowledged(path):
            key = r["headers"].get("X-QuartzFlow-Notification-Id")
            counts[key] = counts.get(key, 0) + 1
        return counts


@pytest.fixture(scope="module")
def env():
    cluster = started_cluster()
    receiver = Receiver()
    api = Api(cluster.base)
    r = api.post("/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 200, r
    api = api.with_token(r.data["session_token"])
    wait_for(lambda: api.get("/api/v1/agents?state=online").data["items"], 30, "the agent online")
    groups = api.get("/api/v1/groups?keyword=workers").data["items"]
    workers = next(g["group"]["id"] for g in groups if g["group"]["name"] == "workers")
    for cid in ("hook", "down", "slow"):
        channel = {"id": cid, "type": "CHANNEL_TYPE_WEBHOOK", "url": f"{receiver.url}/{cid}",
                   "secret": {"value": HOOK_SECRET}, "timeout_seconds": 10}
        assert api.post("/api/v1/channels", channel).status == 201
    yield cluster, receiver, api, workers
    cluster.stop()
    receiver.server.shutdown()
    shutil.rmtree(cluster.dir, ignore_errors=True)


def make_task(api, workers, name, fail_flag, **extra):
    body = {"name": name, "group_ids": [workers], "schedule": {"manual": {}},
            "placement": {"mode": "PLACEMENT_MODE_ONE"}, "timeout_seconds": 30,
            "shell": {"argv": ["sh", "-c", f"test ! -e {fail_flag}"]}, **extra}
    r = api.post("/api/v1/tasks", body)
    assert r.status == 201, r
    return r.data["id"]


def run(api, task_id):
    r = api.post(f"/api/v1/tasks/{task_id}/trigger", {})
    assert r.status == 200, r
    eid = r.data["execution_ids"][0]
    path = "/api/v1/executions/" + urllib.parse.quote(eid, safe="")

    def done():
        e = api.get(path).data
        return e if e["status"] not in ("EXECUTION_STATUS_PENDING", "EXECUTION_STATUS_RUNNING") else None

    return wait_for(done, 30, f"{eid} to end")


def rule(api, rid, condition, channel, **extra):
    body = {"id": rid, "condition": condition, "severity": "ALERT_SEVERITY_CRITICAL", "channel_ids": [channel],
            "group_wait_seconds": 1, "group_interval_seconds": 1, **extra}
    r = api.post("/api/v1/alert-rules", body)
    assert r.status == 201, r


def of_rule(records, rid):
    return [r for r in records if r["body"].get("rule_id") == rid]


def test_three_failures_notify_once_firing_then_once_resolved(env):
    cluster, receiver, api, workers = env
    flag = os.path.join(cluster.dir, "flaky-fails")
    open(flag, "w").close()
    tid = make_task(api, workers, "flaky", flag)
    rule(api, "three-failures", "ALERT_CONDITION_CONSECUTIVE_FAILURES", "hook", consecutive_failures=3,
         scope={"task_ids": [tid]})
    time.sleep(0.5)  # the engine reads rules changed through this API at once; this is margin
    runs = [run(api, tid) for _ in range(3)]
    assert [r["status"] for r in runs] == ["EXECUTION_STATUS_FAILURE"] * 3
    firing = wait_for(lambda: of_rule(receiver.acknowledged("/hook", "NOTIFICATION_KIND_FIRING"), "three-failures"),
                      10, "the FIRING notification")
    latency = firing[0]["at"] - int(runs[-1]["ended_unix_ms"]) / 1000
    print(f"third failure ended -> FIRING at the receiver: {latency:.2f} s (group_wait 1 s)")
    assert latency < 4, latency
    assert all(r["signed"] for r in firing)
    items = firing[0]["body"]["items"]
    assert [i["alert"]["task_id"] for i in items] == [tid]
    time.sleep(2.5)
    assert len(of_rule(receiver.acknowledged("/hook", "NOTIFICATION_KIND_FIRING"), "three-failures")) == 1
    alerts = api.get("/api/v1/alerts?state=ALERT_STATE_FIRING&rule_id=three-failures").data["items"]
    assert len(alerts) == 1 and alerts[0]["task_id"] == tid

    os.remove(flag)
    assert run(api, tid)["status"] == "EXECUTION_STATUS_SUCCESS"
    resolved = wait_for(
        lambda: of_rule(receiver.acknowledged("/hook", "NOTIFICATION_KIND_RESOLVED"), "three-failures"), 10,
        "the RESOLVED notification")
    time.sleep(2.5)
    assert len(of_rule(receiver.acknowledged("/hook", "NOTIFICATION_KIND_RESOLVED"), "three-failures")) == 1
    assert len(of_rule(receiver.acknowledged("/hook", "NOTIFICATION_KIND_FIRING"), "three-failures")) == 1
    assert resolved[0]["signed"]
    assert api.get("/api/v1/alerts?state=ALERT_STATE_FIRING&rule_id=three-failures").data["items"] == []
    metrics = api.get("/metrics").body
    assert "qf_alert_notifications_enqueued_total" in metrics
    assert 'qf_alert_deliveries_total{kind="notification",channel_type="webhook",result="delivered"}' in metrics


def test_a_run_far_above_its_tasks_p95_raises_the_duration_alert(env):
    cluster, receiver, api, workers = env
    slow_flag = os.path.join(cluster.dir, "steady-is-slow")
    r = api.post("/api/v1/tasks", {"name": "steady", "group_ids": [workers], "schedule": {"manual": {}},
                                   "placement": {"mode": "PLACEMENT_MODE_ONE"}, "timeout_seconds": 30,
                                   "shell": {"argv": ["sh", "-c", f"if [ -e {slow_flag} ]; then sleep 2; fi"]}})
    assert r.status == 201, r
    tid = r.data["id"]
    rule(api, "p95-slow", "ALERT_CONDITION_DURATION_ABOVE", "hook", duration_p95_factor=5, scope={"task_ids": [tid]})
    fast = [run(api, tid) for _ in range(20)]  # a p95 needs 20 finished runs
    assert all(r["status"] == "EXECUTION_STATUS_SUCCESS" for r in fast)
    time.sleep(3)  # the leader reads the tasks' p95 again (alerts.p95_refresh_seconds: 1, refresh every 2 s)
    assert of_rule(receiver.acknowledged("/hook", "NOTIFICATION_KIND_FIRING"), "p95-slow") == []
    open(slow_flag, "w").close()
    slow = run(api, tid)
    assert int(slow["duration_ms"]) >= 2000
    firing = wait_for(lambda: of_rule(receiver.acknowledged("/hook", "NOTIFICATION_KIND_FIRING"), "p95-slow"), 10,
                      "the duration alert")
    assert [i["alert"]["task_id"] for i in firing[0]["body"]["items"]] == [tid]
    assert firing[0]["body"]["items"][0]["alert"]["execution_id"] == slow["execution_id"]


def test_receiver_down_then_up_gets_the_backlog_once(env):
    cluster, receiver, api, workers = env
    receiver.status["/down"] = 503
    tid = make_task(api, workers, "down-task", "/")  # `test ! -e /` fails
    rule(api, "down-rule", "ALERT_CONDITION_RUN_FAILED", "down", scope={"task_ids": [tid]})
    time.sleep(0.5)
    assert run(api, tid)["status"] == "EXECUTION_STATUS_FAILURE"
    wait_for(lambda: any(r["path"] == "/down" for r in receiver.arrived), 10, "a first attempt at /down")
    metrics = api.get("/metrics").body
    assert 'qf_alerts_firing{rule="down-rule",severity="critical"} 1' in metrics
    time.sleep(1)
    assert receiver.acknowledged("/down") == []
    receiver.status["/down"] = 200
    # The retry comes 4-5 s after the refused attempt (5 s less up to 20 %).
    wait_for(lambda: receiver.acknowledged("/down"), 15, "the backlog at /down")
    time.sleep(2)
    counts = receiver.ids("/down")
    assert counts and all(n == 1 for n in counts.values()), counts
    deliveries = api.get("/api/v1/deliveries?channel_id=down").data["items"]
    assert {d["id"] for d in deliveries} == set(counts)
    assert all(d["state"] == "DELIVERY_STATE_DELIVERED" and d["attempt_count"] >= 2 for d in deliveries)
    assert deliveries[0]["attempts"][0]["http_status"] == 503

    # An acknowledgement stays when the engine updates the alert (another failure counted).
    [alert] = api.get("/api/v1/alerts?state=ALERT_STATE_FIRING&rule_id=down-rule").data["items"]
    path = "/api/v1/alerts/" + urllib.parse.quote(alert["id"], safe="")
    assert api.post(path + "/ack", {"comment": "on it"}).status == 200
    assert run(api, tid)["status"] == "EXECUTION_STATUS_FAILURE"
    updated = wait_for(lambda: (lambda a: a if a["count"] >= 2 else None)(api.get(path).data), 10,
                       "the alert to count the second failure")
    assert updated["acknowledged_by"] == "admin" and updated["acknowledge_comment"] == "on it", updated


def test_monitor_whose_pings_stop_raises_its_alert_on_time(env):
    cluster, receiver, api, workers = env
    r = api.post("/api/v1/monitors", {"id": "backup-job", "period_seconds": 2, "grace_seconds": 1})
    assert r.status == 201, r
    token = r.data["token"]
    rule(api, "backup-down", "ALERT_CONDITION_MONITOR_DOWN", "hook", scope={"monitor_ids": ["backup-job"]})
    anonymous = Api(cluster.base)
    last = None
    for _ in range(3):
        pinged = anonymous.post(f"/api/v1/ping/{token}", raw=b"")
        assert pinged.status == 200, pinged
        last = int(pinged.data["last_ping_unix_ms"])
        time.sleep(1)
    assert of_rule(receiver.acknowledged("/hook"), "backup-down") == []
    deadline = (last + 3000) / 1000
    firing = wait_for(lambda: of_rule(receiver.acknowledged("/hook", "NOTIFICATION_KIND_FIRING"), "backup-down"),
                      10, "the monitor's FIRING notification")
    late = firing[0]["at"] - deadline
    print(f"monitor deadline -> FIRING at the receiver: {late:.2f} s (group_wait 1 s)")
    assert 0 <= late < 3, late
    assert firing[0]["body"]["items"][0]["alert"]["monitor_id"] == "backup-job"
    assert api.get("/api/v1/monitors/backup-job").data["status"] == "DOWN"
    assert anonymous.post(f"/api/v1/ping/{token}", raw=b"").status == 200
    wait_for(lambda: of_rule(receiver.acknowledged("/hook", "NOTIFICATION_KIND_RESOLVED"), "backup-down"), 10,
             "the monitor's RESOLVED notification")
    assert api.get("/api/v1/monitors/backup-job").data["status"] == "UP"
    assert api.delete("/api/v1/monitors/backup-job").status == 200  # silent from here on


def test_result_callback_reaches_the_receiver_with_the_execution_id(env):
    cluster, receiver, api, workers = env
    tid = make_task(api, workers, "with-callback", os.path.join(cluster.dir, "never"),
                    callbacks=[{"url": f"{receiver.url}/callback", "secret": {"value": CALLBACK_SECRET}}])
    record = run(api, tid)
    got = wait_for(lambda: receiver.acknowledged("/callback"), 10, "the result callback")
    assert len(got) == 1
    assert got[0]["headers"]["X-QuartzFlow-Execution-Id"] == record["execution_id"]
    assert got[0]["signed"]
    assert got[0]["body"]["status"] == "EXECUTION_STATUS_SUCCESS"


def test_channel_test_sends_now_and_answers_with_the_attempt(env):
    cluster, receiver, api, workers = env
    r = api.post("/api/v1/channels/hook/test", raw=b"")
    assert r.status == 200, r
    assert r.data["state"] == "DELIVERY_STATE_DELIVERED" and r.data["attempts"][0]["http_status"] == 200
    tests = receiver.acknowledged("/hook", "NOTIFICATION_KIND_TEST")
    assert len(tests) == 1 and tests[0]["signed"]
    assert tests[0]["headers"]["X-QuartzFlow-Notification-Id"] == r.data["id"]
    closed = {"id": "closed", "type": "CHANNEL_TYPE_WEBHOOK", "url": f"http://127.0.0.1:{free_port()}/x",
              "timeout_seconds": 2}
    assert api.post("/api/v1/channels", closed).status == 201
    r = api.post("/api/v1/channels/closed/test", raw=b"")
    assert r.status == 200, r
    assert r.data["state"] == "DELIVERY_STATE_FAILED" and r.data["attempts"][0]["error"], r
    assert api.get(f"/api/v1/deliveries?channel_id=closed").data["items"][0]["id"] == r.data["id"]
    assert api.post("/api/v1/channels/nope/test", raw=b"").status == 404
    env_vars = dict(os.environ, QF_SERVER=cluster.base, QF_TOKEN=api.token, HOME=cluster.dir)
    qfctl = [cluster.qfctl, "channel", "test"]
    ok = subprocess.run(qfctl + ["hook"], env=env_vars, capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "delivered through channel hook (HTTP 200" in ok.stdout, ok
    assert len(receiver.acknowledged("/hook", "NOTIFICATION_KIND_TEST")) == 2
    bad = subprocess.run(qfctl + ["closed"], env=env_vars, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "through channel closed failed (no HTTP answer)" in bad.stderr, bad


def test_kill_9_mid_delivery_loses_nothing_and_repeats_only_what_was_in_flight(env):
    cluster, receiver, api, workers = env
    receiver.delay["/slow"] = 3
    tid = make_task(api, workers, "slow-task", "/")
    rule(api, "slow-rule", "ALERT_CONDITION_RUN_FAILED", "slow", scope={"task_ids": [tid]})
    time.sleep(0.5)
    assert run(api, tid)["status"] == "EXECUTION_STATUS_FAILURE"
    wait_for(lambda: any(r["path"] == "/slow" for r in receiver.arrived), 10, "a delivery in flight at /slow")
    before = {path: receiver.ids(path) for path in ("/hook", "/down")}
    cluster.coordinator.send_signal(signal.SIGKILL)
    cluster.coordinator.wait()
    receiver.delay["/slow"] = 0
    with open(cluster.config) as f:
        config = f.read()
    bad = os.path.join(cluster.dir, "bad-console-url.yaml")
    alerts = "alerts: {p95_refresh_seconds: 1}"  # conftest's alerts section: one per file
    assert alerts in config
    with open(bad, "w") as f:
        f.write(config.replace(alerts, "alerts: {p95_refresh_seconds: 1, console_url: ftp://console.example}"))
    refused = subprocess.run([cluster.coordinator_bin, "--config", bad], capture_output=True, text=True, timeout=30,
                             cwd=cluster.dir)
    assert refused.returncode == 2 and "alerts.console_url" in refused.stderr, refused.stderr
    with open(cluster.config, "w") as f:
        f.write(config.replace(alerts, "alerts: {p95_refresh_seconds: 1, console_url: http://console.example/}"))
    cluster.coordinator = cluster.start("coordinator-restarted", [cluster.coordinator_bin, "--config", cluster.config])
    wait_for(cluster.ready, 30, "the restarted coordinator's /readyz")

    def delivered():
        items = api.get("/api/v1/deliveries?channel_id=slow").data["items"]
        return items if items and all(d["state"] == "DELIVERY_STATE_DELIVERED" for d in items) else None

    stored = wait_for(delivered, 15, "the notification in flight, sent again and recorded")
    time.sleep(2)
    slow = receiver.ids("/slow")
    assert set(slow) == {d["id"] for d in stored} and len(stored) == 1
    # The one in flight arrived twice (at least once: the receiver deduplicates on its id) ...
    assert len([r for r in receiver.arrived if r["path"] == "/slow"]) == 2
    # ... and what was acknowledged before the kill was not sent again.
    after = {path: receiver.ids(path) for path in ("/hook", "/down")}
    assert after == before and all(n == 1 for ids in after.values() for n in ids.values()), after
    # The restarted coordinator's alerts.console_url reaches what it sends.
    tested = api.post("/api/v1/channels/hook/test", raw=b"")
    assert tested.status == 200 and tested.data["notification"]["console_url"] == "http://console.example", tested
