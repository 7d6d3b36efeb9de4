# SPDX-License-Identifier: Apache-2.0
# The web console end to end: a real qf-coordinator (serving the built console) and a real
# qf-agent (conftest's cluster), headless Chromium driven by console_e2e.mjs (playwright-core
# from the console's node_modules, Debian's chromium). Skipped when Node, the console's
# packages, its build or Chromium are missing (./tools/qf test provides them).
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "api"))
import conftest  # noqa: E402  (tests/api: the cluster and the HTTP client)

CONSOLE = os.path.join(ROOT, "src", "admin", "console")
VIEWER_PASSWORD = "reads the console only 42"


def chromium():
    for name in (os.environ.get("QF_CHROMIUM", ""), "chromium", "chromium-browser"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def bundle_size():
    raw = gz = 0
    dist = os.path.join(CONSOLE, "dist")
    for folder, _, files in os.walk(dist):
        for name in files:
            size = os.path.getsize(os.path.join(folder, name))
            if name.endswith(".gz"):
                gz += size
            else:
                raw += size
                if not os.path.exists(os.path.join(folder, name + ".gz")):
                    gz += size
    return raw, gz


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(*fields):
    """A protobuf record from (number, value) pairs: ints as varints, str/bytes length-delimited."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, int):
            out += _varint(number << 3) + _varint(value)
        else:
            data = value.encode() if isinstance(value, str) else value
            out += _varint(number << 3 | 2) + _varint(len(data)) + data
    return bytes(out)


def seed_alerts(cluster, admin):
    """A firing alert and a failed delivery, written into the coordinator's SQLite store (the API
    lists and acknowledges alerts but only the alert engine raises them): what the alert pages
    show and acknowledge when this coordinator has no engine raising one from a failed run."""
    now = int(time.time() * 1000)
    tasks = admin.get("/api/v1/tasks?keyword=console-fail").data["items"]
    task_id = tasks[0]["task"]["id"]
    alert_id = f"e2e-seeded:task:{task_id}:{now - 120000}"
    alert = _pb((1, alert_id), (2, "e2e-seeded"), (3, 1), (4, 3), (5, 3), (6, task_id),
                (9, "3 failures in a row (seeded by the test)"), (10, now - 120000), (13, 3))
    attempt = _pb((1, now - 60000), (2, 503), (3, "503 Service Unavailable from hooks.example.com"),
                  (4, 812))
    notification = _pb((1, "n-e2e-1"), (2, 1), (3, "e2e-seeded"))
    delivery = _pb((1, "d-e2e-1"), (2, 1), (3, 1), (4, "e2e-hook"), (5, notification), (8, now - 61000),
                   (9, now + 300000), (10, attempt), (11, 3))
    db = sqlite3.connect(os.path.join(cluster.dir, "data", "coordinator.db"), timeout=10)
    with db:
        db.execute("INSERT INTO alerts (id, rule_id, state, task_id, started_unix_ms, record) VALUES (?,?,?,?,?,?)",
                   (alert_id, "e2e-seeded", 1, task_id, now - 120000, alert))
        db.execute("INSERT INTO deliveries (id, kind, state, channel_id, execution_id, created_unix_ms, "
                   "next_attempt_unix_ms, updated_unix_ms, record) VALUES (?,?,?,?,?,?,?,?,?)",
                   ("d-e2e-1", 1, 1, "e2e-hook", "", now - 61000, now + 300000, now - 60000, delivery))
    db.close()
    listed = admin.get("/api/v1/alerts?state=ALERT_STATE_FIRING").data["items"]
    assert any(a["id"] == alert_id for a in listed), listed


def test_console_in_chromium():
    node = shutil.which("node")
    browser = chromium()
    missing = [what for what, ok in (
        ("node", node),
        ("chromium", browser),
        ("src/admin/console/node_modules (npm ci)", os.path.isdir(os.path.join(CONSOLE, "node_modules", "playwright-core"))),
        ("src/admin/console/dist (npm run build)", os.path.exists(os.path.join(CONSOLE, "dist", "index.html"))),
    ) if not ok]
    if missing:
        pytest.skip("console test needs: " + ", ".join(missing))

    cluster = conftest.started_cluster()
    try:
        api = conftest.Api(cluster.base)
        login = api.post("/api/v1/auth/login", {"username": "admin", "password": conftest.ADMIN_PASSWORD})
        admin = api.with_token(login.data["session_token"])
        assert "built in" in cluster.log("coordinator") or "web console" in cluster.log("coordinator")
        # A viewer, and 100 manual tasks for the list's render time (disabled: they never run).
        r = admin.post("/api/v1/users", {"user": {"username": "viewer", "role": "ROLE_VIEWER"},
                                         "password": VIEWER_PASSWORD})
        assert r.status in (200, 201), r
        groups = admin.get("/api/v1/groups").data["items"]
        workers = next(g["group"]["id"] for g in groups if g["group"]["name"] == "workers")
        for i in range(100):
            r = admin.post("/api/v1/tasks", {
                "name": f"bulk-{i:03d}", "description": "a manual task for the list test", "enabled": False,
                "schedule": {"manual": {}}, "shell": {"script": "true"}, "group_ids": [workers]})
            assert r.status == 201, r
        # Run from the console with "Run now": slow output (live log), 300 KB of output (the
        # full log read from the agent in slices), a failure (retried on its agent).
        for name, script in (("console-live", "for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done"),
                             ("console-big", "head -c 300000 /dev/zero | tr '\\0' x | fold -w 99"),
                             ("console-fail", "echo failing on purpose; exit 3")):
            r = admin.post("/api/v1/tasks", {"name": name, "schedule": {"manual": {}}, "shell": {"script": script},
                                             "group_ids": [workers]})
            assert r.status == 201, r
        # The alert pages acknowledge an alert a failed run raises; a coordinator without the alert
        # engine (no ping or channel test routes) raises none: one is seeded for them.
        paths = admin.get("/api/v1/openapi.json").json["paths"]
        if "/api/v1/ping/{token}" not in paths or "/api/v1/channels/{id}/test" not in paths:
            seed_alerts(cluster, admin)
        conftest.wait_for(lambda: any(a["state"] == "AGENT_STATE_ONLINE"
                                      for a in admin.get("/api/v1/agents").data["items"]), 30, "the agent online")

        screenshots = os.path.join(os.environ.get("QF_BUILD_DIR", os.path.join(ROOT, "build")), "console-screenshots")
        os.makedirs(screenshots, exist_ok=True)
        env = dict(os.environ, QF_CONSOLE_URL=cluster.base, QF_ADMIN_PASSWORD=conftest.ADMIN_PASSWORD,
                   QF_VIEWER_PASSWORD=VIEWER_PASSWORD, QF_CHROMIUM=browser, QF_SCREENSHOTS=screenshots,
                   QF_CONSOLE_DIR=CONSOLE)
        run = subprocess.run([node, os.path.join(HERE, "console_e2e.mjs")], env=env, capture_output=True, text=True,
                             timeout=210)
        sys.stdout.write(run.stdout)
        sys.stderr.write(run.stderr[-4000:])
        raw, gz = bundle_size()
        print(f"console bundle: {raw / 1024:.0f} KiB, {gz / 1024:.0f} KiB with gzip")
        assert run.returncode == 0, f"console_e2e.mjs failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"

        # The task's YAML the console downloaded is a manifest qfctl task apply reads, and
        # applying it changes nothing (the export is the task as stored).
        applied = subprocess.run([cluster.qfctl, "task", "apply", "-f", os.path.join(screenshots, "console-e2e.yaml"),
                                  "--dry-run", "--server", cluster.base, "--token", login.data["session_token"]],
                                 capture_output=True, text=True, timeout=30)
        print(f"qfctl task apply --dry-run of the exported YAML: {applied.stdout.strip()} {applied.stderr.strip()}")
        assert applied.returncode == 0 and "= task console-e2e unchanged" in applied.stdout, applied

        # What the browser did is what the API recorded.
        tasks = admin.get("/api/v1/tasks?keyword=console-e2e").data["items"]
        assert len(tasks) == 1 and tasks[0]["task"]["enabled"] is False, tasks
        retries = admin.get("/api/v1/executions?task_id=" + next(
            t["task"]["id"] for t in admin.get("/api/v1/tasks?keyword=console-fail").data["items"])).data["items"]
        assert any(e["trigger"] == "TRIGGER_TYPE_RETRY" for e in retries), retries
        audit = admin.get("/api/v1/audit?action=task.&actor=admin&page_size=200").data["items"]
        assert {"task.create", "task.disable"} <= {a["action"] for a in audit}, [a["action"] for a in audit]
        metrics = json.loads(run.stdout.strip().splitlines()[-1])
        assert metrics["first_load_ms"] < 2000, metrics
        assert metrics["live_update_ms"] < 1000, metrics
        # The rows painted after the API's answer (the answer's own time is the API's, printed).
        assert metrics["render_100_rows_dom_ms"] < 500, metrics
    finally:
        cluster.stop()
