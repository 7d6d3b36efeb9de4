# SPDX-License-Identifier: Apache-2.0
# `qfctl local tasks`: what an agent will run, read from its own store on the host, without
# the coordinator (an operator on a host whose coordinator is unreachable).
import json
import os
import subprocess

from conftest import wait_for


def local_tasks(cluster, *args, tz="UTC"):
    store = os.path.join(cluster.dir, "agent-data", "agent.db")
    return subprocess.run([cluster.qfctl, "local", "--store", store, "--tz", tz, "tasks", *args], capture_output=True,
                          text=True, timeout=30)


def test_local_tasks_lists_the_cached_tasks_with_their_next_fires(admin, cluster):
    groups = admin.get("/api/v1/groups?keyword=workers").data["items"]
    workers = next(g["group"]["id"] for g in groups if g["group"]["name"] == "workers")
    base = {"placement": {"mode": "PLACEMENT_MODE_ONE"}, "shell": {"argv": ["/bin/true"]}, "group_ids": [workers]}
    nightly = admin.post("/api/v1/tasks", dict(base, name="offline-nightly", enabled=True,
                                               schedule={"cron": "0 6 * * *", "time_zone": "Europe/Paris"}))
    assert nightly.status == 201, nightly
    paused = admin.post("/api/v1/tasks", dict(base, name="offline-paused", enabled=False,
                                              schedule={"cron": "*/5 * * * *"}))
    assert paused.status == 201, paused

    def listed():
        r = local_tasks(cluster, "--json", "--after", "2026-03-28T12:00:00Z")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        by_name = {t["name"]: t for t in doc["tasks"]}
        return by_name if {"offline-nightly", "offline-paused"} <= by_name.keys() else None

    tasks = wait_for(listed, 30, "the agent to cache both tasks")
    night = tasks["offline-nightly"]
    assert night["id"] == nightly.data["id"] and night["enabled"] is True and night["state"] == "enabled"
    # 06:00 Paris: 05:00Z in winter, 04:00Z from the DST change on 2026-03-29.
    assert night["next_fires"] == ["2026-03-29T04:00:00Z", "2026-03-30T04:00:00Z", "2026-03-31T04:00:00Z"], night
    assert tasks["offline-paused"]["state"] == "disabled" and tasks["offline-paused"]["next_fires"] == []

    table = local_tasks(cluster, "--after", "2026-03-28T12:00:00Z", "--count", "1", tz="Europe/Paris")
    assert table.returncode == 0, table.stderr
    line = next(l for l in table.stdout.splitlines() if l.startswith("offline-nightly"))
    assert "2026-03-29 06:00:00 CEST" in line and "enabled" in line, table.stdout
    assert "2026-03-30" not in line  # --count 1


def test_local_tasks_refuses_bad_input_naming_the_flag(cluster):
    bad = local_tasks(cluster, "--after", "tomorrow")
    assert bad.returncode != 0 and "--after" in bad.stderr, bad
    missing = subprocess.run([cluster.qfctl, "local", "--store", os.path.join(cluster.dir, "nowhere.db"), "tasks"],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1 and "no agent store at" in missing.stderr, missing
