# SPDX-License-Identifier: Apache-2.0
# Faults with real processes, counted through side effects: kill -9 of the coordinator
# during admin API writes and during a config push, SIGSTOP/SIGCONT of the coordinator and
# of the agent. A cluster of its own, since these tests kill it.
import os
import subprocess
import signal
import threading
import time

import pytest

from conftest import ADMIN_PASSWORD, Api, started_cluster, wait_for

EVERY_SECOND = {"interval_seconds": 1}


@pytest.fixture(scope="module")
def own():
    c = started_cluster()
    yield c
    c.stop()


def login(cluster):
    api = Api(cluster.base)
    r = api.post("/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status == 200, r
    return api.with_token(r.data["session_token"])


def restart_coordinator(cluster):
    cluster.coordinator = cluster.start("coordinator", [cluster.coordinator_bin, "--config", cluster.config])
    wait_for(cluster.ready, 30, "the coordinator's /readyz after a restart")


def workers_id(api):
    return next(g["group"]["id"] for g in api.get("/api/v1/groups").data["items"] if g["group"]["name"] == "workers")


def side_effect_task(name, group, ledger):
    # Each run appends its execution id to the ledger: real executions, counted.
    return {"name": name, "enabled": True, "group_ids": [group], "schedule": EVERY_SECOND,
            "shell": {"argv": ["/bin/sh", "-c", f'echo "$QF_EXECUTION_ID" >> {ledger}']}, "timeout_seconds": 10}


def ledger_ids(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def recorded_ids(api, task_id):
    ids, page = [], 1
    while True:
        data = api.get(f"/api/v1/executions?task_id={task_id}&page_size=500&page={page}").data
        ids += [e["execution_id"] for e in data["items"] if e["status"] == "EXECUTION_STATUS_SUCCESS"]
        if len(data["items"]) < 500:
            return ids
        page += 1


def test_kill_9_during_admin_writes_loses_no_acknowledged_write(own):
    api = login(own)
    group = workers_id(api)
    acknowledged, stop = [], threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            i += 1
            body = {"name": f"burst-{i}", "enabled": True, "group_ids": [group], "schedule": {"manual": {}},
                    "shell": {"argv": ["/bin/true"]}, "labels": {"n": str(i)}}
            try:
                r = api.post("/api/v1/tasks", body)
            except OSError:
                continue
            if r.status == 201:
                acknowledged.append(r.data["id"])

    thread = threading.Thread(target=writer)
    thread.start()
    wait_for(lambda: len(acknowledged) >= 20, 30, "20 acknowledged creates")
    own.coordinator.send_signal(signal.SIGKILL)
    own.coordinator.wait()
    stop.set()
    thread.join()
    restart_coordinator(own)
    api = login(own)
    for task_id in acknowledged:
        r = api.get(f"/api/v1/tasks/{task_id}")
        assert r.status == 200, (task_id, r)
        assert r.data["task"]["shell"]["argv"] == ["/bin/true"]  # whole, not half written
    listed = [t["task"]["name"] for t in api.get("/api/v1/tasks?keyword=burst-&page_size=500").data["items"]]
    assert len(listed) == len(set(listed))
    audit = api.get("/api/v1/audit?action=task.create&page_size=500").data["items"]
    audited = {e["target_id"] for e in audit}
    assert set(acknowledged) <= audited


def test_sigstop_of_coordinator_then_agent_runs_each_fire_once_and_records_all(own, tmp_path):
    api = login(own)
    ledger = str(tmp_path / "ledger")
    task = api.post("/api/v1/tasks", side_effect_task("ticker", workers_id(api), ledger))
    assert task.status == 201, task
    task_id = task.data["id"]
    wait_for(lambda: len(ledger_ids(ledger)) >= 2, 30, "the agent running the task")
    # The coordinator frozen for 4 s: the agent keeps running from its own clock.
    own.coordinator.send_signal(signal.SIGSTOP)
    time.sleep(4)
    own.coordinator.send_signal(signal.SIGCONT)
    # The agent frozen for 4 s: it owes the fires it missed per its misfire policy.
    time.sleep(2)
    own.agent.send_signal(signal.SIGSTOP)
    time.sleep(4)
    own.agent.send_signal(signal.SIGCONT)
    time.sleep(3)
    assert api.post(f"/api/v1/tasks/{task_id}/disable").status == 200
    time.sleep(2)
    ran = ledger_ids(ledger)
    assert len(ran) == len(set(ran)), "a run executed twice"
    assert len(ran) >= 8
    wait_for(lambda: set(ran) <= set(recorded_ids(api, task_id)), 30, "every executed run recorded by the coordinator")
    assert own.coordinator.poll() is None and own.agent.poll() is None


def test_kill_9_during_a_config_push_converges_after_restart(own, tmp_path):
    api = login(own)
    group = workers_id(api)
    ledger = str(tmp_path / "pushed")
    created = []
    for i in range(30):
        body = side_effect_task(f"push-{i}", group, ledger)
        body["schedule"] = {"manual": {}}
        r = api.post("/api/v1/tasks", body)
        assert r.status == 201, r
        created.append(r.data["id"])
        if i == 15:
            own.coordinator.send_signal(signal.SIGKILL)  # mid-push: agents got some of them
            own.coordinator.wait()
            restart_coordinator(own)
            api = login(own)
    # Every task reaches the agent: a manual trigger of the last one runs there.
    wait_for(lambda: api.get("/api/v1/agents?state=online").data["total"] == "1", 30, "the agent back online")
    version = int(api.get("/api/v1/groups").data["items"][0]["group"].get("config_version", "0") or 0)
    r = api.post(f"/api/v1/tasks/{created[-1]}/trigger")
    assert r.status == 200, r
    [eid] = r.data["execution_ids"]
    wait_for(lambda: eid in ledger_ids(ledger), 30, "the last pushed task running on the agent")
    agent = api.get("/api/v1/agents/api-agent").data
    assert int(agent.get("applied_config_version", "0")) >= version


FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


@pytest.mark.skipif(not os.path.exists(FAKETIME), reason="libfaketime is not installed (./tools/qf test installs it)")
def test_wall_clock_steps_under_a_real_agent(tmp_path):
    # The agent's wall clock is stepped through libfaketime (its steady clock stays real):
    # forward 1 h, then back 1 h. Each run appends its id to a ledger.
    build = os.environ["QF_BUILD_DIR"]
    ledger, offset = tmp_path / "ledger", tmp_path / "offset"
    (tmp_path / "agent.yaml").write_text("data_dir: data\nmanifest_file: tasks.yaml\n")
    (tmp_path / "tasks.yaml").write_text(
        "tasks:\n  - name: tick\n    schedule: \"* * * * * *\"\n"
        f"    shell: {{script: 'echo $QF_EXECUTION_ID >> {ledger}'}}\n")
    offset.write_text("+0\n")
    # Under the asan preset the sanitizer's runtime must come first; libfaketime preloaded
    # before it is fine for this test (it only moves the wall clock).
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = dict(os.environ, LD_PRELOAD=FAKETIME, FAKETIME_TIMESTAMP_FILE=str(offset), FAKETIME_CACHE_DURATION="1",
               FAKETIME_DONT_FAKE_MONOTONIC="1", ASAN_OPTIONS=(asan + ":" if asan else "") + "verify_asan_link_order=0")
    log = open(tmp_path / "agent.log", "w")
    agent = subprocess.Popen([os.path.join(build, "examples", "agent", "qf-agent"), "--config",
                              str(tmp_path / "agent.yaml")], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(ledger_ids(str(ledger))) >= 2, 20, "the first runs")
        offset.write_text("+3600\n")
        time.sleep(4)
        offset.write_text("+0\n")
        # Stepped back: the agent says so at once instead of pausing silently.
        wait_for(lambda: "behind its last fire" in (tmp_path / "agent.log").read_text(), 10,
                 "the warning about a clock stepped back")
        time.sleep(0.5)
        before_back = ledger_ids(str(ledger))
        time.sleep(3)
        ran = ledger_ids(str(ledger))
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
    assert len(ran) == len(set(ran)), "an instant ran twice"
    # The forward hour ran once (fire_once), not 3,600 times; nothing ran again after the step back.
    assert len(before_back) < 14, before_back
    assert ran == before_back
    history = subprocess.run([os.path.join(build, "tools", "qfctl", "qfctl"), "local", "--store",
                              str(tmp_path / "data" / "agent.db"), "history", "--status", "missed", "--limit", "10"],
                             capture_output=True, text=True, timeout=30)
    assert "missed" in history.stdout, history  # the skipped hour is on the record
