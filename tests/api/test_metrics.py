# SPDX-License-Identifier: Apache-2.0
# /metrics of a real qf-coordinator (metrics.max_task_series: 5) and of a real qf-agent that
# opts in (metrics.listen), next to an agent that does not: every line parsed as Prometheus
# text, lower-case label values, the series cap with N + 10 tasks, MISSED and SKIPPED counted
# once where they are made (no_agent by the coordinator, overlap by the agent, misfire after a
# coordinator restart).
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import ADMIN_PASSWORD, Api, Cluster, free_port, wait_for

CAP = 5

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([-+0-9.eE]+|NaN|\+Inf|-Inf)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')
COMMENT = re.compile(r'^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$')


def parse(text):
    """Every line of Prometheus text format 0.0.4, strictly: [(name, {label: value}, value)]."""
    assert text.endswith("\n")
    samples = []
    for line in text.splitlines():
        if line.startswith("#"):
            assert COMMENT.match(line), line
            continue
        m = SAMPLE.match(line)
        assert m, f"not an exposition line: {line!r}"
        labels, rest = {}, m.group(2) or ""
        while rest:
            lm = LABEL.match(rest)
            assert lm, f"bad labels in {line!r}"
            assert lm.group(1) not in labels, line
            labels[lm.group(1)] = lm.group(2)
            rest = rest[lm.end():]
        samples.append((m.group(1), labels, float(m.group(3))))
    for name, labels, _ in samples:
        for key in ("status", "reason"):
            if key in labels:
                assert labels[key] == labels[key].lower(), (name, labels)
    return samples


def value(samples, name, **labels):
    found = [v for n, l, v in samples if n == name and l == labels]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def listening_ports(pid):
    """The TCP ports process `pid` listens on (from /proc: its socket inodes in LISTEN state)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for row in f.readlines()[1:]:
                fields = row.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture(scope="module")
def metered():
    build = os.environ.get("QF_BUILD_DIR")
    assert build, "QF_BUILD_DIR must name the build directory"
    c = Cluster(build)
    with open(c.config, "a") as f:
        f.write(f"metrics: {{max_task_series: {CAP}}}\n")
    c.start_all()  # the coordinator and agent api-agent (group workers), without metrics
    c.api = Api(c.base)
    login = c.api.post("/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD})
    assert login.status == 200, login
    c.api = c.api.with_token(login.data["session_token"])
    for group in ("metered", "nobody"):
        assert c.api.post("/api/v1/groups", {"name": group}).status == 201
    subprocess.run([c.qfctl, "certs", "issue", "--dir", os.path.join(c.dir, "certs"), "--agent", "meter"], check=True,
                   capture_output=True, timeout=30)
    c.metrics_port = free_port()
    with open(os.path.join(c.dir, "agent-meter.yaml"), "w") as f:
        f.write(f"""coordinators: ["127.0.0.1:{c.agent_port}"]
tls: {{ca_file: certs/ca.pem, cert_file: certs/agent-meter.pem, key_file: certs/agent-meter.key}}
data_dir: agent-data-meter
group_id: metered
log_level: debug
metrics: {{listen: "127.0.0.1:{c.metrics_port}", max_task_series: {CAP}}}
""")
    c.meter = c.start("agent-meter", [c.agent_bin, "--config", os.path.join(c.dir, "agent-meter.yaml")])
    wait_for(lambda: c.api.get("/api/v1/agents?state=online").data["total"] == "2", 30, "both agents online")
    c.agent_metrics = f"http://127.0.0.1:{c.metrics_port}/metrics"
    yield c
    c.stop()
    shutil.rmtree(c.dir, ignore_errors=True)


def create_task(c, name, group, **fields):
    body = {"name": name, "enabled": True, "schedule": {"manual": {}}, "group_ids": [group],
            "placement": {"mode": "PLACEMENT_MODE_ONE"}, "shell": {"argv": ["/bin/sh", "-c", "true"]}}
    body.update(fields)
    r = c.api.post("/api/v1/tasks", body)
    assert r.status == 201, r
    return r.data["id"]


def trigger(c, task_id):
    r = c.api.post(f"/api/v1/tasks/{task_id}/trigger")
    assert r.status == 200, r
    return r.data["execution_ids"][0]


def status_of(c, eid):
    return c.api.get("/api/v1/executions/" + urllib.parse.quote(eid, safe="")).data["status"]


def test_agent_metrics_are_off_by_default_and_served_when_configured(metered):
    assert metered.metrics_port in listening_ports(metered.meter.pid)
    assert listening_ports(metered.agent.pid) == set()  # api-agent has no metrics: section
    samples = parse(fetch(metered.agent_metrics))
    assert value(samples, "qf_agent_connected") == 1
    [info] = [labels for name, labels, _ in samples if name == "qf_agent_info"]
    assert info["agent_id"] == "meter" and info["version"]
    assert value(samples, "qf_agent_runs_running") == 0
    assert value(samples, "qf_agent_sync_backlog_records") >= 0
    # Anything but GET /metrics: 404 / 405, and the endpoint keeps serving.
    for method, path, code in (("GET", "/", 404), ("POST", "/metrics", 405)):
        req = urllib.request.Request(f"http://127.0.0.1:{metered.metrics_port}{path}", method=method, data=None)
        with pytest.raises(urllib.error.HTTPError) as failure:
            urllib.request.urlopen(req, timeout=10)
        assert failure.value.code == code


def test_runs_by_task_keep_to_the_cap_and_the_rest_count_under_other(metered):
    tasks = [create_task(metered, f"capped-{i:02d}", "metered") for i in range(CAP + 10)]
    eids = [trigger(metered, t) for t in tasks]
    wait_for(lambda: all(status_of(metered, e) == "EXECUTION_STATUS_SUCCESS" for e in eids), 60, "every run to succeed")
    started = time.time()

    def coordinator_counts():
        samples = parse(Api(metered.base).get("/metrics").body)
        other = value(samples, "qf_runs_total", task="_other", group="_other", status="success")
        return samples if other == 10 else None

    samples = wait_for(coordinator_counts, 30, "the coordinator to count the runs")
    runs = [(l, v) for n, l, v in samples if n == "qf_runs_total"]
    # The first CAP tasks whose runs ended have series of their own (in whatever order they ended).
    own = {l["task"] for l, _ in runs} - {"_other"}
    assert len(own) == CAP and own <= set(tasks)
    assert len(runs) == (CAP + 1) * 6  # every final status of each series
    for task in own:
        assert value(samples, "qf_runs_total", task=task, group="metered", status="success") == 1
        assert value(samples, "qf_runs_total", task=task, group="metered", status="failure") == 0
        last = value(samples, "qf_task_last_success_timestamp_seconds", task=task, group="metered")
        assert started - 120 < last <= time.time()
    assert len([n for n, _, _ in samples if n == "qf_task_last_success_timestamp_seconds"]) == CAP

    def agent_counts():
        s = parse(fetch(metered.agent_metrics))
        return s if value(s, "qf_agent_runs_total", task="_other", status="success") == 10 else None

    agent = wait_for(agent_counts, 30, "the agent to count the runs")
    agent_own = {l["task"] for n, l, _ in agent if n == "qf_agent_runs_total"} - {"_other"}
    assert len(agent_own) == CAP and agent_own <= set(tasks)
    assert all("group" not in l for n, l, _ in agent if n == "qf_agent_runs_total")
    wait_for(lambda: value(parse(fetch(metered.agent_metrics)), "qf_agent_sync_backlog_records") == 0, 30,
             "the agent's backlog to be synced")
    last_sync = value(parse(fetch(metered.agent_metrics)), "qf_agent_last_sync_timestamp_seconds")
    assert started - 120 < last_sync <= time.time()


def test_skipped_runs_are_counted_once_where_they_are_made(metered):
    def skipped(url_text, prefix, reason):
        return value(parse(url_text), f"{prefix}runs_skipped_total", reason=reason)

    coordinator = lambda: Api(metered.base).get("/metrics").body  # noqa: E731
    agent = lambda: fetch(metered.agent_metrics)  # noqa: E731
    before = {(who, reason): skipped(text(), prefix, reason)
              for who, text, prefix in (("c", coordinator, "qf_"), ("a", agent, "qf_agent_"))
              for reason in ("no_agent", "overlap")}

    # Made by the coordinator: no agent in the task's group.
    lonely = create_task(metered, "lonely", "nobody")
    eid = trigger(metered, lonely)
    wait_for(lambda: status_of(metered, eid) == "EXECUTION_STATUS_SKIPPED", 30, "the run to be SKIPPED")
    # Made by the agent: the second run while the first still runs, overlap policy skip.
    busy = create_task(metered, "busy", "metered", shell={"argv": ["/bin/sh", "-c", "sleep 2"]},
                       max_concurrent_runs=1, overlap_policy="OVERLAP_POLICY_SKIP")
    first = trigger(metered, busy)
    wait_for(lambda: status_of(metered, first) == "EXECUTION_STATUS_RUNNING", 30, "the first run to start")
    second = trigger(metered, busy)
    wait_for(lambda: status_of(metered, second) == "EXECUTION_STATUS_SKIPPED", 30, "the second run to be SKIPPED")
    wait_for(lambda: status_of(metered, first) == "EXECUTION_STATUS_SUCCESS", 30, "the first run to end")
    wait_for(lambda: skipped(coordinator(), "qf_", "overlap") == before[("c", "overlap")] + 1, 30,
             "the coordinator to count the overlap")
    time.sleep(1.5)  # a second count (a re-sent record, a second path) would show by now
    assert skipped(coordinator(), "qf_", "no_agent") == before[("c", "no_agent")] + 1
    assert skipped(coordinator(), "qf_", "overlap") == before[("c", "overlap")] + 1
    assert skipped(agent(), "qf_agent_", "overlap") == before[("a", "overlap")] + 1
    assert skipped(agent(), "qf_agent_", "no_agent") == before[("a", "no_agent")]  # never made by an agent


def test_missed_fires_after_a_coordinator_restart_are_counted_once(metered):
    ticking = create_task(metered, "ticking", "metered", schedule={"interval_seconds": 1},
                          misfire_policy="MISFIRE_POLICY_SKIP")
    wait_for(lambda: metered.api.get(f"/api/v1/executions?task_id={ticking}&status=success").data["total"] != "0",
             30, "a first run")
    metered.coordinator.terminate()
    assert metered.coordinator.wait(timeout=30) == 0
    restarted = time.time()
    time.sleep(3)  # about three fires owed
    metered.coordinator = metered.start("coordinator-2", [metered.coordinator_bin, "--config", metered.config])
    wait_for(metered.ready, 30, "the restarted coordinator's /readyz")

    def missed_in_store():
        return int(metered.api.get(f"/api/v1/executions?task_id={ticking}&status=missed").data["total"])

    wait_for(lambda: missed_in_store() >= 2, 60, "MISSED records of the fires owed")
    time.sleep(1)
    samples = parse(Api(metered.base).get("/metrics").body)
    # Counters start with the process: every MISSED record was made by this one, once each.
    assert value(samples, "qf_runs_missed_total") == missed_in_store()
    assert sum(v for n, l, v in samples if n == "qf_runs_total" and l["status"] == "missed") == missed_in_store()
    # The last successes were read from the store at start: the gauge is there for CAP tasks,
    # also for those that have not run since.
    gauges = {l["task"]: v for n, l, v in samples if n == "qf_task_last_success_timestamp_seconds"}
    assert len(gauges) == CAP and all(v > 0 for v in gauges.values()), gauges
    assert any(t.startswith("capped-") and v < restarted for t, v in gauges.items()), gauges
    assert value(parse(fetch(metered.agent_metrics)), "qf_agent_runs_missed_total") == 0


def standalone_agent(tmp_path, metrics_line):
    """Runs a standalone qf-agent (one task every second) with `metrics_line` in its config."""
    build = os.environ.get("QF_BUILD_DIR")
    assert build, "QF_BUILD_DIR must name the build directory"
    (tmp_path / "tasks.yaml").write_text('tasks:\n  - {name: tick, schedule: {interval_seconds: 1}, shell: {script: "true"}}\n')
    (tmp_path / "agent.yaml").write_text(f"data_dir: data\nmanifest_file: tasks.yaml\n{metrics_line}\n")
    return subprocess.Popen([os.path.join(build, "examples", "agent", "qf-agent"), "--config", str(tmp_path / "agent.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)


@pytest.mark.parametrize("line, error", [
    ('metrics: {listen: "localhost"}', 'metrics.listen: "localhost": no port'),
    ('metrics: {listen: "example.invalid:9465"}', "metrics.listen: metrics listen address \"example.invalid\""),
    ("metrics: {max_task_series: 10}", "metrics.max_task_series: needs metrics.listen"),
    ('metrics: {listen: "127.0.0.1:9465", max_task_series: 100001}', "metrics.max_task_series: 100001 is out of range"),
])
def test_a_bad_agent_metrics_config_stops_the_start_naming_the_field(tmp_path, line, error):
    agent = standalone_agent(tmp_path, line)
    out, _ = agent.communicate(timeout=30)
    assert agent.returncode == 2, out
    assert error in out, out
    assert "started as" not in out  # refused before any task ran


def test_a_standalone_agent_serves_its_runs_without_connection_gauges(tmp_path):
    port = free_port()
    agent = standalone_agent(tmp_path, f'metrics: {{listen: "127.0.0.1:{port}"}}')
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def counted():
            try:
                s = parse(fetch(url))
            except OSError:
                return None
            runs = [v for n, l, v in s if n == "qf_agent_runs_total" and l == {"task": "tick", "status": "success"}]
            return s if runs and runs[0] >= 2 else None  # the series appears with the task's first run

        samples = wait_for(counted, 30, "two runs counted")
        names = {n for n, _, _ in samples}
        assert "qf_agent_connected" not in names and "qf_agent_last_sync_timestamp_seconds" not in names
        assert value(samples, "qf_agent_task_last_success_timestamp_seconds", task="tick") > time.time() - 30
    finally:
        agent.terminate()
        agent.communicate(timeout=30)
    assert agent.returncode == 0
