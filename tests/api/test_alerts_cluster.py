# SPDX-License-Identifier: Apache-2.0
# Alerting over two qf-coordinator processes on one throwaway PostgreSQL (and a qf-agent): a
# channel, rules and a monitor written through the standby reach the leader's engine, pings
# sent to the standby keep the monitor up, the leader's worker signs with the key both share;
# the leader killed (kill -9): the next leader raises the silent monitor's alert (its worker
# waits out what the old leader may have in flight) and nothing acknowledged before is sent
# again. Counted at a receiver, by notification id.
import os
import secrets
import signal
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cluster"))
from failover_cluster import PgCluster  # noqa: E402
from conftest import wait_for  # noqa: E402
from test_alerts_e2e import HOOK_SECRET, Receiver, make_task, of_rule, rule, run  # noqa: E402


@pytest.fixture(scope="module")
def pg():
    build = os.environ.get("QF_BUILD_DIR")
    assert build, "QF_BUILD_DIR must name the build directory"
    c = PgCluster(build, coordinators=2, agents=1)
    ok = False
    try:
        with open(os.path.join(c.dir, "alert.key"), "w") as f:  # every coordinator the same key
            f.write(secrets.token_hex(32) + "\n")
        with open(os.path.join(c.dir, "tasks.yaml"), "w") as f:
            f.write("groups:\n  - name: workers\n")
        for i, coordinator in enumerate(c.coordinators):
            with open(coordinator.config, "a") as f:
                f.write("alerts: {secret_key_file: alert.key}\n" + ("manifest_file: tasks.yaml\n" if i == 0 else ""))
        c.start()
        c.leader_c, c.standby_c = c.coordinators
        wait_for(lambda: c.leader() is c.leader_c, 30, "c1 to lead")
        c.leader_api, c.standby_api = c.api_of(c.leader_c), c.api_of(c.standby_c)
        wait_for(lambda: int(c.leader_api.get("/api/v1/agents?state=online").data["total"]) == 1, 30,
                 "the agent online")
        yield c
        ok = True
    finally:
        c.finish(ok)


def test_what_the_standby_writes_reaches_the_leader_and_a_takeover_repeats_nothing(pg):
    receiver = Receiver()
    standby = pg.standby_api
    channel = {"id": "hook", "type": "CHANNEL_TYPE_WEBHOOK", "url": f"{receiver.url}/hook",
               "secret": {"value": HOOK_SECRET}}
    assert standby.post("/api/v1/channels", channel).status == 201
    groups = standby.get("/api/v1/groups?keyword=workers").data["items"]
    workers = next(g["group"]["id"] for g in groups if g["group"]["name"] == "workers")
    tid = make_task(standby, workers, "cluster-fails", "/")
    rule(standby, "cluster-failed", "ALERT_CONDITION_RUN_FAILED", "hook", scope={"task_ids": [tid]})
    time.sleep(2.5)  # the leader reads what the standby wrote within 2 s

    record = run(pg.leader_api, tid)
    assert record["status"] == "EXECUTION_STATUS_FAILURE"
    firing = wait_for(lambda: of_rule(receiver.acknowledged("/hook", "NOTIFICATION_KIND_FIRING"), "cluster-failed"),
                      10, "the FIRING notification from the leader")
    assert firing[0]["signed"], "the leader signs with the key the standby sealed the secret with"
    # Pings through the standby keep the monitor up on the leader (which reads them every 2 s).
    created = standby.post("/api/v1/monitors", {"id": "cluster-job", "period_seconds": 2, "grace_seconds": 1})
    assert created.status == 201, created
    token = created.data["token"]
    rule(standby, "cluster-job-down", "ALERT_CONDITION_MONITOR_DOWN", "hook", scope={"monitor_ids": ["cluster-job"]})
    for _ in range(6):
        assert standby.post(f"/api/v1/ping/{token}", raw=b"").status == 200
        time.sleep(1)
    assert of_rule(receiver.acknowledged("/hook"), "cluster-job-down") == []

    before = receiver.ids("/hook")
    os.kill(pg.leader_c.process.pid, signal.SIGKILL)
    killed_at = time.time()
    wait_for(lambda: pg.leader() is pg.standby_c, 30, "c2 to lead")
    down = wait_for(lambda: of_rule(receiver.acknowledged("/hook", "NOTIFICATION_KIND_FIRING"), "cluster-job-down"),
                    20, "the silent monitor's alert from the next leader")
    print(f"leader killed -> the next leader's monitor alert at the receiver: {down[0]['at'] - killed_at:.1f} s")
    # c1 reported within 10 s: c2 waits for what c1 might still have in flight (10 s timeout + 1 s).
    assert "deliveries start in 11000 ms" in pg.log("c2")
    time.sleep(2)
    after = receiver.ids("/hook")
    assert all(n == 1 for n in after.values()), after
    assert set(before) <= set(after) and len(of_rule(receiver.acknowledged("/hook"), "cluster-failed")) == 1
    receiver.server.shutdown()
