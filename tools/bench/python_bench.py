#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# `import quartzflow` beside APScheduler 3.9 and croniter (Debian's python3-apscheduler,
# python3-croniter): jobs firing every second, many registered jobs, next-fire computations.
"""Python benchmarks of QuartzFlow's embedded scheduler and cron against APScheduler/croniter.

    PYTHONPATH=build/bindings/python /usr/bin/python3 tools/bench/python_bench.py

Each measurement runs in a fresh interpreter (so memory figures are its own):
  fire      N jobs (default 1,000) with a cron schedule firing every second, for S seconds:
            start skew (when the job function starts, past the whole second it was due),
            p50/p99/max, runs counted, and the process's CPU over the window (% of one core).
  memory    M jobs (default 100,000) registered (a daily cron each, none fires): RSS growth
            and time to add them.
  nextfire  K next-fire computations (default 1,000,000) of `*/5 * * * *`: quartzflow's
            cron one call per fire and one call for all, croniter's get_next.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


# -- the schedulers, behind one small interface -----------------------------------------------

class QuartzFlowScheduler:
    name = "quartzflow"

    def __init__(self):
        import quartzflow
        self.scheduler = quartzflow.Scheduler()

    def add_cron(self, func, expr, job_id):
        self.scheduler.add_job(func, "cron", expr=expr, timezone="UTC", id=job_id)

    def start(self):
        self.scheduler.start()

    def shutdown(self):
        self.scheduler.shutdown(wait=True)


class CompatScheduler:
    """quartzflow.apscheduler (the APScheduler 3.x layer over quartzflow.Scheduler)."""
    name = "quartzflow.apscheduler"

    def __init__(self):
        from quartzflow.apscheduler import BackgroundScheduler
        self.scheduler = BackgroundScheduler(timezone="UTC")

    def add_cron(self, func, expr, job_id):
        from quartzflow.apscheduler import CronTrigger
        s, m, h, dom, mon, dow = expr.split()
        self.scheduler.add_job(func, CronTrigger(second=s, minute=m, hour=h, day=dom, month=mon, day_of_week=dow,
                                                 timezone="UTC"), id=job_id)

    def start(self):
        self.scheduler.start()

    def shutdown(self):
        self.scheduler.shutdown(wait=True)


class APScheduler:
    name = "apscheduler"

    def __init__(self, pool_size=10):
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.executors.pool import ThreadPoolExecutor
        import apscheduler
        self.version = apscheduler.__version__
        self.scheduler = BackgroundScheduler(timezone="UTC", executors={"default": ThreadPoolExecutor(pool_size)})

    def add_cron(self, func, expr, job_id):
        from apscheduler.triggers.cron import CronTrigger
        s, m, h, dom, mon, dow = expr.split()
        self.scheduler.add_job(func, CronTrigger(second=s, minute=m, hour=h, day=dom, month=mon, day_of_week=dow,
                                                 timezone="UTC"), id=job_id, misfire_grace_time=30)

    def start(self):
        self.scheduler.start()

    def shutdown(self):
        self.scheduler.shutdown(wait=True)


IMPLEMENTATIONS = {"quartzflow": QuartzFlowScheduler, "compat": CompatScheduler, "apscheduler": APScheduler}


# -- the measurements (each in its own interpreter) -------------------------------------------

def measure_fire(impl, jobs, seconds):
    scheduler = IMPLEMENTATIONS[impl]()
    starts = []
    lock = threading.Lock()

    def job():
        now = time.time()
        with lock:
            starts.append(now)

    for i in range(jobs):
        scheduler.add_cron(job, "* * * * * *", f"job-{i}")
    scheduler.start()
    # Measure whole seconds only, after one to settle.
    begin = int(time.time()) + 2
    end = begin + seconds
    time.sleep(max(0.0, begin - time.time()))
    cpu_begin = cpu_seconds()
    time.sleep(max(0.0, end - time.time()))
    cpu_used = cpu_seconds() - cpu_begin
    time.sleep(1.5)  # let runs due before `end` start
    scheduler.shutdown()
    with lock:
        window = [t for t in starts if begin <= int(t) < end]
    # Skew from the whole second the run started in: every job is due at each whole second,
    # so this holds while runs are less than a second late (the runs column shows when they
    # are not: late runs pile up and are missed or coalesced).
    skews = [t - int(t) for t in window if int(t) < end]
    expected = jobs * seconds
    return {"impl": impl, "jobs": jobs, "seconds": seconds, "runs": len(window),
            "expected_runs": expected,
            "skew_p50_ms": percentile(skews, 50) * 1000, "skew_p99_ms": percentile(skews, 99) * 1000,
            "skew_max_ms": (max(skews) if skews else float("nan")) * 1000,
            "cpu_percent": 100.0 * cpu_used / seconds}


def measure_memory(impl, jobs):
    import gc
    gc.collect()
    before = rss_kib()
    scheduler = IMPLEMENTATIONS[impl]()
    scheduler.start()

    def job():
        pass

    t0 = time.perf_counter()
    for i in range(jobs):
        scheduler.add_cron(job, f"{i % 60} {i // 60 % 60} 3 * * *", f"job-{i}")
    added = time.perf_counter() - t0
    time.sleep(1.0)
    gc.collect()
    after = rss_kib()
    scheduler.shutdown()
    return {"impl": impl, "jobs": jobs, "rss_growth_mib": (after - before) / 1024.0,
            "bytes_per_job": (after - before) * 1024.0 / jobs, "add_seconds": added}


def measure_nextfire(count):
    import datetime as dt
    expr = "*/5 * * * *"
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    out = {"count": count, "expr": expr}
    import quartzflow.cron
    cron = quartzflow.cron.parse(expr)
    t0 = time.perf_counter()
    fires = cron.next(start, count)
    out["quartzflow_batch_seconds"] = time.perf_counter() - t0
    last_batch = fires[-1]
    t0 = time.perf_counter()
    at = start
    for _ in range(count):
        at = cron.next(at)
    out["quartzflow_loop_seconds"] = time.perf_counter() - t0
    assert at == last_batch, (at, last_batch)
    try:
        from croniter import croniter
        from importlib.metadata import version
        out["croniter_version"] = version("croniter")
    except ImportError:
        return out
    it = croniter(expr, start)
    t0 = time.perf_counter()
    for _ in range(count):
        nxt = it.get_next(dt.datetime)
    out["croniter_seconds"] = time.perf_counter() - t0
    assert nxt == last_batch, (nxt, last_batch)  # the same millionth fire
    return out


def run_child(args):
    argv = [sys.executable, os.path.abspath(__file__), "--child", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fire-jobs", type=int, default=1000)
    parser.add_argument("--fire-seconds", type=int, default=10)
    parser.add_argument("--memory-jobs", type=int, default=100_000)
    parser.add_argument("--next-count", type=int, default=1_000_000)
    parser.add_argument("--impl", action="append", choices=sorted(IMPLEMENTATIONS),
                        help="schedulers to measure (default: quartzflow and apscheduler)")
    parser.add_argument("--only", choices=["fire", "memory", "nextfire"], action="append")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind = args.child[0]
        if kind == "fire":
            result = measure_fire(args.child[1], int(args.child[2]), int(args.child[3]))
        elif kind == "memory":
            result = measure_memory(args.child[1], int(args.child[2]))
        else:
            result = measure_nextfire(int(args.child[1]))
        print(json.dumps(result))
        return

    impls = args.impl or ["quartzflow", "apscheduler"]
    parts = args.only or ["fire", "memory", "nextfire"]
    results = {"fire": [], "memory": [], "nextfire": None}
    for impl in impls:
        if "fire" in parts:
            results["fire"].append(dict(run_child(["fire", impl, str(args.fire_jobs), str(args.fire_seconds)]),
                                        impl=impl))
        if "memory" in parts:
            results["memory"].append(dict(run_child(["memory", impl, str(args.memory_jobs)]), impl=impl))
    if "nextfire" in parts:
        results["nextfire"] = run_child(["nextfire", str(args.next_count)])
    if args.json:
        print(json.dumps(results, indent=2))
        return

    def ratio(a, b):
        return f"{a / b:.2f}x" if a and b and a == a and b == b else "-"

    if results["fire"]:
        print(f"{args.fire_jobs} jobs every second, {args.fire_seconds} s:")
        print(f"  {'scheduler':24} {'runs':>8} {'of':>8} {'skew p50':>10} {'p99':>10} {'max':>10} {'CPU':>7}")
        for r in results["fire"]:
            if "error" in r:
                print(f"  {r['impl']:24} error: {r['error']}")
                continue
            print(f"  {r['impl']:24} {r['runs']:8d} {r['expected_runs']:8d} {r['skew_p50_ms']:8.1f}ms "
                  f"{r['skew_p99_ms']:8.1f}ms {r['skew_max_ms']:8.1f}ms {r['cpu_percent']:6.1f}%")
    if results["memory"]:
        print(f"{args.memory_jobs} registered jobs:")
        for r in results["memory"]:
            if "error" in r:
                print(f"  {r['impl']:24} error: {r['error']}")
                continue
            print(f"  {r['impl']:24} RSS +{r['rss_growth_mib']:.1f} MiB ({r['bytes_per_job']:.0f} B/job), "
                  f"added in {r['add_seconds']:.2f} s")
    n = results["nextfire"]
    if n:
        if "error" in n:
            print(f"next fires: error: {n['error']}")
        else:
            print(f"{n['count']} next fires of {n['expr']!r}:")
            print(f"  quartzflow cron.next(after, count)   {n['quartzflow_batch_seconds']:.2f} s")
            print(f"  quartzflow cron.next(after) per fire {n['quartzflow_loop_seconds']:.2f} s")
            if "croniter_seconds" in n:
                print(f"  croniter get_next per fire           {n['croniter_seconds']:.2f} s "
                      f"(croniter {n['croniter_version']}; quartzflow faster by "
                      f"{ratio(n['croniter_seconds'], n['quartzflow_loop_seconds'])} per fire, "
                      f"{ratio(n['croniter_seconds'], n['quartzflow_batch_seconds'])} batched)")


if __name__ == "__main__":
    main()
