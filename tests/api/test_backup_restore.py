# SPDX-License-Identifier: Apache-2.0
# `qfctl admin backup FILE` against a running coordinator, the documented restore (a new
# coordinator started on the copy), and every object compared through the API. PostgreSQL:
# the answer names the pg_dump command.
import os
import shutil
import socket
import sqlite3
import subprocess
import urllib.parse

import pytest

from conftest import ADMIN_PASSWORD, Api, free_port, wait_for


def qfctl(cluster, token, *args):
    return subprocess.run([cluster.qfctl, *args, "--server", cluster.base, "--token", token], capture_output=True,
                          text=True, timeout=120)


def everything(api):
    """Every object of the catalog and history, as the API lists them (volatile fields left out)."""
    def items(path):
        r = api.get(path + ("&" if "?" in path else "?") + "page_size=500")
        assert r.status == 200, (path, r)
        return r.data["items"]
    out = {
        "tasks": sorted((i["task"] for i in items("/api/v1/tasks")), key=lambda t: t["id"]),
        "groups": sorted((i["group"] for i in items("/api/v1/groups")), key=lambda g: g["id"]),
        # Logging in (to compare) moves last_login_unix_ms.
        "users": sorted(({k: v for k, v in u.items() if k != "last_login_unix_ms"} for u in items("/api/v1/users")),
                        key=lambda u: u["id"]),
        "alert_rules": sorted(items("/api/v1/alert-rules"), key=lambda r: r["id"]),
        "channels": sorted(items("/api/v1/channels"), key=lambda c: c["id"]),
        # An agent's state is the running coordinator's view (offline after a restore).
        "agents": sorted(({k: a[k] for k in ("id", "hostname", "group_id", "labels")} for a in items("/api/v1/agents")),
                         key=lambda a: a["id"]),
        "executions": {e["execution_id"]: e for e in items("/api/v1/executions")},
        "audit": {e["id"]: e for e in items("/api/v1/audit")},
    }
    return out


def test_backup_is_restored_into_a_new_coordinator_with_every_object(admin, cluster, tmp_path):
    token = admin.token
    if cluster.pg is not None:
        r = admin.get("/api/v1/admin/backup")
        assert r.status == 409 and "pg_dump --format=custom --file=quartzflow.dump" in r.json["message"], r
        assert "password" not in r.json["message"]
        cli = qfctl(cluster, token, "admin", "backup", str(tmp_path / "copy.db"))
        assert cli.returncode == 2 and "pg_dump" in cli.stderr, cli
        assert not (tmp_path / "copy.db").exists()
        return
    # One object of every kind, besides what the other tests made.
    group = admin.post("/api/v1/groups", {"name": "backup-group", "description": "restored too", "tags": ["b"]})
    assert group.status == 201, group
    task = admin.post("/api/v1/tasks", {
        "name": "backup-task", "enabled": True, "schedule": {"cron": "0 3 * * *", "time_zone": "Europe/Paris"},
        "placement": {"mode": "PLACEMENT_MODE_ONE"}, "shell": {"argv": ["/bin/true"]},
        "group_ids": [group.data["id"]], "labels": {"team": "backup"}})
    assert task.status == 201, task
    user = admin.post("/api/v1/users", {"user": {"username": "bruno", "role": "ROLE_OPERATOR"},
                                        "password": "backup password 1"})
    assert user.status == 201, user
    channel = admin.post("/api/v1/channels", {"id": "backup-hook", "type": "CHANNEL_TYPE_WEBHOOK",
                                              "url": "https://hooks.example/backup",
                                              "secret": {"value": "backup-signing-key"}})
    assert channel.status == 201, channel
    rule = admin.post("/api/v1/alert-rules", {"id": "backup-rule", "condition": "ALERT_CONDITION_RUN_FAILED",
                                              "channel_ids": ["backup-hook"]})
    assert rule.status == 201, rule
    groups = admin.get("/api/v1/groups?keyword=workers").data["items"]
    workers = next(g["group"]["id"] for g in groups if g["group"]["name"] == "workers")
    run_task = admin.post("/api/v1/tasks", {"name": "backup-run", "enabled": True, "schedule": {"manual": {}},
                                            "placement": {"mode": "PLACEMENT_MODE_ONE"}, "group_ids": [workers],
                                            "shell": {"argv": ["/bin/echo", "kept in the backup"]}})
    assert run_task.status == 201, run_task
    wait_for(lambda: admin.get("/api/v1/agents?state=online").data["total"] != "0", 30, "an agent online")
    fired = admin.post(f"/api/v1/tasks/{run_task.data['id']}/trigger", {})
    assert fired.status == 200, fired
    [eid] = fired.data["execution_ids"]
    path = "/api/v1/executions/" + urllib.parse.quote(eid, safe="")
    wait_for(lambda: admin.get(path).data["status"] == "EXECUTION_STATUS_SUCCESS", 30, "the run to succeed")

    before = everything(admin)
    copy = tmp_path / "copy.db"
    cli = qfctl(cluster, token, "admin", "backup", str(copy))
    assert cli.returncode == 0, cli.stderr
    admin.hits.add(("GET", "/api/v1/admin/backup"))  # exercised through qfctl (the body is a database)
    assert "restore: stop qf-coordinator" in cli.stdout
    assert oct(os.stat(copy).st_mode & 0o777) == "0o600"
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    after = everything(admin)

    # The documented restore: a new coordinator's data_dir gets the copy as coordinator.db and
    # the alert secret key (channel secrets are sealed with it), then it starts.
    restored_dir = tmp_path / "restored"
    (restored_dir / "data").mkdir(parents=True)
    shutil.copy(copy, restored_dir / "data" / "coordinator.db")
    shutil.copy(os.path.join(cluster.dir, "data", "alert-secret.key"), restored_dir / "data" / "alert-secret.key")
    certs = os.path.join(cluster.dir, "certs")
    admin_port = free_port()
    config = restored_dir / "coordinator.yaml"
    config.write_text(f"""coordinator_id: restored
data_dir: data
agent_listen: 127.0.0.1:{free_port(socket.SOCK_DGRAM)}
admin_listen: 127.0.0.1:{admin_port}
agent_tls: {{ca_file: {certs}/ca.pem, cert_file: {certs}/coordinator-127.0.0.1.pem, key_file: {certs}/coordinator-127.0.0.1.key}}
""")
    with open(restored_dir / "coordinator.log", "w") as log:
        process = subprocess.Popen([cluster.coordinator_bin, "--config", str(config)], stdout=log,
                                   stderr=subprocess.STDOUT, cwd=restored_dir)
    try:
        base = f"http://127.0.0.1:{admin_port}"
        wait_for(lambda: Api(base).get("/readyz").status == 200 if _listening(admin_port) else False, 30,
                 "the restored coordinator's /readyz")
        login = Api(base).post("/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
        assert login.status == 200, login
        restored = everything(Api(base, login.data["session_token"]))
        bruno = Api(base).post("/api/v1/auth/login", {"username": "bruno", "password": "backup password 1"})
        assert bruno.status == 200, bruno  # password hashes came along
    finally:
        process.terminate()
        process.wait(timeout=30)

    for kind in ("tasks", "groups", "users", "alert_rules", "channels", "agents"):
        assert restored[kind] == before[kind] == after[kind], kind
    assert "backup-task" in [t["name"] for t in restored["tasks"]]
    assert "backup-rule" in [r["id"] for r in restored["alert_rules"]]
    # History: every run final before the copy is there unchanged; nothing the copy did not hold.
    finals = {i: e for i, e in before["executions"].items() if e["status"] not in
              ("EXECUTION_STATUS_PENDING", "EXECUTION_STATUS_RUNNING")}
    assert eid in finals
    for i, e in finals.items():
        assert restored["executions"].get(i) == e, i
    for i, e in before["audit"].items():
        assert restored["audit"].get(i) == e, i


def _listening(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
