# SPDX-License-Identifier: Apache-2.0
# Retention in a running qf-coordinator, end to end: runs made through the API are aged in the
# stopped coordinator's database (their scheduled time moved ten days back), then the
# coordinator starts again with `retention.executions_days: 1` and an archive: its first pass
# deletes them and their logs, writes them to the day's gzip archive, and the day's counts
# stay in GET /api/v1/stats/daily as the roll-up. Newer runs are left alone. SQLite only (the
# test ages rows with sqlite3; the PostgreSQL purge is covered by the store's unit tests).
import glob
import gzip
import json
import os
import shutil
import sqlite3
import subprocess
import time
import urllib.parse

import pytest

from conftest import ADMIN_PASSWORD, Api, Cluster, wait_for

DAY_MS = 86_400_000


def login(cluster):
    r = Api(cluster.base).post("/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 200, r
    return Api(cluster.base).with_token(r.data["session_token"])


def execution_path(eid):
    return "/api/v1/executions/" + urllib.parse.quote(eid, safe="")


def test_a_running_coordinator_purges_old_runs_archives_them_and_keeps_their_daily_counts():
    if os.environ.get("QF_TEST_POSTGRES") == "1":
        pytest.skip("ages rows with sqlite3; the PostgreSQL purge is tested in [retention] unit tests")
    build = os.environ.get("QF_BUILD_DIR")
    assert build, "QF_BUILD_DIR must name the build directory"
    c = Cluster(build)
    ok = False
    try:
        with open(c.config, "a") as f:
            f.write("retention: {executions_days: 1, archive_dir: archive}\n")
        c.start_all()
        admin = login(c)
        groups = admin.get("/api/v1/groups?keyword=workers").data["items"]
        workers = next(g["group"]["id"] for g in groups if g["group"]["name"] == "workers")
        task = admin.post("/api/v1/tasks", {"name": "aged", "enabled": True, "schedule": {"manual": {}},
                                            "placement": {"mode": "PLACEMENT_MODE_ONE"}, "group_ids": [workers],
                                            "shell": {"argv": ["/bin/echo", "purged later"]}})
        assert task.status == 201, task
        wait_for(lambda: admin.get("/api/v1/agents?state=online").data["total"] != "0", 30, "an agent online")

        def run_once():
            fired = admin.post(f"/api/v1/tasks/{task.data['id']}/trigger", {})
            assert fired.status == 200, fired
            [eid] = fired.data["execution_ids"]
            wait_for(lambda: admin.get(execution_path(eid)).data["status"] not in
                     ("EXECUTION_STATUS_PENDING", "EXECUTION_STATUS_RUNNING"), 30, f"{eid} to end")
            assert admin.get(execution_path(eid)).data["status"] == "EXECUTION_STATUS_SUCCESS"
            return eid

        ids = [run_once() for _ in range(3)]
        keep = run_once()

        # Stop the coordinator only (the agent keeps its session attempts) and age three runs.
        c.coordinator.terminate()
        assert c.coordinator.wait(timeout=20) == 0, c.log("coordinator")[-3000:]
        aged_ms = int(time.time() * 1000) - 10 * DAY_MS
        with sqlite3.connect(os.path.join(c.dir, "data", "coordinator.db")) as db:
            marks = ",".join("?" * len(ids))
            changed = db.execute(f"UPDATE executions SET scheduled_unix_ms = ? WHERE execution_id IN ({marks})",
                                 [aged_ms, *ids]).rowcount
            assert changed == 3
            logs = db.execute(f"SELECT count(*) FROM logs WHERE execution_id IN ({marks})", ids).fetchone()[0]
        aged_day = time.strftime("%Y-%m-%d", time.gmtime(aged_ms / 1000))

        env = dict(os.environ, QUARTZFLOW_TEST_RETENTION_FIRST_PASS_MS="200")
        log = open(os.path.join(c.dir, "coordinator-2.log"), "w")
        c.coordinator = subprocess.Popen([c.coordinator_bin, "--config", c.config], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=c.dir, env=env)
        c.processes.append(c.coordinator)
        wait_for(c.ready, 30, "the coordinator's /readyz after the restart")
        admin = login(c)
        wait_for(lambda: all(admin.get(execution_path(eid)).status == 404 for eid in ids), 30,
                 "the aged runs to be purged")
        assert admin.get(execution_path(keep)).data["status"] == "EXECUTION_STATUS_SUCCESS"

        # Archived before they went: the three runs as JSON lines in one day's file (named from
        # the record's own scheduled time, which this test did not age: today's).
        [archive] = glob.glob(os.path.join(c.dir, "archive", "executions-*.jsonl.gz"))
        with gzip.open(archive, "rt") as f:
            archived = [json.loads(line) for line in f if line.strip()]
        assert sorted(e["execution_id"] for e in archived) == sorted(ids)
        if logs:
            with sqlite3.connect(os.path.join(c.dir, "data", "coordinator.db")) as db:
                left = db.execute(f"SELECT count(*) FROM logs WHERE execution_id IN ({marks})",
                                  ids).fetchone()[0]
            assert left == 0

        # The day's counts outlive the runs: the roll-up of that day, no agent reported it.
        daily = admin.get(f"/api/v1/stats/daily?from_date={aged_day}&to_date={aged_day}&task_id={task.data['id']}")
        assert daily.status == 200, daily
        [entry] = daily.data["items"]
        assert (entry["date"], int(entry["total"]), int(entry["success"])) == (aged_day, 3, 3), entry
        ok = True
    finally:
        c.stop()
        if ok:
            shutil.rmtree(c.dir, ignore_errors=True)
