# SPDX-License-Identifier: Apache-2.0
# Two qf-coordinator processes on one throwaway PostgreSQL and a qf-agent: triggers, retries and
# cancels sent to the standby do what they do on the leader (through the store's commands queue)
# and answer the same bodies; the standby's WebSocket shows the runs the leader handles (the
# store's change feed); the leader killed (kill -9) while a command waits in the queue: it runs
# once on the next leader, or is answered with an error, never twice. Runs are counted through
# their side effect: each appends its $QF_EXECUTION_ID to a file.
import json
import os
import signal
import sys
import threading
import time
import urllib.parse

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))
from failover_cluster import PgCluster  # noqa: E402
from conftest import wait_for  # noqa: E402
from test_admin_api import WebSocket  # noqa: E402


@pytest.fixture(scope="module")
def pg():
    build = os.environ.get("QF_BUILD_DIR")
    assert build, "QF_BUILD_DIR must name the build directory"
    c = PgCluster(build, coordinators=2, agents=1)
    ok = False
    try:
        with open(os.path.join(c.dir, "tasks.yaml"), "w") as f:
            f.write("groups:\n  - name: workers\n")
        with open(c.coordinators[0].config, "a") as f:
            f.write("manifest_file: tasks.yaml\n")
        c.start()
        c.leader_c, c.standby_c = c.coordinators
        wait_for(lambda: c.leader() is c.leader_c, 30, "c1 to lead")
        c.leader_api, c.standby_api = c.api_of(c.leader_c), c.api_of(c.standby_c)
        wait_for(lambda: int(c.leader_api.get("/api/v1/agents?state=online").data["total"]) == 1, 30,
                 "the agent online")
        c.runs = os.path.join(c.dir, "runs.txt")
        open(c.runs, "w").close()
        yield c
        ok = True
    finally:
        c.finish(ok)


def workers(api):
    items = api.get("/api/v1/groups?keyword=workers").data["items"]
    return next(g["group"]["id"] for g in items if g["group"]["name"] == "workers")


def make_task(pg, name, script):
    """A manual `one` task in `workers` that appends its execution id to the runs file, then runs `script`."""
    body = {"name": name, "group_ids": [workers(pg.standby_api)], "schedule": {"manual": {}},
            "placement": {"mode": "PLACEMENT_MODE_ONE"}, "timeout_seconds": 60,
            "shell": {"argv": ["/bin/sh", "-c", f'echo "$QF_EXECUTION_ID" >> {pg.runs}; {script}']}}
    r = pg.standby_api.post("/api/v1/tasks", body)  # catalog changes work on every coordinator
    assert r.status == 201, r
    tid = r.data["id"]
    # The leader follows the standby's catalog change (its catalog poll) before it can run it.
    wait_for(lambda: pg.leader_api.get(f"/api/v1/tasks/{tid}/next").status == 200, 10, "the leader to know it")
    return tid


def path_of(eid):
    return "/api/v1/executions/" + urllib.parse.quote(eid, safe="")


def final(api, eid, timeout=30):
    def done():
        e = api.get(path_of(eid)).data
        return e if e["status"] not in ("EXECUTION_STATUS_PENDING", "EXECUTION_STATUS_RUNNING") else None

    return wait_for(done, timeout, f"{eid} to end")


def runs_of(pg, eid):
    with open(pg.runs) as f:
        return [line.strip() for line in f if line.strip() == eid]


class EventLog:
    """Reads a WebSocket on a thread: (monotonic time, status) of each EXECUTION_UPDATED per execution id."""

    def __init__(self, port, token, task_id):
        self.ws = WebSocket(port, token)
        assert self.ws.status == 101
        self.ws.send(json.dumps({"types": ["EVENT_TYPE_EXECUTION_UPDATED"], "task_ids": [task_id]}))
        self.seen = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            while True:
                _, payload = self.ws.receive()
                event = json.loads(payload)
                e = event.get("execution", {})
                self.seen.setdefault(e.get("execution_id"), []).append((time.monotonic(), e.get("status")))
        except (OSError, EOFError, ValueError):
            pass

    def first(self, eid, status):
        return next((t for t, s in self.seen.get(eid, []) if s == status), None)

    def statuses(self, eid):
        return [s for _, s in self.seen.get(eid, [])]

    def close(self):
        self.ws.sock.close()


def without_request_id(r):
    body = dict(r.json)
    body.pop("request_id", None)
    return r.status, body


def test_a_trigger_through_the_standby_runs_once_and_its_websocket_shows_the_run(pg):
    tid = make_task(pg, "via-standby", "sleep 1")
    on_standby = EventLog(pg.standby_c.admin_port, pg.token, tid)
    on_leader = EventLog(pg.leader_c.admin_port, pg.token, tid)
    time.sleep(0.5)  # both subscriptions are in place (the standby positions its feed)
    r = pg.standby_api.post(f"/api/v1/tasks/{tid}/trigger", {"reason": "from the standby"})
    assert r.status == 200, r
    [eid] = r.data["execution_ids"]
    assert eid.startswith(tid + ":")
    record = final(pg.standby_api, eid)
    assert record["status"] == "EXECUTION_STATUS_SUCCESS", record
    assert record["triggered_by"] == "admin"
    assert runs_of(pg, eid) == [eid]
    wait_for(lambda: on_standby.first(eid, "EXECUTION_STATUS_SUCCESS"), 5, "the standby's SUCCESS event")
    statuses = on_standby.statuses(eid)
    assert "EXECUTION_STATUS_RUNNING" in statuses and statuses.index("EXECUTION_STATUS_RUNNING") < statuses.index(
        "EXECUTION_STATUS_SUCCESS"), statuses
    lag = on_standby.first(eid, "EXECUTION_STATUS_SUCCESS") - on_leader.first(eid, "EXECUTION_STATUS_SUCCESS")
    print(f"standby event lag behind the leader: {lag * 1000:.0f} ms")
    assert lag < 1.0, lag
    on_standby.close()
    on_leader.close()
    # One audit entry, naming the caller, whichever coordinator is asked.
    for api in (pg.leader_api, pg.standby_api):
        audit = wait_for(lambda: api.get(f"/api/v1/audit?action=task.trigger&target_id={tid}").data["items"], 5,
                         "the trigger's audit entry")
        assert len(audit) == 1 and audit[0]["actor"] == "admin" and audit[0]["success"] is True, audit
        assert eid in audit[0]["detail"] and "from the standby" in audit[0]["detail"], audit
    time.sleep(0.5)
    assert runs_of(pg, eid) == [eid]


def test_a_trigger_through_the_standby_costs_a_queue_round_trip(pg):
    tid = make_task(pg, "timed-triggers", "true")
    took = {}
    for name, api in (("leader", pg.leader_api), ("standby", pg.standby_api)):
        times = []
        for _ in range(5):
            started = time.monotonic()
            r = api.post(f"/api/v1/tasks/{tid}/trigger")
            times.append(time.monotonic() - started)
            assert r.status == 200, r
            [eid] = r.data["execution_ids"]
            final(pg.leader_api, eid)
            assert runs_of(pg, eid) == [eid]
        took[name] = sorted(times)[2]
    print(f"trigger answered, median of 5: leader {took['leader'] * 1000:.0f} ms, "
          f"standby {took['standby'] * 1000:.0f} ms")
    # The standby's answer waits for the leader's poll (100 ms), its run and the answer poll (50 ms).
    assert took["standby"] < took["leader"] + 1.0, took


def test_retry_cancel_and_refusals_through_the_standby_answer_as_the_leader_does(pg):
    failing = make_task(pg, "fails-via-standby", "exit 3")
    r = pg.standby_api.post(f"/api/v1/tasks/{failing}/trigger")
    assert r.status == 200, r
    [failed] = r.data["execution_ids"]
    assert final(pg.standby_api, failed)["status"] == "EXECUTION_STATUS_FAILURE"
    retry = pg.standby_api.post(path_of(failed) + "/retry")
    assert retry.status == 200, retry
    [again] = retry.data["execution_ids"]
    record = final(pg.standby_api, again)
    assert record["retry_of_execution_id"] == failed and record["trigger"] == "TRIGGER_TYPE_RETRY", record
    assert runs_of(pg, failed) == [failed] and runs_of(pg, again) == [again]

    sleeper = make_task(pg, "sleeps-via-standby", "sleep 30")
    [running] = pg.standby_api.post(f"/api/v1/tasks/{sleeper}/trigger").data["execution_ids"]
    wait_for(lambda: pg.standby_api.get(path_of(running)).data["status"] == "EXECUTION_STATUS_RUNNING", 15, "running")
    busy = pg.standby_api.post(path_of(running) + "/retry")
    assert busy.status == 409 and "RUNNING" in busy.json["message"], busy
    cancel = pg.standby_api.post(path_of(running) + "/cancel", {"reason": "enough"})
    assert cancel.status == 200, cancel
    assert final(pg.standby_api, running, 15)["status"] == "EXECUTION_STATUS_CANCELLED"
    # The audit entry is written by the coordinator the caller talked to, after its answer.
    audit_path = f"/api/v1/audit?action=execution.cancel&target_id={urllib.parse.quote(running)}"
    audit = wait_for(lambda: pg.leader_api.get(audit_path).data["items"], 5, "the cancel's audit entry")
    assert [(e["actor"], e["detail"]) for e in audit] == [("admin", "enough")], audit

    # Refusals: the same status and body as the leader's.
    for method, path, body in (("POST", "/api/v1/tasks/no-such-task/trigger", {}),
                               ("POST", path_of(failed) + "/cancel", {}),
                               ("POST", f"/api/v1/tasks/{sleeper}/trigger", {"params": {"nope": "1"}})):
        on_leader = pg.leader_api.call(method, path, body)
        on_standby = pg.standby_api.call(method, path, body)
        assert on_leader.status in (400, 404, 409), on_leader
        assert without_request_id(on_standby) == without_request_id(on_leader)
    assert runs_of(pg, running) == [running]


def test_a_command_queued_while_the_leader_is_killed_runs_once_on_the_next_leader_or_is_refused(pg):
    tid = make_task(pg, "across-failover", "true")
    os.kill(pg.leader_c.process.pid, signal.SIGKILL)
    pg.leader_c.process.wait()
    killed_at = time.monotonic()
    # The standby still names the dead leader: the command waits in the queue for the next one.
    r = pg.standby_api.post(f"/api/v1/tasks/{tid}/trigger")
    answered_after = time.monotonic() - killed_at
    print(f"trigger queued at the kill answered after {answered_after:.2f} s: {r.status}")
    if r.status == 200:
        [eid] = r.data["execution_ids"]
        assert final(pg.standby_api, eid)["status"] == "EXECUTION_STATUS_SUCCESS"
        time.sleep(1)
        assert runs_of(pg, eid) == [eid]
    else:
        assert r.status == 503 and r.json["error"] == "NOT_LEADER", r
        time.sleep(1)
        with open(pg.runs) as f:
            assert not any(line.startswith(tid + ":") for line in f)
    assert pg.leader() is pg.standby_c
    # No execution of any test ran twice.
    with open(pg.runs) as f:
        ids = [line.strip() for line in f if line.strip()]
    assert len(ids) == len(set(ids)), ids
