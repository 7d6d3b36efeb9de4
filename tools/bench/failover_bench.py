#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Failover time over many kills: 3 qf-coordinator processes on a throwaway PostgreSQL, 2
# agents, TASKS `one` tasks firing every second; the leader is killed with SIGKILL KILLS
# times (restarted after each). For each kill: the time until another coordinator leads
# (as /api/v1/cluster says), until the first run the new leader sent executes (the tasks'
# default misfire policy runs the latest instant missed in the gap at once), and until the
# first run of an instant after the kill executes. Prints the distributions.
#   /usr/bin/python3 tools/bench/failover_bench.py build [KILLS] [TASKS]
import os
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "cluster"))
from failover_cluster import PgCluster, now_ms, run_recorder, task_entry, wait_for  # noqa: E402


def first_line_after(runs_file, at_ms):
    """The first run appended after `at_ms` (a run the dead leader sent ends within ms)."""
    with open(runs_file) as f:
        times = [int(t) for line in f for _, t in [line.split()] if int(t) > at_ms]
    return min(times) if times else None


def first_run_after(runs_file, at_ms):
    with open(runs_file) as f:
        times = [int(t) for line in f for eid, t in [line.split()] if int(eid.split(":")[1]) > at_ms and int(t) > at_ms]
    return min(times) if times else None


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def main(build, kills, tasks):
    cluster = PgCluster(build, coordinators=3, agents=2)
    runs_file = os.path.join(cluster.dir, "runs.txt")
    cluster.write_manifest([task_entry(f"fb-{i}", run_recorder(runs_file)) for i in range(tasks)])
    leads, fires, any_runs = [], [], []
    try:
        cluster.start()
        wait_for(lambda: os.path.exists(runs_file) and first_run_after(runs_file, 0), 60, "the first routed runs")
        for n in range(kills):
            leader = wait_for(cluster.leader, 30, "a leader")
            time.sleep(1.0 + (n % 4) * 0.25)  # kill at different points of the second
            killed_at = now_ms()
            leader.process.send_signal(signal.SIGKILL)
            leader.process.wait()
            wait_for(lambda: (lambda l: l if l is not None and l is not leader else None)(cluster.leader()), 20,
                     "a new leader", )
            leads.append(now_ms() - killed_at)
            first = wait_for(lambda: first_run_after(runs_file, killed_at), 20, "a run after the kill")
            fires.append(first - killed_at)
            any_runs.append(first_line_after(runs_file, killed_at + 300) - killed_at)
            print(f"kill {n + 1}: {leader.name} killed, new leader seen after {leads[-1]} ms, its first run after "
                  f"{any_runs[-1]} ms, first run of a later instant after {fires[-1]} ms", flush=True)
            cluster.start_coordinator(leader)
    finally:
        cluster.stop()
        cluster.remove()
    for name, values in (("new leader (polled every 50 ms)", leads), ("first run sent by the new leader", any_runs),
                         ("first run of a later instant", fires)):
        print(f"{name}: n={len(values)} min={min(values)} median={statistics.median(values):.0f} "
              f"p90={percentile(values, 90)} max={max(values)} ms")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build", int(sys.argv[2]) if len(sys.argv) > 2 else 20,
         int(sys.argv[3]) if len(sys.argv) > 3 else 20)
