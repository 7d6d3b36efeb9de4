#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# Several coordinators on PostgreSQL (issue 15): fires per second and admin API requests per
# second with 1, 2 and 3 qf-coordinator processes on one throwaway PostgreSQL server (a fresh
# server per cluster), AGENTS qf-agents, TASKS `one` tasks firing every second (`@every 1s`;
# the example plugin `hello`, or `/bin/true` with --executor shell).
#
# Per cluster: once final records arrive and WARMUP seconds passed, a window of FIRE_SECONDS
# (whole seconds): final records per second the store gained (the mean, and the least and
# most in one second), fires recorded for the window's instants, and the fire-to-start delay
# (started_unix_ms - scheduled_unix_ms of the window's records, read from PostgreSQL GRACE
# seconds after the window: a run not started by then is counted, not dropped); CPU of the
# leader, the standbys, the agents and PostgreSQL.
# On the clusters of API_TASKS tasks (firing meanwhile): API_SECONDS of reads over
# CONNECTIONS keep-alive connections spread round-robin over the coordinators (the same
# offered load whatever the count), each cycling GET /api/v1/tasks?page_size=50,
# /api/v1/executions?page_size=50, /api/v1/tasks/{id}, /api/v1/cluster with an API token;
# then WRITE_SECONDS of task updates (PUT /api/v1/tasks/{id}, a new description) sent to each
# coordinator in turn, whether the leader sees each update, and one trigger per coordinator
# (a standby answers 503 NOT_LEADER, or relays it). Final records of the window other than
# SUCCESS are printed with their reason and what the logs say of the first one. Prints
# tables; every process and the PostgreSQL directory are removed at the end, on Ctrl-C and
# on errors too; --max-seconds (420) bounds the whole. Defaults take 4-5 minutes.
#   /usr/bin/python3 tools/bench/cluster_scale_bench.py [--build build] [--coordinators 1,2,3]
#       [--tasks 1000,5000] [--api-tasks 1000] [--fire-seconds 10] [--api-seconds 6] ...
import argparse
import json
import os
import selectors
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "cluster"))
from failover_cluster import ADMIN_PASSWORD, Api, PgCluster, wait_for  # noqa: E402

FINAL_STATUSES = "3, 4, 5, 6, 7, 8"  # SUCCESS FAILURE TIMEOUT CANCELLED SKIPPED MISSED (execution.proto)
STATUS_NAMES = {1: "PENDING", 2: "RUNNING", 3: "SUCCESS", 4: "FAILURE", 5: "TIMEOUT", 6: "CANCELLED", 7: "SKIPPED",
                8: "MISSED"}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WRITE_TASKS_PER_CONNECTION = 4
LIVE_CLUSTERS = []  # started or starting; main() stops whatever is left here


class Deadline(Exception):
    """The whole benchmark outlived --max-seconds."""


def say(text):
    print(f"[cluster-scale {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def now_ms():
    return int(time.time() * 1000)


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


# ---- the cluster ----------------------------------------------------------------------------

def task_entry(name, executor, schedule="@every 1s"):
    lines = [f"  - name: {name}", f'    schedule: "{schedule}"', "    placement: {mode: one}",
             "    group_ids: [workers]"]
    if executor == "plugin":
        lines.append("    plugin: {name: hello}")
    else:
        lines.append("    shell: {argv: [/bin/true]}")
    return "\n".join(lines) + "\n"


def write_tasks(args):
    return args.write_connections * WRITE_TASKS_PER_CONNECTION


def set_log_level(path, level):
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("log_level: debug", f"log_level: {level}"))


def new_cluster(args, coordinators, tasks):
    """A PgCluster (not started) of `coordinators` coordinators and args.agents agents whose
    manifest holds `tasks` tasks, in LIVE_CLUSTERS until stop_cluster. Ctrl-C is held back
    while it is built, so a server started by the constructor always has an owner."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGALRM})
    try:
        cluster = PgCluster(args.build, coordinators=coordinators, agents=args.agents)
        LIVE_CLUSTERS.append(cluster)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)  # a Ctrl-C held back is raised here
    try:
        for c in cluster.coordinators:
            set_log_level(c.config, args.log_level)
        plugins = os.path.join(os.path.abspath(args.build), "plugins")
        for name in cluster.agent_names:
            config = os.path.join(cluster.dir, f"agent-{name}.yaml")
            set_log_level(config, args.log_level)
            if args.executor == "plugin":
                with open(config, "a") as f:
                    f.write(f"plugin_dirs: [{plugins}]\n")
        # The write mix updates tasks of its own that never fire: an update of a task with a
        # run PENDING or RUNNING is refused (409) without ?force=true, and a firing task
        # always has the next second's run recorded PENDING.
        cluster.write_manifest([task_entry(f"scale-{i}", args.executor) for i in range(tasks)] +
                               [task_entry(f"write-{i}", args.executor, "@manual") for i in range(write_tasks(args))] +
                               [task_entry("trigger-target", args.executor, "@manual")])
    except BaseException:
        stop_cluster(cluster, keep=False)
        raise
    return cluster


def stop_cluster(cluster, keep):
    """Stops every process and the PostgreSQL server and removes their files; a second Ctrl-C
    does not interrupt it."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGALRM})
    try:
        if cluster not in LIVE_CLUSTERS:
            return
        LIVE_CLUSTERS.remove(cluster)
        cluster.stop()
        if keep:
            say(f"cluster files kept in {cluster.dir}")
        else:
            cluster.remove()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def start_cluster(cluster, ready_timeout):
    """PgCluster.start() with a longer wait for each coordinator's /readyz (the first one
    applies the manifest before it is ready: 5,000 tasks take 10-30 s on PostgreSQL here).
    Returns the seconds until the first coordinator was ready."""
    began = time.monotonic()
    cluster.init_admin()
    catalog_seconds = None
    for c in cluster.coordinators:
        c.process = cluster._start(c.name, [cluster.coordinator_bin, "--config", c.config])
        wait_for(lambda c=c: cluster._ready(c) or not c.alive(), ready_timeout, f"{c.name}'s /readyz")
        if not c.alive():
            raise RuntimeError(f"coordinator {c.name} exited at its start")
        if catalog_seconds is None:
            catalog_seconds = time.monotonic() - began
    login = Api(cluster.coordinators[0].base).post("/api/v1/auth/login",
                                                     {"username": "admin", "password": ADMIN_PASSWORD})
    assert login.status == 200, login
    cluster.token = login.data["session_token"]
    cluster.api = Api(cluster.coordinators[0].base, cluster.token)
    for name in cluster.agent_names:
        cluster.agents[name] = cluster._start(
            f"agent-{name}", [cluster.agent_bin, "--config", os.path.join(cluster.dir, f"agent-{name}.yaml")])
    return catalog_seconds


def psql(cluster, sql):
    pg = cluster.pg
    r = pg._run([os.path.join(pg.bin, "psql"), "-h", pg.dir, "-p", str(pg.port), "-U", "postgres", "-d", "quartzflow",
                 "-At", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql], timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"psql failed: {r.stderr.strip()} ({sql})")
    return [line.split("\t") for line in r.stdout.splitlines() if line]


def log_lines(cluster, keep, limit=12):
    """Up to `limit` lines of the coordinators' and agents' logs that `keep` accepts, each
    prefixed with its process name."""
    names = [c.name for c in cluster.coordinators] + [f"agent-{a}" for a in cluster.agent_names]
    lines = []
    for name in names:
        try:
            lines += [f"{name}: {line}" for line in cluster.log(name).splitlines() if keep(line)][:limit]
        except OSError:
            pass
    return lines[:limit * 2]


def final_records(cluster):
    return int(psql(cluster, f"SELECT count(*) FROM executions WHERE status IN ({FINAL_STATUSES})")[0][0])


# ---- CPU ------------------------------------------------------------------------------------

def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    except (OSError, IndexError, ValueError):
        return 0.0


def postgres_pids(cluster):
    """The postmaster and its children (the coordinators' backends among them)."""
    try:
        with open(os.path.join(cluster.pg.data, "postmaster.pid")) as f:
            postmaster = int(f.readline())
    except (OSError, ValueError):
        return []
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                        pids.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return pids


def cpu_sample(cluster, leader):
    groups = {"leader": [leader.process.pid],
              "standbys": [c.process.pid for c in cluster.coordinators if c is not leader],
              "agents": [p.pid for p in cluster.agents.values()], "postgres": postgres_pids(cluster)}
    sample = {name: {pid: cpu_seconds(pid) for pid in pids} for name, pids in groups.items()}
    sample["bench"] = {0: sum(os.times()[:2])}  # this process: the load generator
    return time.monotonic(), sample


def cpu_cores(before, after):
    """Cores used per group between two samples (processes present in both)."""
    (t0, s0), (t1, s1) = before, after
    return {name: sum(s1[name][pid] - s0[name].get(pid, s1[name][pid]) for pid in s1[name]) / (t1 - t0)
            for name in s1}


# ---- fires ----------------------------------------------------------------------------------

def sleep_until_ms(at_ms):
    delay = (at_ms - now_ms()) / 1000
    if delay > 0:
        time.sleep(delay)


def measure_fires(args, cluster, leader, tasks):
    say(f"waiting for final records ({tasks} tasks)")
    wait_for(lambda: final_records(cluster) > 0, 90, "the first final records")
    time.sleep(args.warmup)
    t0 = (now_ms() // 1000 + 1) * 1000
    sleep_until_ms(t0)
    c0, cpu0 = final_records(cluster), cpu_sample(cluster, leader)
    t1 = t0 + args.fire_seconds * 1000
    # The count every second too: a saturated store commits in bursts (0-5,000 a second here).
    per_second, last = [], c0
    for k in range(1, args.fire_seconds + 1):
        sleep_until_ms(t0 + k * 1000)
        count = final_records(cluster)
        per_second.append(count - last)
        last = count
    c1, cpu1 = last, cpu_sample(cluster, leader)
    elapsed = cpu1[0] - cpu0[0]
    time.sleep(args.grace)
    window = f"scheduled_unix_ms >= {t0} AND scheduled_unix_ms < {t1} AND trigger = 1"
    by_status = {STATUS_NAMES.get(int(s), s): int(n) for s, n in
                 psql(cluster, f"SELECT status, count(*) FROM executions WHERE {window} GROUP BY status")}
    row = psql(cluster, f"""SELECT count(*),
        percentile_disc(0.5) WITHIN GROUP (ORDER BY started_unix_ms - scheduled_unix_ms),
        percentile_disc(0.99) WITHIN GROUP (ORDER BY started_unix_ms - scheduled_unix_ms),
        max(started_unix_ms - scheduled_unix_ms)
        FROM executions WHERE {window} AND started_unix_ms > 0""")[0]
    started = int(row[0])
    reasons = {f"{STATUS_NAMES.get(int(st), st)} {reason}".strip(): int(n) for st, reason, n in psql(
        cluster, f"""SELECT status,
        left(concat_ws(': ', nullif(failure_reason, ''), nullif(error_message, '')), 100), count(*)
        FROM executions WHERE {window} AND status IN (4, 5, 6, 7, 8) GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 5""")}
    evidence = []
    if reasons:
        # What the logs say about the first such run, and their warnings and errors meanwhile.
        first = psql(cluster, f"SELECT execution_id FROM executions WHERE {window} AND status IN (4, 5, 6, 7, 8) "
                              "ORDER BY scheduled_unix_ms LIMIT 1")[0][0]
        evidence = log_lines(cluster, lambda line: first in line or "[warning]" in line or "[error]" in line
                             or " offline" in line)
    recorded = sum(by_status.values())
    return {"tasks": tasks, "seconds": args.fire_seconds, "owed_per_s": tasks,
            "fires_recorded_per_s": recorded / args.fire_seconds,
            "final_records_per_s": (c1 - c0) / elapsed, "final_records_each_second": per_second,
            "delay_p50_ms": int(row[1]) if started else None, "delay_p99_ms": int(row[2]) if started else None,
            "delay_max_ms": int(row[3]) if started else None, "started": started,
            "not_started": tasks * args.fire_seconds - started, "by_status": by_status, "not_success": reasons,
            "evidence": evidence,
            "cpu_cores": cpu_cores(cpu0, cpu1)}


# ---- HTTP load ------------------------------------------------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection with one request in flight (a raw socket: the
    client must cost little next to the servers on the same cores)."""

    def __init__(self, index, coordinator_index, port, requests):
        self.index = index
        self.coordinator_index = coordinator_index
        self.port = port
        self.requests = requests  # [(kind, bytes)], cycled
        self.next = index % len(requests)
        self.sock = None
        self.out = b""
        self.buf = b""
        self.kind = None
        self.sent_at = 0.0

    def connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)

    def start_request(self):
        self.kind, self.out = self.requests[self.next]
        self.next = (self.next + 1) % len(self.requests)
        self.buf = b""
        self.sent_at = time.perf_counter()

    def parse(self):
        """(status, keep_alive) once buf holds a whole response, else None."""
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = self.buf[:head_end].decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        body = self.buf[head_end + 4:]
        if headers.get("transfer-encoding") == "chunked":
            if not body.endswith(b"0\r\n\r\n"):
                return None
        elif len(body) < int(headers.get("content-length", "0")):
            return None
        return status, headers.get("connection") != "close", body


def run_load(coordinators, build_requests, connections, seconds):
    """`connections` connections, connection i on coordinator i % len(coordinators), each
    sending build_requests(coordinator)'s requests in turn for `seconds`. Returns one
    (coordinator index, kind, latency ms, status) per answered request, and the first body
    answered with each status other than 200."""
    selector = selectors.DefaultSelector()
    conns = []
    for i in range(connections):
        ci = i % len(coordinators)
        conn = Connection(i, ci, coordinators[ci].admin_port, build_requests(coordinators[ci]))
        conn.connect()
        conns.append(conn)
    results, samples = [], {}
    end = time.perf_counter() + seconds
    for conn in conns:
        conn.start_request()
        selector.register(conn.sock, selectors.EVENT_WRITE, conn)
    open_count = len(conns)
    hard_end = end + 10  # an answer outstanding at `end` gets 10 s more
    try:
        while open_count and time.perf_counter() < hard_end:
            for key, events in selector.select(timeout=0.5):
                conn = key.data
                if events & selectors.EVENT_WRITE:
                    sent = conn.sock.send(conn.out)
                    conn.out = conn.out[sent:]
                    if not conn.out:
                        selector.modify(conn.sock, selectors.EVENT_READ, conn)
                    continue
                chunk = conn.sock.recv(262144)
                if not chunk:
                    raise RuntimeError(f"coordinator on port {conn.port} closed a connection")
                conn.buf += chunk
                answer = conn.parse()
                if answer is None:
                    continue
                status, keep_alive, body = answer
                done = time.perf_counter()
                if status != 200 and status not in samples:
                    samples[status] = body[:300].decode("utf-8", "replace")
                results.append((conn.coordinator_index, conn.kind, (done - conn.sent_at) * 1000, status))
                if done >= end:
                    selector.unregister(conn.sock)
                    open_count -= 1
                    continue
                if not keep_alive:
                    selector.unregister(conn.sock)
                    conn.sock.close()
                    conn.connect()
                    conn.start_request()
                    selector.register(conn.sock, selectors.EVENT_WRITE, conn)
                    continue
                conn.start_request()
                selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
    finally:
        for conn in conns:
            conn.sock.close()
        selector.close()
    return results, samples


def http_request(method, path, port, token, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    return (head + "\r\n").encode() + data


def summarize(answers, seconds, coordinator_count):
    results, samples = answers
    latencies = [r[2] for r in results]
    statuses = {}
    for r in results:
        statuses[r[3]] = statuses.get(r[3], 0) + 1
    per_coordinator = [sum(1 for r in results if r[0] == i) / seconds for i in range(coordinator_count)]
    kinds = sorted({r[1] for r in results})
    per_kind = {k: {"per_s": sum(1 for r in results if r[1] == k) / seconds,
                    "p50_ms": percentile([r[2] for r in results if r[1] == k], 50),
                    "p99_ms": percentile([r[2] for r in results if r[1] == k], 99)} for k in kinds}
    return {"per_s": len(results) / seconds, "per_coordinator_per_s": per_coordinator,
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99), "statuses": statuses,
            "per_kind": per_kind, "error_samples": samples}


def measure_api(args, cluster, leader, tasks):
    admin = cluster.api_of(leader)
    created = admin.post("/api/v1/tokens", {"name": f"bench-{now_ms()}", "role": "ROLE_OPERATOR"})
    assert created.status == 201, created
    token = created.data["secret"]
    coordinators = cluster.coordinators
    task_ids = [f"scale-{i}" for i in range(tasks)]

    def read_requests(c):
        reqs = []
        for i in range(64):
            reqs.append(("tasks page", http_request("GET", "/api/v1/tasks?page_size=50", c.admin_port, token)))
            reqs.append(("executions page",
                         http_request("GET", "/api/v1/executions?page_size=50", c.admin_port, token)))
            reqs.append(("one task", http_request("GET", f"/api/v1/tasks/{task_ids[(i * 7919) % tasks]}", c.admin_port,
                                                  token)))
            reqs.append(("cluster", http_request("GET", "/api/v1/cluster", c.admin_port, token)))
        return reqs

    say(f"API reads: {args.connections} connections over {len(coordinators)} coordinator(s), {args.api_seconds} s")
    before = cpu_sample(cluster, leader)
    reads = run_load(coordinators, read_requests, args.connections, args.api_seconds)
    after = cpu_sample(cluster, leader)
    read_summary = summarize(reads, args.api_seconds, len(coordinators))
    read_summary["cpu_cores"] = cpu_cores(before, after)

    # Writes: the same task update (a new description) sent to each coordinator in turn, over
    # write_connections connections, each on tasks of its own (no two updates of one task race).
    writes = []
    order = [leader] + [c for c in coordinators if c is not leader]
    per_conn = WRITE_TASKS_PER_CONNECTION
    for target in order:
        role = "leader" if target is leader else "standby"
        bodies = {}
        for conn_index in range(args.write_connections):
            for j in range(per_conn):
                tid = f"write-{conn_index * per_conn + j}"
                got = admin.get(f"/api/v1/tasks/{tid}")
                assert got.status == 200, got
                bodies[(conn_index, j)] = (tid, got.data["task"])
        stamp = now_ms()
        counter = iter(range(10 ** 9))

        def write_requests(c, target=target, bodies=bodies, stamp=stamp, counter=counter):
            conn_index = next(counter)
            reqs = []
            for j in range(per_conn):
                tid, task = bodies[(conn_index, j)]
                for n in range(50):
                    body = dict(task, description=f"cluster-scale write {stamp} {n}")
                    reqs.append(("task update", http_request("PUT", f"/api/v1/tasks/{tid}", c.admin_port, token, body)))
            return reqs

        say(f"API writes to {target.name} ({role}): {args.write_connections} connections, {args.write_seconds} s")
        summary = summarize(run_load([target], write_requests, args.write_connections, args.write_seconds),
                            args.write_seconds, 1)
        # Each PUT names the task without its revision: the last description sent must be the
        # one the leader reads now (a standby's update reached the shared catalog).
        tid, _ = bodies[(0, 0)]
        seen = cluster.api_of(leader).get(f"/api/v1/tasks/{tid}").data["task"].get("description", "")
        summary["leader_sees_update"] = seen.startswith(f"cluster-scale write {stamp} ")
        # A task of its own: a run in progress would make the next updates of its task 409.
        trigger = cluster.api_of(target).post("/api/v1/tasks/trigger-target/trigger", {})
        summary["trigger"] = f"{trigger.status} {(trigger.json or {}).get('error', '')}".strip()
        summary.update(coordinator=target.name, role=role)
        writes.append(summary)
    return {"reads": read_summary, "writes": writes}


# ---- one cluster ----------------------------------------------------------------------------

def run_cluster(args, coordinators, tasks):
    started = time.monotonic()
    cluster = new_cluster(args, coordinators, tasks)
    ok = False
    try:
        say(f"{coordinators} coordinator(s), {args.agents} agents, {tasks} tasks: starting (files in {cluster.dir})")
        ready_after = start_cluster(cluster, args.ready_timeout)
        leader = wait_for(cluster.leader, 30, "a leader")
        result = {"coordinators": coordinators, "leader": leader.name, "first_ready_seconds": ready_after,
                  "fires": measure_fires(args, cluster, leader, tasks)}
        if tasks == args.api_tasks:
            result["api"] = measure_api(args, cluster, leader, tasks)
        for c in cluster.coordinators:
            if not c.alive():
                raise RuntimeError(f"coordinator {c.name} exited during the benchmark")
        ok = True
        result["wall_seconds"] = time.monotonic() - started
        return result
    except Exception:  # an error, not Ctrl-C: the coordinators' last words
        if not ok:
            for c in cluster.coordinators:
                try:
                    tail = cluster.log(c.name).splitlines()[-15:]
                    say(f"last lines of {c.name}'s log:\n  " + "\n  ".join(tail))
                except OSError:
                    pass
        raise
    finally:
        stop_cluster(cluster, keep=args.keep and not ok)


# ---- tables ---------------------------------------------------------------------------------

def fmt_ms(value):
    return "-" if value is None else f"{value:.0f}" if isinstance(value, float) else str(value)


def spread(values):
    return f"{min(values)}-{max(values)}" if values else "-"


def print_tables(args, results):
    print(f"\nFires ({args.agents} agents, {args.executor} tasks every second, window {args.fire_seconds} s; "
          f"delay = started - scheduled)")
    print(f"{'coord':>5} {'tasks':>6} {'fires rec/s':>11} {'final rec/s':>11} {'min-max':>11} {'vs 1':>5} "
          f"{'delay p50':>9} "
          f"{'p99':>6} {'max':>6} {'not started':>11} {'ready s':>7}  {'cores: leader standbys agents postgres':<40}")
    base = {}
    for r in results:
        f = r["fires"]
        base.setdefault(f["tasks"], f["final_records_per_s"])
        ratio = f["final_records_per_s"] / base[f["tasks"]] if base[f["tasks"]] else 0
        cpu = f["cpu_cores"]
        other = {k: v for k, v in f["by_status"].items() if k not in ("SUCCESS",)}
        print(f"{r['coordinators']:>5} {f['tasks']:>6} {f['fires_recorded_per_s']:>11.0f} "
              f"{f['final_records_per_s']:>11.0f} {spread(f['final_records_each_second']):>11} {ratio:>5.2f} "
              f"{fmt_ms(f['delay_p50_ms']):>9} "
              f"{fmt_ms(f['delay_p99_ms']):>6} {fmt_ms(f['delay_max_ms']):>6} {f['not_started']:>11} "
              f"{r['first_ready_seconds']:>7.1f}  "
              f"{cpu['leader']:.2f} {cpu['standbys']:.2f} {cpu['agents']:.2f} {cpu['postgres']:.2f}"
              + (f"  {other}" if other else ""))
    for r in results:
        if r["fires"]["not_success"]:
            print(f"  {r['coordinators']} coordinator(s), {r['fires']['tasks']} tasks: the window's final records "
                  f"other than SUCCESS: {r['fires']['not_success']}")
            for line in r["fires"]["evidence"]:
                print(f"    {line[:220]}")
    api = [r for r in results if "api" in r]
    if not api:
        return
    print(f"\nAPI reads ({args.connections} keep-alive connections round-robin over the coordinators, "
          f"{args.api_seconds} s, {args.api_tasks} tasks firing; latency ms)")
    print(f"{'coord':>5} {'req/s':>7} {'vs 1':>5} {'per coordinator':<22} {'p50':>5} {'p99':>6}  "
          f"{'tasks page':>14} {'executions':>14} {'one task':>14} {'cluster':>14}  "
          f"{'cores: leader standbys pg client':<33}"
          f" statuses")
    first = api[0]["api"]["reads"]["per_s"]
    for r in api:
        s = r["api"]["reads"]
        per = "/".join(f"{v:.0f}" for v in s["per_coordinator_per_s"])
        kinds = "".join(f"{fmt_ms(k['p50_ms'])+'/'+fmt_ms(k['p99_ms']):>15}" for k in
                        (s["per_kind"].get(n, {"p50_ms": None, "p99_ms": None})
                         for n in ("tasks page", "executions page", "one task", "cluster")))
        cpu = s["cpu_cores"]
        print(f"{r['coordinators']:>5} {s['per_s']:>7.0f} {s['per_s'] / first:>5.2f} {per:<22} "
              f"{fmt_ms(s['p50_ms']):>5} {fmt_ms(s['p99_ms']):>6} {kinds}  "
              f"{cpu['leader']:.2f} {cpu['standbys']:.2f} {cpu['postgres']:.2f} {cpu['bench']:.2f}"
              f"{'':>12} {s['statuses']}")
    print(f"\nAPI writes (PUT /api/v1/tasks/{{id}}, {args.write_connections} connections, {args.write_seconds} s "
          f"per coordinator; trigger = POST .../trigger on that coordinator)")
    print(f"{'coord':>5} {'target':<12} {'req/s':>7} {'p50':>6} {'p99':>6} {'leader sees it':>14}  "
          f"{'trigger':<22} statuses")
    for r in api:
        for w in r["api"]["writes"]:
            print(f"{r['coordinators']:>5} {w['coordinator'] + ' ' + w['role']:<12} {w['per_s']:>7.0f} "
                  f"{fmt_ms(w['p50_ms']):>6} {fmt_ms(w['p99_ms']):>6} {str(w['leader_sees_update']):>14}  "
                  f"{w['trigger']:<22} {w['statuses']}")
    samples = {}
    for r in api:
        for s in [r["api"]["reads"]] + r["api"]["writes"]:
            for status, body in s["error_samples"].items():
                samples.setdefault(status, body)
    for status, body in sorted(samples.items()):
        print(f"  a {status} answer: {body}")


def main():
    parser = argparse.ArgumentParser(description="Fires/s, fire-to-start delay and admin API requests/s with 1, 2 "
                                     "and 3 qf-coordinators on a throwaway PostgreSQL (see the file's header).")
    parser.add_argument("--build", default="build", help="the build directory (qf-coordinator, qf-agent, qfctl)")
    parser.add_argument("--coordinators", default="1,2,3", help="coordinator counts, comma-separated")
    parser.add_argument("--tasks", default="1000,5000", help="catalog sizes, comma-separated")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--executor", choices=("plugin", "shell"), default="plugin",
                        help="plugin: the example plugin `hello` (build/plugins); shell: /bin/true")
    parser.add_argument("--warmup", type=float, default=4, help="seconds after the first final records")
    parser.add_argument("--fire-seconds", type=int, default=10, help="the fire window, whole seconds")
    parser.add_argument("--grace", type=float, default=2, help="seconds after the window before reading its records")
    parser.add_argument("--api-tasks", type=int, default=None, help="the catalog size of the API runs (default: "
                        "the first of --tasks; 0: no API runs)")
    parser.add_argument("--api-seconds", type=float, default=6)
    parser.add_argument("--connections", type=int, default=12, help="read connections over all coordinators")
    parser.add_argument("--write-seconds", type=float, default=2, help="write seconds per coordinator")
    parser.add_argument("--write-connections", type=int, default=4)
    parser.add_argument("--log-level", default="info", help="of the coordinators and agents")
    parser.add_argument("--ready-timeout", type=float, default=90,
                        help="seconds for a coordinator to answer /readyz (the first one applies the manifest)")
    parser.add_argument("--max-seconds", type=float, default=420, help="stop (and clean up) after this long")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep a failed cluster's files (logs)")
    args = parser.parse_args()
    counts = [int(x) for x in args.coordinators.split(",")]
    sizes = [int(x) for x in args.tasks.split(",")]
    if args.api_tasks is None:
        args.api_tasks = sizes[0]
    for binary in ("examples/coordinator/qf-coordinator", "examples/agent/qf-agent", "tools/qfctl/qfctl"):
        if not os.access(os.path.join(args.build, binary), os.X_OK):
            parser.error(f"{args.build}/{binary} not built")
    if args.executor == "plugin" and not os.path.exists(os.path.join(args.build, "plugins", "hello.so")):
        parser.error(f"{args.build}/plugins/hello.so not built (target qf-plugin-hello); or --executor shell")

    def on_alarm(signum, frame):
        raise Deadline(f"the benchmark ran longer than --max-seconds ({args.max_seconds:.0f} s)")

    def on_terminate(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_terminate)
    signal.signal(signal.SIGINT, on_terminate)  # also when started with SIGINT ignored (`cmd &` in a script)
    signal.alarm(int(args.max_seconds))
    results = []
    began = time.monotonic()
    try:
        for tasks in sizes:
            for count in counts:
                results.append(run_cluster(args, count, tasks))
                f = results[-1]["fires"]
                say(f"{count} coordinator(s), {tasks} tasks: {f['final_records_per_s']:.0f} final records/s, delay "
                    f"p50 {fmt_ms(f['delay_p50_ms'])} p99 {fmt_ms(f['delay_p99_ms'])} ms "
                    f"({results[-1]['wall_seconds']:.0f} s)")
    except (KeyboardInterrupt, Deadline) as e:
        say(f"stopped: {str(e) or 'interrupted'}; printing what was measured")
    except Exception as e:  # noqa: BLE001 - the tables of what was measured still print
        say(f"failed: {type(e).__name__}: {e}; printing what was measured")
    finally:
        signal.alarm(0)
        for cluster in list(LIVE_CLUSTERS):
            stop_cluster(cluster, keep=False)
    results.sort(key=lambda r: (r["fires"]["tasks"], r["coordinators"]))
    print_tables(args, results)
    print(f"\n{len(results)} cluster(s) in {time.monotonic() - began:.0f} s; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0 if len(results) == len(sizes) * len(counts) else 1


if __name__ == "__main__":
    sys.exit(main())
