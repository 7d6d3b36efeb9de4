# SPDX-License-Identifier: Apache-2.0
# The database goes away for 20 s in the middle of a run: both coordinators report not
# ready, the agents keep running their `all` task from their own clocks, nothing an agent
# recorded is lost (every real run ends up in the store), and scheduling resumes.
import os
import time
import urllib.request

from failover_cluster import PgCluster, list_all, now_ms, run_recorder, task_entry, wait_for
from test_failover import read_runs

OUTAGE_SECONDS = 20


def ready(coordinator):
    try:
        with urllib.request.urlopen(coordinator.base + "/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def test_a_database_outage_stops_firing_keeps_agents_running_and_loses_nothing():
    build = os.environ.get("QF_BUILD_DIR")
    assert build, "QF_BUILD_DIR must name the build directory"
    cluster = PgCluster(build, coordinators=2, agents=2)
    runs_file = os.path.join(cluster.dir, "runs.txt")
    command = run_recorder(runs_file)
    cluster.write_manifest([task_entry("out-all", command, placement="{mode: all}"),
                            task_entry("out-one", command, misfire_policy="skip")])
    ok = False
    try:
        cluster.start()
        wait_for(lambda: any(k.startswith("out-one:") for k in read_runs(runs_file)), 40, "the first routed runs")

        down_at = now_ms()
        cluster.pg.stop_for_outage()
        wait_for(lambda: not any(ready(c) for c in cluster.coordinators), 10,
                 "both coordinators to report not ready")
        time.sleep(OUTAGE_SECONDS)
        up_at = now_ms()
        during = read_runs(runs_file)
        all_during = [k for k, ts in during.items() if k.startswith("out-all:") and any(down_at + 2_000 < t < up_at for t in ts)]
        # Each agent fires `all` every second from its own clock while the database is down.
        assert len(all_during) >= 2 * (OUTAGE_SECONDS - 4), f"only {len(all_during)} `all` runs during the outage"
        routed_during = [k for k, ts in during.items() if k.startswith("out-one:") and any(down_at + 3_000 < t < up_at for t in ts)]
        assert not routed_during, f"routed runs fired with no database: {routed_during[:5]}"

        cluster.pg.start_again()
        wait_for(lambda: all(ready(c) for c in cluster.coordinators), 30, "both coordinators ready again")
        resumed_after = now_ms()
        wait_for(lambda: any(k.startswith("out-one:") and min(ts) > resumed_after
                             for k, ts in read_runs(runs_file).items()), 30, "routed runs after the outage")

        # Nothing recorded is lost: every run an agent executed reaches the store.
        runs = read_runs(runs_file)
        api = cluster.api_of(cluster.leader() or cluster.coordinators[0])

        def missing():
            stored = {e["execution_id"] for e in list_all(api, f"/api/v1/executions?from_unix_ms={down_at - 60_000}")}
            return [k for k in runs if k.startswith("out-all:") and k not in stored]

        wait_for(lambda: not missing(), 30, "every `all` run of the outage synced to the store")
        ok = True
    finally:
        cluster.finish(ok)
