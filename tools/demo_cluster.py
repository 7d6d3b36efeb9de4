#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# `tools/qf demo-cluster`: three qf-coordinator processes on a throwaway PostgreSQL and two
# qf-agents; the leader is killed with SIGKILL once while tasks fire every second, and the
# demo prints who led, how long the takeover took and what ran. Uses the failover test's
# harness (tests/cluster), so what the demo shows is what the test checks.
import collections
import os
import signal
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "cluster"))
from failover_cluster import PgCluster, list_all, now_ms, run_recorder, task_entry, wait_for  # noqa: E402

SECONDS = int(os.environ.get("QF_DEMO_SECONDS", "30"))


def say(text):
    print(f"[demo-cluster {time.strftime('%H:%M:%S')}] {text}", flush=True)


def main(build_dir):
    cluster = PgCluster(build_dir, coordinators=3, agents=2)
    runs_file = os.path.join(cluster.dir, "runs.txt")
    command = run_recorder(runs_file)
    cluster.write_manifest([task_entry(f"every-second-{i}", command, delivery_guarantee="at_most_once")
                            for i in range(5)])
    say(f"PostgreSQL {cluster.dsn}; files in {cluster.dir}")
    try:
        cluster.start()
        for c in cluster.coordinators:
            say(f"coordinator {c.name}: admin http://127.0.0.1:{c.admin_port}, agents udp 127.0.0.1:{c.agent_port}")
        leader = wait_for(cluster.leader, 30, "a leader")
        say(f"leader: {leader.name} (the others are hot standbys serving the same API)")
        wait_for(lambda: os.path.exists(runs_file) and os.path.getsize(runs_file) > 0, 30, "the first runs")
        time.sleep(SECONDS / 3)
        killed_at = now_ms()
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait()
        say(f"killed the leader {leader.name} with SIGKILL")
        new = wait_for(lambda: (lambda l: l if l is not None and l is not leader else None)(cluster.leader()), 20,
                       "a new leader")
        say(f"new leader: {new.name}, {now_ms() - killed_at} ms after the kill")
        time.sleep(SECONDS * 2 / 3)
        runs = collections.Counter()
        first_after = None
        with open(runs_file) as f:
            for line in f:
                execution_id, at = line.split()
                runs[execution_id] += 1
                if int(at) > killed_at and int(execution_id.split(":")[1]) > killed_at:
                    first_after = min(first_after or int(at), int(at))
        twice = [k for k, n in runs.items() if n > 1]
        api = cluster.api_of(new)
        statuses = collections.Counter(e.get("status", "?").replace("EXECUTION_STATUS_", "")
                                       for e in list_all(api, "/api/v1/executions"))
        say(f"first run fired by the new leader: {first_after - killed_at if first_after else '?'} ms after the kill")
        say(f"executions: {sum(runs.values())} real runs, {len(twice)} executed twice; records by status: "
            f"{dict(statuses)}")
    finally:
        say("stopping")
        cluster.stop()
        cluster.remove()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("QF_BUILD_DIR", "build"))
